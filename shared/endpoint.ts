/** Coordinator addresses as both sides write them: ws:// URLs from a host and a port. */

/** `ws://host:port`, with an IPv6 literal in brackets (`ws://[::1]:29500`) as URLs need. */
export function wsUrl(host: string, port: number): string {
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `ws://${bracketed}:${port}`;
}

/**
 * A host name or IP address (IPv6 bare or bracketed), nothing more: a path, query, fragment or
 * credentials would still parse as a URL, but connect somewhere else than host:port.
 */
export function isHost(host: string): boolean {
  return host !== '' && !/[\s/?#@\\]/.test(host) && URL.canParse(wsUrl(host, 1));
}

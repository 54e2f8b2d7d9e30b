/** Coordinator addresses as both sides write them: ws:// (or wss://) URLs from a host and a port. */

/**
 * `ws://host:port` (`wss://` when `secure`: a coordinator serving TLS), with an IPv6 literal in
 * brackets (`ws://[::1]:29500`) as URLs need.
 */
export function wsUrl(host: string, port: number, secure = false): string {
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `${secure ? 'wss' : 'ws'}://${bracketed}:${port}`;
}

/**
 * A host name or IP address (IPv6 bare or bracketed), nothing more: a path, query, fragment or
 * credentials would still parse as a URL, but connect somewhere else than host:port.
 */
export function isHost(host: string): boolean {
  return host !== '' && !/[\s/?#@\\]/.test(host) && URL.canParse(wsUrl(host, 1));
}

/**
 * Hosts only this machine can reach: the ones a coordinator may bind without a token.
 * An address, not a prefix: `127.foo.example` is a name anyone's DNS may point anywhere.
 */
export function isLoopback(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare.toLowerCase() === 'localhost' || bare === '::1' || bare === '0:0:0:0:0:0:0:1') return true;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/i.exec(bare);
  return v4 !== null && v4.slice(1).every((octet) => Number(octet) <= 255) && Number(v4[1]) === 127;
}

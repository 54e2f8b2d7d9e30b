/** Hosts and the ws:// URLs built from them, as the CLI prints and checks them. */
import { UsageError } from './usage.ts';

/** `ws://host:port`, with an IPv6 literal in brackets (`ws://[::1]:29500`) as URLs need. */
export function wsUrl(host: string, port: number): string {
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `ws://${bracketed}:${port}`;
}

/**
 * A host a worker can connect to: a name or an IP address (IPv6 bare or bracketed).
 * `label` is what the person set: `--master-addr` or `MASTER_ADDR`.
 */
export function hostValue(label: string, host: string): string {
  // A path, query, fragment or credentials would parse as a URL but not as a host.
  if (/[\s/?#@\\]/.test(host) || !URL.canParse(wsUrl(host, 1))) {
    throw new UsageError(`${label} must be a host name or IP address, got '${host}'`);
  }
  return host;
}

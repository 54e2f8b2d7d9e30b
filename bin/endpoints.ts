/** Hosts as the CLI checks them: bad ones are usage errors naming the flag or variable. */
import { isHost } from '../shared/endpoint.ts';
import { UsageError } from './usage.ts';

export { wsUrl } from '../shared/endpoint.ts';

/**
 * A host to bind or connect to, IPv6 without brackets (`[::1]` is `::1`: what bind and the
 * loopback check expect). `label` is what the person set: `--host`, `--master-addr`, `MASTER_ADDR`.
 */
export function hostValue(label: string, host: string): string {
  if (!isHost(host)) throw new UsageError(`${label} must be a host name or IP address, got '${host}'`);
  return host.replace(/^\[(.*)\]$/, '$1');
}

/**
 * A wall-clock time in ms, as ISO 8601 (the report's `at` and `startedAt`). It formats a time it
 * is given and reads no clock, so the pure core may use it (its lint forbids `Date` itself).
 */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

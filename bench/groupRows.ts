/**
 * The rows every file of the `group` section builds: ok and error rows under the section's name,
 * and the percentile and millisecond text their figures and details use.
 */
import type { BenchRow, Cell } from './sections.ts';

export const SECTION = 'group';

export function ok(name: string, values: Record<string, Cell>, note?: string): BenchRow {
  return { section: SECTION, name, status: 'ok', values, ...(note === undefined ? {} : { note }) };
}

export function errorRow(name: string, values: Record<string, Cell>, error: unknown): BenchRow {
  return { section: SECTION, name, status: 'error', values, note: message(error) };
}

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Nearest-rank percentile of unsorted samples. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

export function formatMs(value: number): string {
  if (!Number.isFinite(value)) return '-';
  return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ms`;
}

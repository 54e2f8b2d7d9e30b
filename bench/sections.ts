/**
 * What every bench section shares: the row type, the options a section receives, the
 * module shape the registry in bench/run.ts loads, and the plain-text table printer.
 *
 * To add a section: write bench/<name>.ts exporting `runSection` (and, optionally,
 * `columns` and `legend` to control how its rows print), then add one line to the
 * SECTIONS table in bench/run.ts.
 */

/** One value in a row: raw numbers (ms, bytes, counts), so the JSON output stays machine-readable. */
export type Cell = string | number | boolean | null;

export type RowStatus =
  /** Measured. */
  | 'ok'
  /** Could not be measured here (e.g. an engine that does not exist yet). */
  | 'n/a'
  /** Deliberately not run (e.g. PyTorch not installed). */
  | 'skipped'
  /** Tried and failed. */
  | 'error';

export interface BenchRow {
  /** The section that produced the row. */
  readonly section: string;
  /** A short label, unique within the section (e.g. `ours/torch/1e7/shard`). */
  readonly name: string;
  readonly status: RowStatus;
  /** Measurements and the parameters that identify the row; units are in the key (`bestMs`, `peakRssKb`). */
  readonly values: Readonly<Record<string, Cell>>;
  /** A line printed under the table (why a row was skipped, an error's message). */
  readonly note?: string;
}

export interface SectionOptions {
  /** `--quick`: a smoke check, smallest sizes only. */
  readonly quick: boolean;
  /** `--full`: also the large, slow or memory-hungry cases a default run leaves out. */
  readonly full: boolean;
  /** Absolute path of the repository root (children are spawned there). */
  readonly repoRoot: string;
  /** Progress for a human watching; goes to stderr so stdout stays the table. */
  readonly log: (line: string) => void;
}

export interface Column {
  readonly header: string;
  readonly align?: 'left' | 'right';
  readonly get: (row: BenchRow) => string;
}

/** What a section's module exports. */
export interface SectionModule {
  runSection(options: SectionOptions): Promise<BenchRow[]>;
  /** How to print the rows; by default: name, status, then every value key in first-seen order. */
  readonly columns?: readonly Column[];
  /** Lines printed under the table explaining the columns. */
  readonly legend?: readonly string[];
  /**
   * The section's headline figures under stable dotted names (`rollover.p50Ms`), derived from
   * its rows; `--json` writes them as `keys` beside the rows, for scripts that track targets.
   */
  keys?(rows: readonly BenchRow[]): Readonly<Record<string, number>>;
}

/** One entry of the registry in bench/run.ts. */
export interface SectionEntry {
  readonly name: string;
  readonly summary: string;
  /** Run when no section is named on the command line. */
  readonly runByDefault: boolean;
  readonly load: () => Promise<SectionModule>;
}

export function formatCell(value: Cell | undefined): string {
  if (value === undefined || value === null) return '-';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return String(value);
    if (Number.isInteger(value)) return value.toLocaleString('en-US');
    return value.toFixed(Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2);
  }
  return String(value);
}

export function defaultColumns(rows: readonly BenchRow[]): Column[] {
  const keys: string[] = [];
  for (const row of rows) for (const key of Object.keys(row.values)) if (!keys.includes(key)) keys.push(key);
  return [
    { header: 'name', get: (row) => row.name },
    { header: 'status', get: (row) => row.status },
    ...keys.map((key): Column => ({ header: key, align: 'right', get: (row) => formatCell(row.values[key]) })),
  ];
}

/** A plain-text table: a header, a rule, one line per row; columns padded to their widest cell. */
export function formatTable(columns: readonly Column[], rows: readonly BenchRow[]): string {
  const cells = rows.map((row) => columns.map((column) => column.get(row)));
  const widths = columns.map((column, i) => Math.max(column.header.length, ...cells.map((line) => line[i].length)));
  const render = (line: readonly string[]): string =>
    line
      .map((text, i) => (columns[i].align === 'right' ? text.padStart(widths[i]) : text.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [
    render(columns.map((column) => column.header)),
    render(widths.map((width) => '-'.repeat(width))),
    ...cells.map(render),
  ].join('\n');
}

/** The table, then each row's note, then the legend. */
export function formatSection(name: string, module: Pick<SectionModule, 'columns' | 'legend'>, rows: readonly BenchRow[]): string {
  const out = [`== ${name} ==`];
  if (rows.length === 0) out.push('(no rows)');
  else out.push(formatTable(module.columns ?? defaultColumns(rows), rows));
  const notes = rows.filter((row) => row.note !== undefined);
  if (notes.length > 0) {
    out.push('');
    for (const row of notes) out.push(`note ${row.name}: ${row.note}`);
  }
  if (module.legend && module.legend.length > 0) {
    out.push('');
    out.push(...module.legend);
  }
  return out.join('\n');
}

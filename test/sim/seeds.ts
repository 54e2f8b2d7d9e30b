/** The seeds of one simulator run: a base (given, or fresh) and N seeds counted up from it. */

/** S alone with one seed; else N seeds from base S (numbers count up, text gets -0, -1, ...), or from a fresh random base. */
export function seedsOf(args: { readonly seeds: number; readonly seed: string | undefined }): { base: string; seeds: string[] } {
  if (args.seed !== undefined && args.seeds === 1) return { base: args.seed, seeds: [args.seed] };
  const base = args.seed ?? String(Math.floor(Math.random() * 2 ** 32));
  const numeric = /^\d+$/.test(base);
  return { base, seeds: Array.from({ length: args.seeds }, (_, i) => (numeric ? String(BigInt(base) + BigInt(i)) : `${base}-${i}`)) };
}

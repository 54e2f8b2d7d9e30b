/** Observes a promise without awaiting it, so a test can ask "settled yet?". */
export function track<T>(promise: Promise<T>): { settled: boolean; value?: T; error?: unknown } {
  const t: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(t, { settled: true, value }),
    (error: unknown) => Object.assign(t, { settled: true, error }),
  );
  return t;
}

/** Lets pending promise callbacks and I/O run. */
export const flush = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));

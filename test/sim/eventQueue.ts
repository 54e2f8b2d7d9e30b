/**
 * Virtual time: a binary heap of callbacks ordered by (time, insertion order). Nothing in the
 * simulator sleeps; the loop pops the earliest event and moves the clock to it.
 */

interface Entry {
  readonly at: number;
  readonly order: number;
  readonly run: () => void;
}

export class EventQueue {
  private readonly heap: Entry[] = [];
  private order = 0;
  now = 0;

  get size(): number {
    return this.heap.length;
  }

  /** Runs `run` at virtual time `at` (never before now). */
  at(at: number, run: () => void): void {
    this.push({ at: Math.max(at, this.now), order: this.order++, run });
  }

  /** Runs `run` `delay` ms from now. */
  after(delay: number, run: () => void): void {
    this.at(this.now + delay, run);
  }

  /** Pops the earliest event, moves the clock to it and runs it; false when empty. */
  step(): boolean {
    const entry = this.pop();
    if (!entry) return false;
    this.now = entry.at;
    entry.run();
    return true;
  }

  private less(i: number, j: number): boolean {
    const a = this.heap[i];
    const b = this.heap[j];
    return a.at < b.at || (a.at === b.at && a.order < b.order);
  }

  private push(entry: Entry): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }

  private pop(): Entry | undefined {
    const heap = this.heap;
    if (heap.length === 0) return undefined;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < heap.length && this.less(l, best)) best = l;
        if (r < heap.length && this.less(r, best)) best = r;
        if (best === i) break;
        [heap[i], heap[best]] = [heap[best], heap[i]];
        i = best;
      }
    }
    return top;
  }
}

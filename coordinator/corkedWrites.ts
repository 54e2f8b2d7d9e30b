/**
 * The frames one input sends leave in one write per connection. ws writes every frame with a
 * syscall of its own, and on loopback each write also wakes the reader: completing a rendezvous
 * of 1,024 workers sends each a welcome and the frame after it, 2,048 writes uncorked and 1,024
 * corked. The shell corks a connection at its first frame of an input and flushes when the
 * input's effects are done, or earlier before anything that may end a connection or run a
 * listener (which could close one): corked bytes are lost if the socket is destroyed.
 */
import type { Duplex } from 'node:stream';

export class CorkedWrites {
  private readonly corked = new Set<Duplex>();

  /** Holds back what is written to `stream` until the next flush. */
  hold(stream: Duplex): void {
    if (this.corked.has(stream)) return;
    stream.cork();
    this.corked.add(stream);
  }

  /** Writes out everything held back, each connection's frames in the order they were sent. */
  flush(): void {
    for (const stream of this.corked) stream.uncork();
    this.corked.clear();
  }
}

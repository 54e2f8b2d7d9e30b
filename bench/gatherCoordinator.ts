/**
 * The coordinator of the gather bench, alone in its process so its peak RSS is its own: listens on
 * a free loopback port, prints `listening <port>`, and runs until its parent closes stdin.
 */
import { Coordinator } from '../coordinator/coordinator.ts';

const [worldSize, length] = process.argv.slice(2).map(Number);
const coordinator = new Coordinator({
  worldSize,
  config: { length, seed: '0', shuffle: false, dropLast: false, engine: 'torch', batchSize: 256, epochs: 1 },
  rendezvousTimeoutMs: 60_000,
  lingerMs: 600_000,
});
const { port } = await coordinator.listen();
process.stdout.write(`listening ${port}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  void coordinator.close().then(() => process.exit(0));
});

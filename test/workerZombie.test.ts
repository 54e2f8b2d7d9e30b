/**
 * Finding 2 of issue 9 (zombie consumption), through the real CLI: a worker stopped past
 * --dead-after-ms and continued must stop consuming positions it no longer owns once it knows,
 * and the report's `redelivered` must equal the double deliveries its step really made.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startCli } from './support/cli.ts';
import { useTempDir } from './support/tempDir.ts';

const temp = useTempDir('zombie');
afterEach(killStarted);

/** A step that logs every position it is handed, one file per worker process. */
const LOG_STEP = `import { appendFileSync } from 'node:fs';
export function step(batch: { positions: readonly number[] }): void {
  appendFileSync(\`\${process.env.ZOMBIE_LOG}/pid\${process.pid}.log\`, batch.positions.join('\\n') + '\\n');
}
`;

describe('a worker declared dead while it was stopped', () => {
  it('stops consuming its cut unit once it sees the close, and every double delivery is in the report', async () => {
    const logs = temp.folder('logs');
    const step = temp.file('logStep.ts');
    writeFileSync(step, LOG_STEP);
    const report = temp.file('report.json');
    const batchSize = 32;
    // Acks per batch: the report then counts exactly the double deliveries (coalesced, it counts
    // what the zombie reserved, at least as many: test/faults.test.ts and the simulator).
    const run = startCli(
      ['run', '--workers', '3', '--length', '30000', '--epochs', '1', '--batch-size', String(batchSize), '--ack-ms', '0', '--step-ms', '0.3', '--heartbeat-ms', '300', '--dead-after-ms', '1500', '--step', step, '--report', report],
      { ZOMBIE_LOG: logs },
    );
    const pid = Number((await run.waitFor(/rank 1 joined \(pid (\d+)\)/))[1]);
    // Stopped mid-epoch, once it has acknowledged some of its shard.
    await run.waitFor(/r1 [1-9]\d*\/10000/);
    process.kill(pid, 'SIGSTOP');
    await run.waitFor(/death rank 1/);
    process.kill(pid, 'SIGCONT');
    expect((await run.exited).code).toBe(0);

    const seen = new Map<number, number>();
    for (const file of readdirSync(logs)) {
      for (const line of readFileSync(join(logs, file), 'utf8').split('\n')) if (line) seen.set(Number(line), (seen.get(Number(line)) ?? 0) + 1);
    }
    const doubles = [...seen.values()].reduce((sum, times) => sum + times - 1, 0);
    expect(seen.size).toBe(30000);
    const { epochs } = JSON.parse(readFileSync(report, 'utf8')) as { epochs: Array<{ redelivered: number; missing: number }> };
    expect(epochs[0].missing).toBe(0);
    expect(epochs[0].redelivered).toBe(doubles);
    // The batch in flight when it stopped, and at most a few handed out before it read the close.
    expect(doubles).toBeLessThanOrEqual(4 * batchSize);
  }, 120_000);
});

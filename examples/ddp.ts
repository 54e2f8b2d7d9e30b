/**
 * Data-parallel training that survives a death and a join: linear regression on a synthetic
 * dataset, DistributedDataParallel style. Every rank computes the gradient of its batch, the
 * group averages them with one allReduce, and every rank applies the same update. pg.elastic
 * keeps it going when the group changes: the state goes back to its last commit and the loop
 * carries on in the new generation, with no position lost.
 *
 *   npx distsampler run --workers 4 --world-size 2:4 examples/ddp.ts
 *   npx distsampler run --workers 4 --world-size 2:4 --kill 1@1:0.5 examples/ddp.ts   # a death mid-epoch
 *   npx distsampler run --workers 3 --world-size 2:4 --join 0:0.5 examples/ddp.ts     # a join mid-run
 *
 * Arguments: --step-ms N sleeps N ms per batch (a slower step, so faults land mid-epoch);
 * --commit-every K commits every K batches (default 5). Each rank checks that its weights are
 * within TOLERANCE of the truth at the end and exits 1 if not.
 */
import { parseArgs } from 'node:util';
import { ElasticState, initProcessGroup, type Dataset } from 'distsampler/worker';

/** The model the data comes from: y = W . x + B + noise. */
const TRUE_W = [2, -3];
const TRUE_B = 0.5;
const NOISE = 0.05;
/** Largest error in any parameter a run may end with. */
export const TOLERANCE = 0.05;
const LEARNING_RATE = 0.3;

interface Sample {
  readonly x: readonly number[];
  readonly y: number;
}

/** Model parameters as JSON (ElasticState broadcasts them to a joining rank). */
type Model = { w: number[]; b: number };

/** A deterministic pseudo-random number in [0, 1) for (index, stream): every rank sees the same sample. */
function uniform(index: number, stream: number): number {
  let h = Math.imul(index ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(stream + 1, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return ((h ^ (h >>> 16)) >>> 0) / 2 ** 32;
}

function syntheticDataset(length: number): Dataset<Sample> {
  return {
    length,
    description: `synthetic linear regression (${length} samples)`,
    get(index) {
      const x = TRUE_W.map((_, k) => 2 * uniform(index, k) - 1);
      // Box-Muller from two more streams.
      const noise = NOISE * Math.sqrt(-2 * Math.log(1 - uniform(index, 10))) * Math.cos(2 * Math.PI * uniform(index, 11));
      return { x, y: x.reduce((sum, xk, k) => sum + TRUE_W[k] * xk, TRUE_B) + noise };
    },
  };
}

/** Sums over the batch of the squared loss's gradient (w..., b) and the sample count: the group adds them up. */
function gradientSums(model: Model, samples: readonly Sample[]): number[] {
  const sums = new Array<number>(model.w.length + 2).fill(0);
  for (const { x, y } of samples) {
    const error = x.reduce((sum, xk, k) => sum + model.w[k] * xk, model.b) - y;
    x.forEach((xk, k) => (sums[k] += error * xk));
    sums[model.w.length] += error;
    sums[model.w.length + 1] += 1;
  }
  return sums;
}

const { values } = parseArgs({ options: { 'step-ms': { type: 'string', default: '0' }, 'commit-every': { type: 'string', default: '5' } } });
const stepMs = Number(values['step-ms']);
const commitEvery = Number(values['commit-every']);

const pg = await initProcessGroup();
const dataset = syntheticDataset(pg.config.length);
const state = new ElasticState<Model>({ w: TRUE_W.map(() => 0), b: 0 });
let entries = 0;
let batches = 0;

const { summary } = await pg.elastic(state, async (state) => {
  if (entries++ > 0) console.log(`group changed: generation ${pg.generation}, rank ${pg.rank} of ${pg.worldSize}; back to the commit after ${state.steps} batches`);
  for await (const epoch of pg.epochs()) {
    for await (const batch of epoch.batches(dataset)) {
      if (stepMs > 0) await new Promise((resolve) => setTimeout(resolve, stepMs));
      const sums = await pg.allReduce(gradientSums(state.value, batch.samples));
      // The mean over every sample the group stepped on (ranks out of work add nothing).
      const count = sums[sums.length - 1];
      const model = state.value;
      model.w = model.w.map((w, k) => w - (LEARNING_RATE * sums[k]) / count);
      model.b -= (LEARNING_RATE * sums[model.w.length]) / count;
      if (++batches % commitEvery === 0) state.commit();
    }
  }
});

const { w, b } = state.value;
const error = Math.max(...w.map((wk, k) => Math.abs(wk - TRUE_W[k])), Math.abs(b - TRUE_B));
const converged = error <= TOLERANCE;
console.log(
  `w = [${w.map((v) => v.toFixed(4)).join(', ')}], b = ${b.toFixed(4)} (truth [${TRUE_W.join(', ')}], ${TRUE_B}): ` +
    `max error ${error.toFixed(4)} ${converged ? '<=' : '>'} tolerance ${TOLERANCE}; ${converged ? 'converged' : 'NOT converged'} ` +
    `(generation ${summary.generation}, ${summary.restarts} group ${summary.restarts === 1 ? 'change' : 'changes'} survived, ${summary.syncs} state syncs)`,
);
await pg.destroy();
process.exitCode = converged ? 0 : 1;

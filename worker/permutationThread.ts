/**
 * Worker-thread entry (see planSource.ts): torch's randperm for one epoch, posted back to the
 * main thread with its buffer transferred, not copied.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MT19937 } from '../shared/mt19937.ts';
import { randperm } from '../shared/randperm.ts';
import type { PermutationJob } from './planSource.ts';

const job = workerData as PermutationJob;
const table = randperm(job.length, new MT19937(job.seed32));
// A permutation table owns its whole buffer (never a SharedArrayBuffer): hand it over, no copy.
parentPort!.postMessage(table, [table.buffer as ArrayBuffer]);

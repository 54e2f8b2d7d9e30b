/**
 * Worker-thread entry (see planSource.ts): torch's randperm for one epoch, posted back to the
 * main thread. A JavaScript table's buffer is transferred, not copied. Up to COPY_LIMIT the
 * WebAssembly engine (about twice as fast cold) derives it and the table is copied out of its
 * memory, which cannot be transferred; beyond, the copy would double a table of gigabytes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MT19937 } from '../shared/mt19937.ts';
import { randperm, randpermForThisThread } from '../shared/randperm.ts';
import type { PermutationJob } from './planSource.ts';

/** 2^26 indices: a 256 MiB table, copied once. */
const COPY_LIMIT = 2 ** 26;

const job = workerData as PermutationJob;
const rng = new MT19937(job.seed32);
const derived = job.length <= COPY_LIMIT ? randpermForThisThread(job.length, rng) : randperm(job.length, rng);
// A table that owns its whole buffer is transferred; one in a WebAssembly memory (a view past
// the module's own words) is copied out.
const table = derived.byteOffset === 0 && derived.byteLength === derived.buffer.byteLength ? derived : derived.slice();
parentPort!.postMessage(table, [table.buffer as ArrayBuffer]);

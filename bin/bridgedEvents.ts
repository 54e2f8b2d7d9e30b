/**
 * The messages a coordinator process sends its launcher over IPC, as schemas: the launcher
 * parses each one at the edge instead of trusting a cast. Each payload schema is checked at
 * compile time against the event's TypeScript type, so the two cannot drift apart.
 */
import { z } from 'zod';
import { DistSamplerError } from '../shared/errors.ts';
import { SAMPLER_NAMES, type SamplerName } from '../shared/sampler.ts';
import { ENGINE_NAMES, type EngineName } from '../shared/permutation.ts';
import type { CoordinatorEvents } from '../coordinator/coreTypes.ts';
import { EPOCH_EVENT_TYPES, type EpochAudit, type EventValue, type RunReport } from '../coordinator/report.ts';
import { FailedSampleSchema } from '../coordinator/journalRecords.ts';

const count = z.number().int().nonnegative();
const rank = count;
const ms = z.number().nonnegative();
/** A pass (shared/evalPass.ts): a training epoch, or below 0 an evaluation pass. */
const pass = z.number().int();

/** An event's `data` value: JSON, typed as the report types it. */
const EventValueSchema: z.ZodType<EventValue> = z.lazy(() => z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(EventValueSchema), z.record(z.string(), EventValueSchema)]));

const EpochEventSchema = z.object({
  type: z.enum(EPOCH_EVENT_TYPES),
  rank: rank.nullable(),
  atMs: ms,
  at: z.string().optional(),
  detail: z.string(),
  data: z.record(z.string(), EventValueSchema).optional(),
});

const EvalSummarySchema = z.object({ afterEpoch: count, length: count, evaluated: count, duplicatesDropped: count, missing: count, sha256: z.string() });

const EpochAuditSchema = z.object({
  epoch: pass,
  worldSize: count,
  ranks: z.array(
    z.object({
      rank,
      pid: z.number().int().nullable(),
      samples: count,
      digest: z.string().nullable(),
      planDigest: z.string().nullable(),
      waitMs: ms.nullable(),
    }),
  ),
  planned: count,
  consumed: count,
  missing: count,
  redelivered: count,
  durationMs: ms,
  startedAt: z.string().optional(),
  downtimeMs: ms.optional(),
  runningMs: z.number().optional(),
  events: z.array(EpochEventSchema),
  ok: z.boolean(),
  eval: EvalSummarySchema.optional(),
  quarantined: count,
  failed: z.array(FailedSampleSchema),
  timeline: z.array(z.object({ rank, points: z.array(z.tuple([ms, count])) })).optional(),
});

/** The run report (`--report FILE` holds the same JSON). */
export const RunReportSchema = z.object({
  ok: z.boolean(),
  config: z.object({
    length: count,
    worldSize: count,
    epochs: count,
    seed: z.string(),
    shuffle: z.boolean(),
    dropLast: z.boolean(),
    engine: z.enum(ENGINE_NAMES as [EngineName, ...EngineName[]]),
    batchSize: count,
    sampler: z.enum(SAMPLER_NAMES as [SamplerName, ...SamplerName[]]),
    pad: z.boolean(),
    eval: z.object({ every: count, length: count, pad: z.boolean() }).optional(),
  }),
  epochs: z.array(EpochAuditSchema),
  eval: z.array(EvalSummarySchema.extend({ ok: z.boolean(), pass: EpochAuditSchema })),
  error: z.string().optional(),
});

const PAYLOADS = {
  listening: z.object({ host: z.string(), port: z.number().int().min(0).max(65535) }),
  joined: z.object({ rank, pid: z.number().int(), workerId: z.string(), rejoined: z.boolean(), standby: z.boolean() }),
  refused: z.object({ reason: z.string(), closeCode: z.number().int() }),
  epochStart: z.object({ epoch: pass, worldSize: count, numSamples: count, ranks: z.array(z.object({ rank, pid: z.number().int().nullable() })) }),
  progress: z.object({ epoch: pass, rank, acknowledged: count, numSamples: count, consumed: count, planned: count }),
  event: EpochEventSchema.extend({ epoch: pass.nullable() }),
  epochAudit: EpochAuditSchema,
  done: RunReportSchema,
} as const;

// Compile-time: each schema accepts exactly its event's type (a field added on one side fails here).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type PayloadsMatch = { [K in keyof CoordinatorEvents]: Same<z.infer<(typeof PAYLOADS)[K]>, CoordinatorEvents[K][0]> };
const payloadsMatch: PayloadsMatch = { listening: true, joined: true, refused: true, epochStart: true, progress: true, event: true, epochAudit: true, done: true };
const reportMatches: [Same<z.infer<typeof RunReportSchema>, RunReport>, Same<z.infer<typeof EpochAuditSchema>, EpochAudit>] = [true, true];
void payloadsMatch;
void reportMatches;

export type EventName = keyof typeof PAYLOADS;
export const EVENT_NAMES = Object.keys(PAYLOADS) as EventName[];

function bridged<K extends EventName>(name: K) {
  return z.object({ bridge: z.literal('coordinator'), name: z.literal(name), payload: PAYLOADS[name] });
}

/** One coordinator event on its way to the launcher. */
export const BridgedEventSchema = z.discriminatedUnion('name', [
  bridged('listening'),
  bridged('joined'),
  bridged('refused'),
  bridged('epochStart'),
  bridged('progress'),
  bridged('event'),
  bridged('epochAudit'),
  bridged('done'),
]);
export type BridgedEvent = z.infer<typeof BridgedEventSchema>;

/** A message from the coordinator process that claims to be an event but does not fit its schema. */
export class MalformedBridgedEventError extends DistSamplerError {
  constructor(detail: string) {
    super('ERR_MALFORMED_BRIDGED_EVENT', `the coordinator process sent a malformed event: ${detail}`);
  }
}

/**
 * An IPC message as a coordinator event: undefined for anything that is not one (other IPC
 * traffic), the parsed event when it fits its schema.
 * @throws MalformedBridgedEventError for a message tagged as an event that does not fit
 */
export function parseBridgedEvent(message: unknown): BridgedEvent | undefined {
  if (typeof message !== 'object' || message === null || !('bridge' in message) || message.bridge !== 'coordinator') return undefined;
  const parsed = BridgedEventSchema.safeParse(message);
  if (!parsed.success) throw new MalformedBridgedEventError(z.prettifyError(parsed.error).split('\n').slice(0, 2).join(' '));
  return parsed.data;
}

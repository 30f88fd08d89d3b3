/**
 * Compacts one bucket (SPEC §3), idempotently: any attempt may have been killed at any point, so each
 * attempt first reads the state the warehouse is in and continues from there.
 *
 *   output absent,  all inputs present  → (a) compact, verify, publish, delete, sweep
 *   output present, all inputs present  → (b) an attempt died after publishing: re-verify against the
 *                                          inputs; delete them if it matches, else replace the output
 *   output present, some inputs present → (c) an attempt died while deleting: check the output against
 *                                          its provenance and the remaining inputs, finish deleting
 *   output present, no inputs present   → (e) done earlier: report it, sweep leftovers
 *   output absent,  some inputs missing → (d) someone else changed the bucket: fail, delete nothing
 *
 * An input found in another version than the output was built from (rewritten under its name) is
 * never deleted: the next run compacts its new bytes with this output.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { BucketRequest, BucketResult } from '../../workflows/contract';
import { bucketPrefix } from '../../workflows/contract';
import { isNotFound, isRefusal, StorageError, type StoredObject, type WarehouseStore } from '../storage/warehouse-store';
import { isCompactableKey, isOutputKey, isTempArtifactName, outputKeyFor, parseDataFileKey } from '../storage/warehouse-layout';
import { withoutRequestDetails } from '../storage/s3-errors';
import {
  BadBucketDataError,
  BucketMemoryError,
  InputsChangedError,
  InvalidBucketRequestError,
  isDamagedFileError,
  listSome,
  MissingPlannedInputError,
  OtherPlanOutputError,
} from './bucket-errors';
import { crashPoint } from './crash-points';
import { DuckSessionPool } from './duckdb-pool';
import { isOutOfMemory, type DuckSession } from './duckdb-session';
import { firstLine } from '../error-text';
import {
  assertCompatibleSchemas,
  assertUsableColumns,
  valuelessParts,
  foldCase,
  findUnreadableInput,
  unionCastFailure,
  readInputSchema,
  withoutEmptyInputs,
  updatedPrecision,
  unionColumns,
  type InputSchema,
  type LocalInput,
  type OutputColumns,
} from './input-schema';
import { idsMissingFromOutput, inputIdDigest, outputIdDigest, type IdDigest } from './id-digests';
import { inputFootprint, largestRowGroup } from './input-footprint';
import { outputRowGroup } from './output-format';
import { findGeoConflict, outputKvMetadata, parseProvenance, readKvMetadata, type Provenance } from './output-metadata';
import { computeWinners, nullIdError } from './rank-winners';
import { SHRINK_FACTOR, writeOrdered, type WritePlan } from './write-ordered';
import { renamedColumnMerges, sameNumberTypes, tableTypeCasts, type TableNumberTypes, type TableRenames } from './table-types';
import { writeSmallBucket } from './write-small-bucket';

export type BucketPhase = 'inspect' | 'read' | 'dedup' | 'write' | 'verify' | 'publish' | 'delete' | 'sweep';

/** Heartbeat details: small and JSON, shown in Temporal's UI. */
export interface BucketProgress {
  phase: BucketPhase;
  filesIn: number;
  rowsIn?: number;
  rowsOut?: number;
  /** A bucket larger than one in-memory sort is written in chunks: how many are done, of how many. */
  chunksDone?: number;
  chunks?: number;
  /** Inputs already in output order, which that write reads by slices instead of scattering them. */
  presortedInputs?: number;
  /** Row groups (and their rows) of those inputs copied into the output as they are. */
  passthroughRowGroups?: number;
  passthroughRows?: number;
  /** Which state the attempt found the bucket in (see the module comment). */
  state?: 'fresh' | 'published' | 'deleting' | 'done';
}

export interface CompactBucketOptions {
  /** Private to this attempt; materialized inputs, spill files and (remote stores) the output are built here. */
  scratchDir: string;
  memoryLimitMb: number;
  threads: number;
  /** Called at every phase; may throw to stop before the next step. */
  heartbeat: (p: BucketProgress) => void;
  /**
   * Stops the attempt (the activity's cancellation): the bucket's DuckDB statement in flight is
   * interrupted (a range being sorted on a side lane finishes first: seconds, its size bounded by the
   * memory budget), a download or upload abandoned, and the attempt rejects with the signal's reason.
   * Honoured until the attempt announces its deletes (phase 'delete'), and not at all by an attempt that
   * finds deletes an earlier one began: such an attempt finishes, so that a cancelled run counts the
   * bucket and rebuilds the table, which would otherwise list the inputs already deleted.
   */
  signal?: AbortSignal;
  /** Where an attempt reports what it left alone on purpose (the activity's logger). */
  warn?: (message: string) => void;
  /**
   * Wide-row bytes one DuckDB sort may take (default 40 % of memoryLimit: measured safe from 256 MB to
   * 2 GB); a bucket above it is written through rank ranges. Tests lower it to exercise that path.
   */
  sortBudgetBytes?: number;
  /**
   * Input rows (in-memory bytes) up to which dedup, sort and write are one statement (default half the
   * sort budget: the window holds every input row, duplicates included). Tests set 0 to exercise the
   * ranked path.
   */
  smallBucketBytes?: number;
  /** The table's number types as the plan recorded them (tableTypeCasts); absent: the union's types are written. */
  tableTypes?: TableNumberTypes;
  /** The table's renamed columns as the plan recorded them (renamedColumnMerges); absent: none merged. */
  tableRenames?: TableRenames;
  /** The worker's DuckDB sessions; without it the attempt opens and closes its own. */
  sessions?: DuckSessionPool;
  /** Most rank ranges one scatter pass writes (default 64). Tests lower it to force deeper scatters. */
  maxScatterFanout?: number;
  /**
   * Whether the out-of-core write reads inputs already in output order by slices instead of scattering
   * them (default true). Tests turn it off to exercise scattering on inputs that happen to be sorted.
   */
  slicePresortedInputs?: boolean;
  /**
   * Whether row groups of those inputs in which nothing changed are copied into the output byte for byte
   * (default true). Tests turn it off to compare with the output built without it.
   */
  passthroughRowGroups?: boolean;
}

/** Most rank ranges one scatter pass writes (open files); memory usually allows fewer (scatterFanout). */
const MAX_SCATTER_FANOUT = 64;

/** Verification failed: retrying rebuilds from the untouched inputs. Retryable on purpose. */
export class OutputVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutputVerificationError';
  }
}

interface Attempt {
  store: WarehouseStore;
  req: BucketRequest;
  opts: CompactBucketOptions;
  bucket: string;
  outputKey: string;
  session: DuckSession;
  workDir: string;
  progress: BucketProgress;
  /** opts.signal until the deletes are announced, then never aborted. */
  stop: AbortSignal;
  /** Called when the deletes are announced. */
  finishFromHere: () => void;
}

function beat(a: Attempt, patch: Partial<BucketProgress>): void {
  Object.assign(a.progress, patch);
  if (a.progress.phase === 'delete') a.finishFromHere();
  a.opts.heartbeat({ ...a.progress });
  a.stop.throwIfAborted();
}

/** The session with a check of `stop` before and after every statement: a stop between two statements is not lost. */
function stoppable(session: DuckSession, stop: AbortSignal): DuckSession {
  return {
    conn: session.conn,
    async rows(sql) {
      stop.throwIfAborted();
      const rows = await session.rows(sql);
      stop.throwIfAborted();
      return rows;
    },
    async exec(sql) {
      stop.throwIfAborted();
      await session.exec(sql);
      stop.throwIfAborted();
    },
    close: () => session.close(),
  };
}

/** `caller`'s aborts until `finishFromHere` is called. */
function stopUntilDeletes(caller: AbortSignal | undefined): { stop: AbortSignal; finishFromHere: () => void } {
  const controller = new AbortController();
  const forward = () => controller.abort(caller?.reason);
  if (caller?.aborted) forward();
  else caller?.addEventListener('abort', forward, { once: true });
  return { stop: controller.signal, finishFromHere: () => caller?.removeEventListener('abort', forward) };
}

function assertSaneRequest(req: BucketRequest, bucket: string, outputKey: string): void {
  if (req.inputs.length === 0) throw new InvalidBucketRequestError(`bucket ${bucket}: the plan lists no inputs`);
  const seen = new Set<string>();
  for (const input of req.inputs) {
    const parsed = parseDataFileKey(input.key);
    if (!parsed || bucketPrefix(parsed.bucket) !== bucket) {
      throw new InvalidBucketRequestError(`bucket ${bucket}: planned input ${input.key} is not a data file of this bucket`);
    }
    if (!isCompactableKey(input.key)) {
      throw new InvalidBucketRequestError(`bucket ${bucket}: planned input ${input.key} has a character DuckDB reads as a glob (* ? [ ] { }) or a control character S3's batch delete cannot carry`);
    }
    if (input.key === outputKey) {
      throw new InvalidBucketRequestError(`bucket ${bucket}: planned input ${input.key} is this plan's own output`);
    }
    if (seen.has(input.key)) throw new InvalidBucketRequestError(`bucket ${bucket}: planned input ${input.key} is listed twice`);
    seen.add(input.key);
  }
}

/**
 * DuckDB's operators need a share of memory per thread; below ~128 MB each, aggregates and sorts fail
 * instead of spilling (measured with 64 MB and 2 threads), so a small budget gets fewer threads.
 */
export function threadsFor(opts: Pick<CompactBucketOptions, 'threads' | 'memoryLimitMb'>): number {
  return Math.max(1, Math.min(opts.threads, Math.floor(opts.memoryLimitMb / 128)));
}

export async function compactBucket(
  store: WarehouseStore,
  req: BucketRequest,
  opts: CompactBucketOptions,
): Promise<BucketResult> {
  const bucket = bucketPrefix(req.bucket);
  const outputKey = outputKeyFor(req.bucket, req.planId);
  assertSaneRequest(req, bucket, outputKey);
  const progress: BucketProgress = { phase: 'inspect', filesIn: req.inputs.length };
  opts.heartbeat({ ...progress });

  const listed = await listBucket(store, bucket);
  const present = req.inputs.flatMap((i) => listed.get(i.key) ?? []);
  const missing = req.inputs.filter((i) => !listed.has(i.key)).map((i) => i.key);
  const outputSize = listed.get(outputKey)?.size;
  const others = otherPlanOutputs(req, outputKey, listed);
  if (others.length) throw new OtherPlanOutputError(bucket, others, outputSize === undefined ? undefined : outputKey);
  if (outputSize === undefined && missing.length) throw new MissingPlannedInputError(bucket, missing);

  await fs.mkdir(opts.scratchDir, { recursive: true });
  const workDir = await fs.mkdtemp(path.join(opts.scratchDir, 'bucket-'));
  // An earlier attempt began the deletes (states c and e): this one finishes them whatever happens, so that
  // the bucket is counted and a cancelled run rebuilds the table, which still lists the inputs already deleted.
  const deletesBegun = outputSize !== undefined && missing.length > 0;
  const { stop, finishFromHere } = stopUntilDeletes(deletesBegun ? undefined : opts.signal);
  try {
    const pool = opts.sessions ?? new DuckSessionPool(workDir, 0);
    const lease = await pool.acquire({ memoryLimitMb: opts.memoryLimitMb, threads: threadsFor(opts) });
    const a: Attempt = { store, req, opts, bucket, outputKey, session: stoppable(lease.session, stop), workDir, progress, stop, finishFromHere };
    // An interrupt that reaches DuckDB before its statement has started is lost: repeat it until the attempt ends.
    let interrupting: NodeJS.Timeout | undefined;
    const interrupt = () => {
      lease.session.conn.interrupt();
      interrupting = setInterval(() => lease.session.conn.interrupt(), 50);
    };
    stop.addEventListener('abort', interrupt, { once: true });
    let clean = false;
    try {
      let result: BucketResult;
      if (outputSize === undefined) result = await compactFresh(a, present, true);
      else if (!deletesBegun) result = await resumePublished(a, present, outputSize);
      else if (present.length) result = await resumeDeleting(a, present, outputSize);
      else result = await reportDone(a, outputSize);
      clean = true;
      return result;
    } catch (err) {
      // Whatever the interruption surfaced as (DuckDB's "Interrupted", an aborted request), the attempt was stopped.
      throw stop.aborted ? (stop.reason ?? err) : err;
    } finally {
      stop.removeEventListener('abort', interrupt);
      clearInterval(interrupting);
      // An interrupted session is not reused (clean stays false).
      await lease.release(clean);
    }
  } finally {
    finishFromHere();
    await fs.rm(workDir, { recursive: true, force: true });
  }
}

/**
 * Materializes and checks every input on its own (naming a bad one), leaves out those without rows, then
 * checks their types together. `allowNone`: the caller takes an empty list (the ids of the inputs left,
 * of which there may be none); otherwise a bucket of nothing but empty files keeps them all, to be merged
 * into an output of no rows.
 */
async function readInputs(
  a: Attempt,
  present: readonly StoredObject[],
  { allowNone = false }: { allowNone?: boolean } = {},
): Promise<{ inputs: LocalInput[]; schemas: InputSchema[] }> {
  beat(a, { phase: 'read' });
  const dir = path.join(a.workDir, 'inputs');
  await fs.mkdir(dir, { recursive: true });
  const inputs: LocalInput[] = [];
  const schemas: InputSchema[] = [];
  for (const p of present) {
    try {
      const input = { key: p.key, size: p.size, path: await a.store.materialize(p.key, dir, p.version, { signal: a.stop }) };
      inputs.push(input);
      schemas.push(await readInputSchema(a.session, input));
    } catch (err) {
      if (a.stop.aborted) throw err;
      throw await unlessChanged(a, [p], err);
    }
  }
  const nonEmpty = withoutEmptyInputs(inputs, schemas);
  const used = nonEmpty.inputs.length > 0 || allowNone ? nonEmpty : { inputs, schemas };
  for (const [i, input] of used.inputs.entries()) {
    try {
      await assertUsableColumns(input, used.schemas[i]!);
    } catch (err) {
      throw await unlessChanged(a, present.filter((p) => p.key === input.key), err);
    }
  }
  await assertCompatibleSchemas(a.session, used.inputs, used.schemas);
  return used;
}

/** Every object in the bucket's directory, by key. */
async function listBucket(store: WarehouseStore, bucket: string): Promise<Map<string, StoredObject>> {
  const listed = new Map<string, StoredObject>();
  for await (const o of store.list(`${bucket}/`)) listed.set(o.key, o);
  return listed;
}

/**
 * Compacted outputs in the bucket that are neither this plan's nor among its inputs. The plan lists every
 * output of the bucket first, so one of these was published after the plan was made: by an attempt of a
 * stopped run that had not heard yet. Its output names another plan, so the exclusive publish of ours
 * does not stop it.
 */
function otherPlanOutputs(req: BucketRequest, outputKey: string, listed: ReadonlyMap<string, StoredObject>): string[] {
  const planned = new Set(req.inputs.map((i) => i.key));
  // Data files of the layout only: a subfolder's files (a backup) are not, so no plan lists them.
  return [...listed.keys()].filter((key) => parseDataFileKey(key) && isOutputKey(key) && key !== outputKey && !planned.has(key)).sort();
}

/**
 * Throws InputsChangedError (retried) when a listing of the bucket lacks any of `present` or has another
 * version of it, and OtherPlanOutputError when another plan's output appeared in it.
 */
async function assertInputsUnchanged(a: Attempt, present: readonly StoredObject[]): Promise<void> {
  const listed = await listBucket(a.store, a.bucket);
  const changed = changedInputs(a, present, listed);
  if (changed) throw changed;
  const others = otherPlanOutputs(a.req, a.outputKey, listed);
  if (others.length) throw new OtherPlanOutputError(a.bucket, others);
}

/**
 * An input that is gone was not bad data: a concurrent attempt of this plan deleted it after
 * verifying its output. One that was rewritten (an ingest writing the same name again) must be read
 * again. Both are retryable, so the next attempt starts from the new state. One listing of the bucket,
 * not a request per input.
 */
async function unlessChanged(a: Attempt, read: readonly StoredObject[], err: unknown): Promise<unknown> {
  return changedInputs(a, read, await listBucket(a.store, a.bucket)) ?? err;
}

function changedInputs(a: Attempt, read: readonly StoredObject[], listed: ReadonlyMap<string, StoredObject>): InputsChangedError | undefined {
  const vanished = read.filter((o) => !listed.has(o.key)).map((o) => o.key);
  const rewritten = read.filter((o) => listed.has(o.key) && listed.get(o.key)!.version !== o.version).map((o) => o.key);
  return vanished.length || rewritten.length ? new InputsChangedError(a.bucket, vanished, rewritten) : undefined;
}

/** DuckDB errors that a damaged file can cause (not memory, not interruption, not our heartbeat). */
const DATA_ERROR = /\b(Invalid Input|IO|Conversion|Serialization|Invalid) Error\b/;

/**
 * A failed merge statement is the data's fault only if some input cannot be decoded on its own; an
 * out-of-memory error is the budget's, and says so.
 */
async function explainMergeFailure(
  a: Attempt,
  present: readonly StoredObject[],
  inputs: readonly LocalInput[],
  err: unknown,
): Promise<unknown> {
  if (err instanceof BadBucketDataError || a.stop.aborted) return err;
  if (err instanceof Error && isOutOfMemory(err)) {
    const bytesIn = inputs.reduce((s, i) => s + i.size, 0);
    // Footers only; a session that cannot even read those leaves the message without the row group.
    const largest = await largestRowGroup(a.session, inputs).catch(() => undefined);
    const columns = await unionColumns(a.session, inputs).then((c) => c.length, () => undefined);
    return new BucketMemoryError(a.bucket, a.opts.memoryLimitMb, inputs.length, bytesIn, firstLine(err), largest, columns);
  }
  if (!(err instanceof Error) || !DATA_ERROR.test(err.message)) return err;
  const changed = await unlessChanged(a, present, err);
  if (changed !== err) return changed;
  return unionCastFailure(err, inputs) ?? (await findUnreadableInput(a.session, inputs)) ?? err;
}

/** DuckDB's words for a refusal of the operating system (EACCES, EPERM, EROFS). */
const REFUSED = /\b(Permission denied|Operation not permitted|Read-only file system)\b/;

/**
 * A local warehouse's output is written beside the bucket's inputs, so a folder the worker may not write
 * (another owner after a migration, a read-only mount) fails the write: a refusal, as the store's own
 * writes report it (StorageAccessDenied, not retried), rather than eight attempts over several minutes.
 */
function refusedOutputWrite(a: Attempt, tmp: string, err: unknown): StorageError | undefined {
  // An S3 warehouse's output is written in the worker's scratch directory: that is the worker's to fix, and another may succeed.
  if (!(err instanceof Error) || tmp.startsWith(a.workDir + path.sep)) return undefined;
  const byDuckDb = /\bIO Error\b/.test(err.message) && REFUSED.test(err.message) && err.message.includes(tmp);
  const byNode = isRefusal(err) && (err as NodeJS.ErrnoException).path === tmp;
  if (!byDuckDb && !byNode) return undefined;
  return new StorageError(`bucket ${a.bucket}: cannot write its output in ${path.dirname(tmp)}: ${firstLine(err)}`, 'denied');
}

/**
 * One output file has one `geo` declaration per geometry column: inputs in different CRSs (or epochs, or
 * with other edges) cannot be merged without mislabelling some rows' coordinates, so the bucket is
 * refused before anything is written, naming the inputs of each declaration.
 */
function assertOneGeoMeaning(inputs: readonly LocalInput[], geos: readonly (Uint8Array | undefined)[]): void {
  const conflict = findGeoConflict(geos);
  if (!conflict) return;
  const keysOf = (indexes: readonly number[]) => indexes.map((i) => inputs[i]!.key);
  const detail = conflict.values.map((v) => `${v.label}: ${listSome(keysOf(v.inputs), 5)}`).join('; ');
  const [what, harm] =
    conflict.declaration === 'edges'
      ? ['edges', "some rows' edges would be read as the other kind (spherical or planar)"]
      : ['coordinate reference systems', "some rows' coordinates would be read in the wrong system"];
  throw new BadBucketDataError(
    `the inputs declare different ${what} for geometry column '${conflict.column}' (${detail}); one file declares one for all ` +
      `its rows, so in one output ${harm}. Rewrite the inputs with one declaration`,
    conflict.values.flatMap((v) => keysOf(v.inputs)),
  );
}

/** DuckDB ran out of memory where the estimate of a row said it would not (deeply nested columns): the attempt goes on, smaller. */
function tookMoreMemory(a: Attempt, why: string, instead: string): void {
  a.opts.warn?.(`bucket ${a.bucket}: its rows took more memory than estimated (${why}); ${instead}`);
}

/** State (a): build, verify and publish the output, then delete the inputs and sweep. */
async function compactFresh(
  a: Attempt,
  present: readonly StoredObject[],
  mayResume: boolean,
): Promise<BucketResult> {
  beat(a, { state: 'fresh' });
  const { inputs, schemas } = await readInputs(a, present);
  const [firstKv, ...otherKv] = await readKvMetadata(a.session, inputs.map((i) => i.path));
  const otherGeo = otherKv.map((entries) => entries.find((e) => e.key === 'geo')?.value);
  assertOneGeoMeaning(inputs, [firstKv!.find((e) => e.key === 'geo')?.value, ...otherGeo]);
  // Checked before a path is chosen: every path must pick the same winners.
  const updated = await updatedPrecision(a.session, inputs, schemas);
  const bytesIn = present.reduce((s, i) => s + i.size, 0);

  beat(a, { phase: 'dedup' });
  const memory = a.opts.memoryLimitMb * 1024 * 1024;
  const sortBudgetBytes = a.opts.sortBudgetBytes ?? memory * 0.4;
  // The id digest is read from the inputs themselves, independently of how the output is built, and is
  // what the output is verified against before it is published (a big bucket's comes with the narrow
  // read that picks the winners).
  let expected: IdDigest;
  let footprint;
  let small: boolean;
  try {
    footprint = await inputFootprint(a.session, inputs);
    small = footprint.rows * footprint.rowBytes <= (a.opts.smallBucketBytes ?? sortBudgetBytes / 2);
    if (small) {
      expected = await inputIdDigest(a.session, inputs);
      if (expected.nullIds > 0) throw await nullIdError(a.session, inputs);
    } else {
      expected = await computeWinners(a.session, inputs, schemas, footprint, updated);
    }
  } catch (err) {
    throw await explainMergeFailure(a, present, inputs, err);
  }
  const stats = { rowsIn: expected.rows, rowsOut: expected.distinctIds };
  beat(a, { phase: 'write', ...stats });

  const provenance: Provenance = {
    planId: a.req.planId,
    bucket: a.bucket,
    inputs: a.req.inputs.map((i) => i.key),
    rows: stats.rowsOut,
    rowsIn: stats.rowsIn,
    bytesIn,
    // Every planned input is present in this state, in plan order.
    inputVersions: present.map((p) => p.version),
    ...(a.opts.tableTypes ? { tableTypes: a.opts.tableTypes } : {}),
  };
  const kv = outputKvMetadata(firstKv!, otherGeo, provenance);
  // Unique per attempt: a zombie attempt of the same plan never writes into our temporary file.
  const tag = `${process.pid}-${randomUUID().slice(0, 8)}`;
  const tmp = a.store.scratchPathFor(a.outputKey, a.workDir, tag);
  try {
    try {
      const rowGroup = outputRowGroup(memory, footprint.rowBytes);
      const output = await outputColumns(a, inputs, schemas);
      const ordered: WritePlan = {
        rowBytes: footprint.rowBytes,
        sortBudgetBytes,
        memoryLimitBytes: memory,
        threads: threadsFor(a.opts),
        rowGroup,
        maxFanout: a.opts.maxScatterFanout ?? MAX_SCATTER_FANOUT,
        slicePresorted: a.opts.slicePresortedInputs ?? true,
        passthroughPresorted: a.opts.passthroughRowGroups ?? true,
        workDir: a.workDir,
        output,
        onChunk: (done, total) => beat(a, { chunksDone: done, chunks: total }),
        onPresorted: (keys) => beat(a, { presortedInputs: keys.length }),
        onPassthrough: (rowGroups, rows) => beat(a, { passthroughRowGroups: rowGroups, passthroughRows: rows }),
        onShrink: (chunkRows, why) => tookMoreMemory(a, why, `sorting ranges of ${chunkRows} rows instead`),
      };
      if (!small) await writeOrdered(a.session, inputs, schemas, stats.rowsOut, tmp, kv, ordered);
      else {
        try {
          await writeSmallBucket(a.session, inputs, schemas, tmp, kv, rowGroup, output);
        } catch (err) {
          // The window over every input row did not fit: the ranked path, with a larger estimate of a row.
          if (!(err instanceof Error) || !isOutOfMemory(err) || a.stop.aborted) throw err;
          await fs.rm(tmp, { force: true });
          tookMoreMemory(a, firstLine(err), 'writing it through rank ranges instead');
          await computeWinners(a.session, inputs, schemas, footprint, updated);
          await writeOrdered(a.session, inputs, schemas, stats.rowsOut, tmp, kv, { ...ordered, sortScale: SHRINK_FACTOR });
        }
      }
    } catch (err) {
      throw refusedOutputWrite(a, tmp, err) ?? (await explainMergeFailure(a, present, inputs, err));
    }

    // Verified before it is published, so a wrong file never becomes visible.
    beat(a, { phase: 'verify' });
    const actual = await outputIdDigest(a.session, tmp);
    try {
      assertDigestsMatch(a, expected, actual, stats.rowsOut, tmp);
    } catch (err) {
      // A local input is read in place, once to count its ids and once to write them: rewritten in between
      // (an ingest), the output holds other ids than those counted, which is the input's doing, not ours.
      throw await unlessChanged(a, present, err);
    }

    beat(a, { phase: 'publish' });
    const bytesOut = (await fs.stat(tmp)).size;
    // The inputs may have gone while this attempt worked from its copies: a newer plan compacted them
    // (this attempt's run was terminated and it had not heard yet). Its output must not join theirs.
    // An input rewritten while it was read (a local file is read in place) must be compacted again.
    await assertInputsUnchanged(a, present);
    // A local publish is instant and takes no signal: a stop during the check above must not publish.
    a.stop.throwIfAborted();
    const published = await a.store.publishIfAbsent(tmp, a.outputKey, { signal: a.stop });
    if (published === 'exists') {
      // Another attempt of this plan published first; its file is checked like any found output.
      if (!mayResume) {
        throw new OutputVerificationError(`bucket ${a.bucket}: ${a.outputKey} reappeared while it was being replaced`);
      }
      return await resumePublished(a, present, (await a.store.stat(a.outputKey))?.size ?? 0);
    }
    crashPoint('after-publish', a.bucket);
    return await finish(a, present, provenance, {
      outcome: 'compacted',
      rowsIn: stats.rowsIn,
      rowsOut: stats.rowsOut,
      bytesIn,
      bytesOut,
    });
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/**
 * How the output's columns differ from the union: valueless parts left out, a renamed column's two names
 * written as its current one, numbers as the table types them.
 */
async function outputColumns(a: Attempt, inputs: readonly LocalInput[], schemas: readonly InputSchema[]): Promise<OutputColumns> {
  const output = await valuelessParts(a.session, inputs, schemas);
  const table = a.opts.tableTypes ?? {};
  const renames = a.opts.tableRenames ?? {};
  if (Object.keys(table).length === 0 && Object.keys(renames).length === 0) return output;
  const omitted = new Set(output.omitted.map((c) => foldCase(c)));
  let union = (await unionColumns(a.session, inputs)).filter((c) => !omitted.has(foldCase(c.name)));
  const { merged, types } = await renamedColumnMerges(a.session, union, schemas, renames);
  output.merged = merged;
  const mergedAway = new Set([...merged.values()].flat());
  output.omitted.push(...mergedAway);
  // An old name's own cast (its valueless struct fields left out) would name it beside its exclusion.
  for (const name of mergedAway) output.casts.delete(name);
  for (const [name, type] of types) output.casts.set(name, type);
  union = union
    .filter((c) => !mergedAway.has(c.name))
    .map((c) => {
      const others = merged.get(c.name);
      return others ? { ...c, type: types.get(c.name) ?? c.type, alsoFrom: others } : c;
    });
  for (const [name, type] of await tableTypeCasts(a.session, inputs, schemas, union, table)) output.casts.set(name, type);
  return output;
}

function assertDigestsMatch(a: Attempt, expected: IdDigest, actual: IdDigest, provenanceRows: number, what: string): void {
  const problems: string[] = [];
  if (actual.rows !== expected.distinctIds) {
    problems.push(`${actual.rows} rows but the inputs hold ${expected.distinctIds} distinct ids`);
  }
  if (actual.distinctIds !== actual.rows) problems.push(`${actual.rows - actual.distinctIds} duplicate ids`);
  if (actual.idHashSum !== expected.idHashSum) problems.push('its id set differs from the inputs');
  if (actual.rows !== provenanceRows) problems.push(`${actual.rows} rows but its provenance says ${provenanceRows}`);
  if (problems.length) {
    throw new OutputVerificationError(
      `bucket ${a.bucket}: output ${what} failed verification (${problems.join('; ')}); no input was deleted`,
    );
  }
}

function sameInputs(a: Attempt, p: Provenance): boolean {
  return (
    p.planId === a.req.planId &&
    p.bucket === a.bucket &&
    p.inputs.length === a.req.inputs.length &&
    p.inputs.every((k, i) => k === a.req.inputs[i]!.key)
  );
}

interface OutputRead {
  path: string;
  provenance?: Provenance;
  digest?: IdDigest;
}

/** The output is readable, names this plan's inputs, and holds the distinct rows its provenance counts. */
function intact(a: Attempt, out: OutputRead): boolean {
  const p = out.provenance;
  const d = out.digest;
  return p !== undefined && d !== undefined && sameInputs(a, p) && d.rows === p.rows && d.rows === d.distinctIds;
}

/**
 * Our output's provenance and digest, both undefined when DuckDB cannot read the object as Parquet.
 * Storage errors (fetching it) propagate: they say nothing about the file's content.
 *
 * An output whose provenance names this plan's inputs was verified before it was published, and another
 * attempt may be deleting those inputs right now on the strength of it. So failing to read it through
 * counts against the file only when DuckDB says the file itself is damaged; running out of memory, a
 * full spill disk or an interruption propagates (the attempt is retried) and never gets it replaced.
 */
async function readOutput(a: Attempt): Promise<OutputRead> {
  const dir = path.join(a.workDir, 'output');
  await fs.mkdir(dir, { recursive: true });
  let file: string;
  try {
    file = await a.store.materialize(a.outputKey, dir, undefined, { signal: a.stop });
  } catch (err) {
    if (!isNotFound(err)) throw err;
    // Listed a moment ago: a concurrent attempt replaced it. Not a missing input, so retried, not failed.
    throw new Error(`bucket ${a.bucket}: the output ${a.outputKey} vanished while it was being read (a concurrent attempt replaced it); the next attempt starts over`);
  }
  let provenance: Provenance | undefined;
  try {
    const [kv] = await readKvMetadata(a.session, [file]);
    provenance = parseProvenance(kv!);
  } catch (err) {
    // Without its provenance we cannot tell whose output it is, so only a file DuckDB cannot decode counts as damaged.
    if (!isDamagedFileError(err, file)) throw err;
    return { path: file };
  }
  try {
    return { path: file, provenance, digest: await outputIdDigest(a.session, file) };
  } catch (err) {
    if (provenance && sameInputs(a, provenance) && !isDamagedFileError(err, file)) throw err;
    return { path: file, provenance };
  }
}

/**
 * State (b): an attempt published and died before deleting. The output is ours (its name holds the
 * plan id); if it does not match the inputs it is replaced, never trusted.
 */
async function resumePublished(a: Attempt, present: readonly StoredObject[], outputSize: number): Promise<BucketResult> {
  beat(a, { phase: 'verify', state: 'published' });
  const out = await readOutput(a);
  if (intact(a, out) && rewrittenSince(out.provenance!, present).length) {
    // The output holds an input's earlier bytes. A concurrent attempt may be deleting the other inputs on
    // the strength of it, so it is kept, checked like a half-deleted bucket's, and the rewritten input stays.
    return resumeDeleting(a, present, outputSize, out);
  }
  const made = out.provenance;
  if (made !== undefined && !sameInputs(a, made)) {
    // Our output name, made from other inputs than this plan lists (a plan page edited by hand that lists
    // the bucket twice, a file copied here): those inputs may be deleted already, so the output may be all
    // that holds their rows. It is not ours to replace.
    throw new BadBucketDataError(
      `bucket ${a.bucket}: the output ${a.outputKey} was made from other inputs (plan ${made.planId}${made.bucket === a.bucket ? '' : `, bucket ${made.bucket}`}, ` +
        `${made.inputs.length} input(s), first ${made.inputs[0] ?? 'none'}) than this plan lists for the bucket; the output and every planned input were left in place`,
      [a.outputKey],
    );
  }
  const { inputs } = await readInputs(a, present);
  beat(a, { phase: 'verify' });
  let expected: IdDigest;
  try {
    expected = await inputIdDigest(a.session, inputs);
  } catch (err) {
    throw await explainMergeFailure(a, present, inputs, err);
  }
  const p = out.provenance;
  const d = out.digest;
  const matches =
    p !== undefined &&
    d !== undefined &&
    sameInputs(a, p) &&
    d.rows === p.rows &&
    d.rows === d.distinctIds &&
    d.rows === expected.distinctIds &&
    d.idHashSum === expected.idHashSum;
  if (!matches) {
    await a.store.deleteMany([a.outputKey]);
    return compactFresh(a, present, false);
  }
  const stat = await a.store.stat(a.outputKey);
  return finish(a, present, p, {
    outcome: 'compacted',
    rowsIn: expected.rows,
    rowsOut: p.rows,
    bytesIn: present.reduce((s, i) => s + i.size, 0),
    bytesOut: stat?.size ?? 0,
  });
}

/**
 * State (c): an attempt verified, published and was deleting. The deleted inputs cannot be re-read,
 * so the output must be intact (readable, row count = its provenance) and cover every id still in
 * the remaining inputs; otherwise nothing more is deleted and the bucket is reported.
 */
async function resumeDeleting(
  a: Attempt,
  present: readonly StoredObject[],
  outputSize: number,
  alreadyRead?: OutputRead,
): Promise<BucketResult> {
  beat(a, { phase: 'verify', state: 'deleting' });
  const out = alreadyRead ?? (await readOutput(a));
  const p = out.provenance;
  if (!p || !intact(a, out)) {
    throw new BadBucketDataError(
      `bucket ${a.bucket}: planned inputs are partly deleted but the output ${a.outputKey} is unreadable or does not ` +
        `match its provenance; the remaining inputs were left in place`,
      [a.outputKey],
    );
  }
  // A rewritten input's new bytes were never compacted: finish leaves it in place, so its ids need no cover.
  const rewritten = new Set(rewrittenSince(p, present));
  const { inputs } = await readInputs(a, present.filter((o) => !rewritten.has(o.key)), { allowNone: true });
  beat(a, { phase: 'verify' });
  const uncovered = inputs.length ? await idsMissingFromOutput(a.session, inputs, out.path) : 0;
  if (uncovered > 0) {
    throw new BadBucketDataError(
      `bucket ${a.bucket}: ${uncovered} id(s) of the remaining inputs are not in the output ${a.outputKey}; ` +
        `the remaining inputs were left in place`,
      [a.outputKey],
    );
  }
  return finish(a, present, p, {
    outcome: 'compacted',
    rowsIn: p.rowsIn,
    rowsOut: p.rows,
    bytesIn: p.bytesIn,
    bytesOut: outputSize,
  });
}

/** State (e): all inputs are gone and our output is there; only leftovers may remain. */
async function reportDone(a: Attempt, outputSize: number): Promise<BucketResult> {
  beat(a, { phase: 'verify', state: 'done' });
  const out = await readOutput(a);
  const p = out.provenance;
  if (!p || !out.digest || !sameInputs(a, p) || out.digest.rows !== p.rows) {
    throw new BadBucketDataError(
      `bucket ${a.bucket}: every planned input is gone but the output ${a.outputKey} is unreadable or does not match its provenance`,
      [a.outputKey],
    );
  }
  return finish(a, [], p, {
    outcome: 'already-compacted',
    rowsIn: p.rowsIn,
    rowsOut: p.rows,
    bytesIn: p.bytesIn,
    bytesOut: outputSize,
  });
}

type Figures = Pick<BucketResult, 'outcome' | 'rowsIn' | 'rowsOut' | 'bytesIn' | 'bytesOut'>;

/**
 * Deletes the remaining inputs (the output is verified by now), then sweeps leftovers. An input whose
 * version is not the one the output was built from was rewritten since it was read: deleting it would
 * lose the new bytes, so it stays and the next run compacts it with this output.
 */
async function finish(a: Attempt, present: readonly StoredObject[], provenance: Provenance, figures: Figures): Promise<BucketResult> {
  beat(a, { phase: 'delete', rowsIn: figures.rowsIn, rowsOut: figures.rowsOut });
  // Listed as late as possible: a rewrite after this listing is the one window left (S3 has no batch delete
  // by version). The same listing finds the leftovers to sweep: deleting inputs does not change which they are.
  const listed = await listBucket(a.store, a.bucket);
  let keys: string[] = [];
  let kept: string[] = [];
  // Published beside ours after our pre-publish check: neither attempt saw the other's output before publishing.
  const others = otherPlanOutputs(a.req, a.outputKey, listed);
  if (others.length && present.length) throw new OtherPlanOutputError(a.bucket, others, a.outputKey);
  if (present.length) {
    // A concurrent attempt replaces an output only when it finds the file damaged; then these inputs are its to use.
    if (!listed.has(a.outputKey)) {
      throw new Error(`bucket ${a.bucket}: the output ${a.outputKey} is gone (a concurrent attempt replaced it); no input was deleted, the next attempt starts over`);
    }
    const current = present.flatMap((o) => listed.get(o.key) ?? []);
    kept = rewrittenSince(provenance, current);
    keys = current.map((o) => o.key).filter((key) => !kept.includes(key));
  }
  if (kept.length) {
    a.opts.warn?.(`bucket ${a.bucket}: ${kept.length} input(s) were rewritten after they were compacted and are left for the next run (${listSome(kept)})`);
  }
  const half = Math.ceil(keys.length / 2);
  let deleted = 0;
  try {
    if (keys.length) {
      await a.store.deleteMany(keys.slice(0, half));
      deleted = half;
      crashPoint('after-partial-delete', a.bucket);
      await a.store.deleteMany(keys.slice(half));
    }
  } catch (err) {
    // Retryable errors converge on the next attempt (state c). A refusal does not, nor does a retryable
    // error that outlasts every attempt, and the run reports the bucket as failed: say that its output is
    // published beside inputs still present, not that nothing changed. The error keeps its kind (retried or not).
    if (!(err instanceof Error)) throw err;
    const denied = err instanceof StorageError && err.kind === 'denied';
    // The SDK's own error carries the request: only its code, status and request id go on (withoutRequestDetails).
    const why = err instanceof StorageError ? err.message : (withoutRequestDetails(err) as Error).message;
    const published =
      `bucket ${a.bucket}: the compacted output ${a.outputKey} is published, but deleting its inputs ${denied ? 'was refused' : 'failed'} ` +
      `after ${deleted} of ${keys.length}; the rest stay (readers see their rows twice until the next run compacts them with the output): ${why}`;
    throw err instanceof StorageError ? new StorageError(published, err.kind) : new Error(published);
  }
  beat(a, { phase: 'sweep' });
  const orphansRemoved = await sweepOrphans(a, listed.keys());
  return {
    bucket: a.req.bucket,
    outputKey: a.outputKey,
    filesIn: a.req.inputs.length - kept.length,
    ...(kept.length ? { inputsRewritten: kept.length } : {}),
    orphansRemoved,
    ...figures,
    // An output found published is vouched for by its provenance: one of an earlier release has no types.
    ...(a.opts.tableTypes && provenance.tableTypes && sameNumberTypes(a.opts.tableTypes, provenance.tableTypes) ? { typedAsTable: true as const } : {}),
  };
}

/** Keys of `present` whose version differs from the one the output was built from (none known for outputs of earlier releases). */
function rewrittenSince(provenance: Provenance, present: readonly StoredObject[]): string[] {
  const versions = provenance.inputVersions;
  if (!versions) return [];
  const built = new Map(provenance.inputs.map((key, i) => [key, versions[i]!]));
  return present.filter((o) => built.has(o.key) && built.get(o.key) !== o.version).map((o) => o.key);
}

/**
 * Removes compaction leftovers in the bucket: temporary files of interrupted writers and incomplete
 * uploads. Only names this tool writes are touched; new ingest (any other name) is never deleted.
 * The one output name of this plan is the verified output itself, so it is never an orphan.
 */
async function sweepOrphans(a: Attempt, bucketKeys: Iterable<string>): Promise<number> {
  const orphans: string[] = [];
  for (const key of bucketKeys) {
    if (isTempArtifactName(key.slice(key.lastIndexOf('/') + 1))) orphans.push(key);
  }
  // The bucket is compacted by now. A transient error is retried (the next attempt finds it done and sweeps
  // again); a refusal (a policy without s3:ListBucketMultipartUploads, say) must not report every
  // compacted bucket as failed: the leftovers wait for the next compaction of the bucket.
  try {
    if (orphans.length) await a.store.deleteMany(orphans);
    const aborted = await a.store.abortIncompleteWrites(`${a.bucket}/`);
    return orphans.length + aborted;
  } catch (err) {
    if (!(err instanceof StorageError && err.kind === 'denied')) throw err;
    a.opts.warn?.(`bucket ${a.bucket}: compacted, but sweeping its leftovers was refused (they wait for the next compaction of the bucket): ${err.message}`);
    return 0;
  }
}

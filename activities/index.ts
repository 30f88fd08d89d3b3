/**
 * The activities of the compaction, bound to a worker's resources (scratch space, memory budget).
 * All I/O lives here; the workflows only orchestrate.
 */
import { Context, ApplicationFailure } from '@temporalio/activity';
import type { ActivityCancellationDetails } from '@temporalio/common';
import * as os from 'node:os';
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import type {
  BucketRequest,
  BucketResult,
  BucketTask,
  CatalogRequest,
  CatalogResult,
  CompactionSummary,
  PlanPageRequest,
  PlanRequest,
  PlanSummary,
} from '../workflows/contract';
import { bucketPrefix, FailureTypes, pipelineLockLocation } from '../workflows/contract';
import { firstLine } from './error-text';
import { keepAlive } from './heartbeats';
import { openWarehouseStore } from './storage/open-store';
import { StorageError, type WarehouseStore } from './storage/warehouse-store';
import { planBuckets } from './compaction/plan-buckets';
import { PlanNotFoundError, findResumablePlan, markPlanFinished, readPlanManifest, readPlanPage, removeSpentPlanPages, resumablePlanById } from './compaction/plan-store';
import { compactBucket } from './compaction/compact-bucket';
import { DuckSessionPool } from './compaction/duckdb-pool';
import { claimWorkerScratch, type WorkerScratch } from './compaction/worker-scratch';
import { BucketSlots } from './compaction/bucket-slots';
import { BadBucketDataError, BucketMemoryError, InputsChangedError, InvalidBucketRequestError, listSome, MissingPlannedInputError, OtherPlanOutputError } from './compaction/bucket-errors';
import { recordBucketFailure, recordBucketResult, recordMemoryFailure, recordWaitingForMemory } from './compaction/bucket-metrics';
import { withoutRequestDetails } from './storage/s3-errors';
import { checkedTableSchema, checkTable, holdsDataFile, rebuildCatalog, tableSchema, tableWithoutMetadata } from './catalog/rebuild-catalog';
import { recordCatalogRebuild } from './catalog/catalog-metrics';
import { defaultSchema } from './catalog/iceberg-schema';
import { tableNumberTypes, tableRenames, type TableNumberTypes, type TableRenames } from './compaction/table-types';
import { assertLocalCatalogCreatable, isAbsentLocalCatalog, openCatalogBackend } from './catalog/open-catalog';
import { CatalogConflictError, CatalogCorruptError, CatalogRequestError, WarehouseMismatchError, type IcebergCatalogBackend } from './catalog/catalog-backend';
import { createLockActivities, workflowStatus } from './locking/lock-activities';
import { acquirePipelineLock, EARLIER_RELEASES_LOCK_KEY, inspectPipelineLock, PipelineLockBusyError, releasePipelineLock } from './locking/pipeline-lock';

const MAX_REPORTED_UNREADABLE = 200;
const MAX_REPORTED_REFS = 50;
/** Statuses of a workflow that can no longer release a lock object it wrote. */
const CLOSED_WORKFLOW_STATUSES = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TERMINATED', 'TIMED_OUT']);

export interface ActivityResources {
  /**
   * Where downloads, temporary outputs and DuckDB spill files go: each worker claims its own
   * `worker-<id>/` below it and sweeps the ones dead workers left (see worker-scratch.ts).
   */
  scratchDir: string;
  /** Memory budget of one bucket activity (DuckDB memory_limit). */
  memoryBudgetMb: number;
  /** DuckDB threads per bucket activity. */
  duckdbThreads: number;
  /** DuckDB sessions kept open between bucket activities (default 4; 0 opens one per activity). */
  idleDuckdbSessions?: number;
  /**
   * Bucket activities this worker runs at once (the plugin derives it from the memory budget); a bucket
   * task beyond them waits, heartbeating, for one to finish. Default: no limit.
   */
  concurrentBuckets?: number;
}

/** One bucket activity's memory when nothing says otherwise. */
export const DEFAULT_BUCKET_BUDGET_MB = 1024;

export function defaultActivityResources(): ActivityResources {
  const fromEnv = (name: string, fallback: number) => {
    const raw = process.env[name];
    return raw === undefined ? fallback : positiveWholeNumber(name, /^\s*\d+\s*$/.test(raw) ? Number(raw) : Number.NaN, raw);
  };
  return {
    scratchDir: process.env.EARTHCATALOG_SCRATCH_DIR || path.join(os.tmpdir(), 'earthcatalog-compaction'),
    memoryBudgetMb: fromEnv('EARTHCATALOG_MEMORY_BUDGET_MB', DEFAULT_BUCKET_BUDGET_MB),
    duckdbThreads: fromEnv('EARTHCATALOG_DUCKDB_THREADS', Math.max(1, Math.min(4, os.cpus().length))),
  };
}

/**
 * A worker setting that must be a positive whole number; `source` names the variable or option. A
 * budget of NaN would leave DuckDB without a memory limit and the worker without a concurrency.
 */
export function positiveWholeNumber(source: string, value: number, raw: unknown = value): number {
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${source} must be a positive whole number, got ${typeof raw === 'string' ? JSON.stringify(raw) : String(raw)}`);
  return value;
}

/**
 * DuckDB's memory_limit does not bound the process: Parquet reader/writer buffers live outside it
 * (measured by `npm run bench`: +437 MB beyond a 512 MB limit). Half the activity's budget for
 * DuckDB keeps the activity's peak RSS within its budget plus the fixed process overhead.
 */
export function duckdbMemoryLimitMb(budgetMb: number): number {
  return Math.max(32, Math.floor(budgetMb / 2));
}

/** Why a pipeline lock object's owner cannot release it: only a workflow known to have closed; a missing one may be the Python pipeline's owner name. */
async function abandonedOwner(owner: string): Promise<string | undefined> {
  const status = await workflowStatus(owner);
  return status && CLOSED_WORKFLOW_STATUSES.has(status) ? status : undefined;
}

/**
 * Why a rebuild must not commit for `workflowId`: the run that asked for it was terminated (or otherwise
 * closed) while the rebuild read the footers. Its locks are freed within seconds of that, so its commit
 * would land outside the catalog lock, possibly after the next run's buckets deleted inputs this
 * snapshot lists. Undefined when the run is live, and also when the server cannot tell (an outage): the
 * commit is then made, as before this check, rather than a finished rebuild thrown away.
 */
async function endedRunRefusal(workflowId: string): Promise<string | undefined> {
  const status = await workflowStatus(workflowId).catch(() => 'RUNNING');
  return status === 'RUNNING' ? undefined : `the run ${workflowId} that asked for this rebuild is ${status ?? 'gone'}; its successor rebuilds the table`;
}

/**
 * How many earlier attempts of this bucket ran out of memory, from the details the last attempt
 * heartbeated. Every bucket heartbeat carries the count on (`withMemoryFailures`), so an attempt that
 * fails another way in between does not reset it.
 */
export function memoryFailuresBefore(details: unknown): number {
  const n = typeof details === 'object' && details !== null ? (details as { memoryFailures?: unknown }).memoryFailures : undefined;
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 0;
}

function withMemoryFailures<T extends object>(details: T, memoryFailures: number): T & { memoryFailures?: number } {
  return memoryFailures > 0 ? { ...details, memoryFailures } : details;
}

/** Commit UUIDs of earlier rebuild attempts carried in the heartbeat (each attempt adds one, or a few when the schema changes under it). */
const MAX_REMEMBERED_COMMITS = 100;

/**
 * The commit UUIDs earlier attempts of a rebuild heartbeated (none on a first attempt). Only well-formed
 * UUIDs: the cleanup deletes files whose names contain one, so an empty or short string must never pass.
 */
function commitUuidsOf(details: unknown): string[] {
  const commits = typeof details === 'object' && details !== null ? (details as { commits?: unknown }).commits : undefined;
  return Array.isArray(commits) ? commits.filter((c): c is string => typeof c === 'string' && UUID.test(c)) : [];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Attempts of an activity whose S3 calls found no credentials (noCredentialsError) before it gives up. */
export const CREDENTIAL_ATTEMPTS = 3;

/**
 * Why an attempt was cancelled, undefined for its run's own cancellation. What stops a rebuild attempt
 * before its commit is anything but that: an attempt the server gave up on (a heartbeat timeout) would
 * otherwise commit beside its retry.
 */
function stopCause(details: ActivityCancellationDetails | undefined): string | undefined {
  if (details?.workerShutdown) return "this worker's shutdown";
  if (details?.timedOut) return 'its heartbeat timeout (the server runs another attempt)';
  if (details?.paused) return 'a pause of the activity';
  if (details?.reset) return 'a reset of the activity';
  // The server answers so for every attempt it has dropped, whatever dropped it: not only its run's end.
  if (details?.notFound) return "the server no longer knowing the attempt (its run terminated, reset or timed out, or the attempt's own timeout passed)";
  return details?.cancelRequested ? undefined : 'a cancellation';
}

/** Turns permanent errors into non-retryable failures that name the object; everything else is retried. */
export function toActivityFailure(err: unknown): unknown {
  if (err instanceof ApplicationFailure) return err;
  // Expected while the pipeline runs: retried, and logged as one line per attempt rather than a stack.
  if (err instanceof PipelineLockBusyError) return ApplicationFailure.retryable(err.message, FailureTypes.pipelineLockHeld);
  if (err instanceof InputsChangedError) return ApplicationFailure.retryable(err.message, FailureTypes.inputsChanged);
  if (err instanceof BadBucketDataError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.badBucketData);
  if (err instanceof MissingPlannedInputError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.missingInput);
  if (err instanceof OtherPlanOutputError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.otherPlanOutput);
  if (err instanceof InvalidBucketRequestError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.invalidInput);
  if (err instanceof BucketMemoryError) {
    // One retry covers a transient peak; after that the same limit fails the same way. Counted, not read
    // off the attempt number: an earlier attempt may have failed for another reason (a worker killed, S3
    // down). The count rides on the last heartbeat, which the SDK sends with the failure.
    const ctx = Context.current();
    const memoryFailures = memoryFailuresBefore(ctx.info.heartbeatDetails) + 1;
    ctx.heartbeat({ phase: 'out-of-memory', memoryFailures });
    recordMemoryFailure(ctx.metricMeter);
    return ApplicationFailure.create({ message: err.message, type: FailureTypes.memoryBudget, nonRetryable: memoryFailures >= 2 });
  }
  if (err instanceof PlanNotFoundError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.planNotFound);
  if (err instanceof CatalogCorruptError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.catalogCorrupt);
  if (err instanceof CatalogRequestError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.invalidInput);
  if (err instanceof WarehouseMismatchError) return ApplicationFailure.nonRetryable(err.message, FailureTypes.warehouseMismatch);
  if (err instanceof CatalogConflictError) return ApplicationFailure.retryable(err.message, FailureTypes.catalogConflict);
  if (err instanceof StorageError) {
    if (err.kind === 'denied') return ApplicationFailure.nonRetryable(err.message, FailureTypes.storageDenied);
    if (err.kind === 'no-credentials') {
      // A hiccup of the instance metadata service passes in seconds; a worker without credentials does not.
      const last = Context.current().info.attempt >= CREDENTIAL_ATTEMPTS;
      return ApplicationFailure.create({ message: err.message, type: FailureTypes.noCredentials, nonRetryable: last });
    }
    if (err.kind === 'not-found') return ApplicationFailure.nonRetryable(err.message, FailureTypes.storageMissing);
    if (err.kind === 'invalid-key' || err.kind === 'corrupt') return ApplicationFailure.nonRetryable(err.message, FailureTypes.badBucketData);
  }
  return withoutRequestDetails(err);
}

async function withStore<T>(warehouse: string, fn: (store: WarehouseStore) => Promise<T>): Promise<T> {
  let store: WarehouseStore | undefined;
  try {
    store = await openWarehouseStore(warehouse);
    return await fn(store);
  } catch (err) {
    throw toActivityFailure(err);
  } finally {
    await store?.close();
  }
}

/** `lock` is absent in the requests of runs started by a release before it (their workflow code did not pass it). */
interface PipelineLockRequest {
  warehouse: string;
  owner: string;
  lock?: string;
}

/**
 * The store of the folder that holds the run's `--use-lock` object, and the object's key in it. A local
 * folder that does not exist fails, naming it, unless `whenFolderMissing` says what to do instead.
 */
async function withLockObject<T>(
  req: PipelineLockRequest,
  fn: (store: WarehouseStore, key: string) => Promise<T>,
  whenFolderMissing?: (problem: string) => T,
): Promise<T> {
  const where = req.lock ?? pipelineLockLocation(req);
  const slash = where.lastIndexOf('/');
  const folder = where.slice(0, slash) || '/';
  return withStore(folder, async (store) => {
    // A lock taken in a folder made for it (a share not mounted on this worker, a typo) is one no pipeline sees.
    if (folder.startsWith('/') && !(await fs.stat(folder).then((st) => st.isDirectory(), () => false))) {
      const problem = `the folder of the pipeline lock object ${where} does not exist on this worker (a share not mounted? a typo?)`;
      if (whenFolderMissing) return whenFolderMissing(problem);
      throw new StorageError(problem, 'not-found');
    }
    return fn(store, where.slice(slash + 1));
  });
}

/**
 * What a worker keeps on its own machine between activities: its claim on the scratch directory
 * (claiming also sweeps what dead workers left there) and its open DuckDB sessions, spilling below it.
 */
export class WorkerLocalResources {
  readonly ready: Promise<{ scratch: WorkerScratch; sessions: DuckSessionPool }>;
  readonly bucketSlots: BucketSlots | undefined;

  constructor(resources: ActivityResources) {
    this.bucketSlots = resources.concurrentBuckets === undefined ? undefined : new BucketSlots(resources.concurrentBuckets);
    this.ready = claimWorkerScratch(resources.scratchDir).then((scratch) => ({
      scratch,
      sessions: new DuckSessionPool(path.join(scratch.dir, 'duckdb'), resources.idleDuckdbSessions ?? 4),
    }));
    // A failed claim is reported by the first activity that needs it (and by the worker's start-up).
    this.ready.catch(() => undefined);
  }

  /** Closes the idle sessions and removes this worker's scratch directory (graceful shutdown). */
  async close(): Promise<void> {
    const local = await this.ready.catch(() => undefined);
    if (!local) return;
    await local.sessions.close();
    await local.scratch.release();
  }
}

/**
 * The number types and renamed columns of the table a plan is for, as its planning read them from the
 * catalog, and whether the table exists yet. `checkWarehouse`: a dry run, which has no pre-flight (checkCatalog), is refused as the run
 * would be when the table is of another warehouse, but writes nothing to find out (no write test).
 */
async function readTableColumns(
  req: CatalogRequest,
  warehouseRoot: string,
  local: WorkerLocalResources,
  checkWarehouse: boolean,
): Promise<{ types: TableNumberTypes; renames: TableRenames; absent: boolean }> {
  if (await isAbsentLocalCatalog(req.catalog)) return { types: tableNumberTypes(defaultSchema()), renames: {}, absent: true };
  return withCatalog(req, warehouseRoot, local, async (backend) => {
    const read = checkWarehouse ? await checkedTableSchema(backend, req, warehouseRoot) : await tableSchema(backend, req);
    return {
      types: tableNumberTypes(read?.schema ?? defaultSchema()),
      renames: read ? tableRenames(read.schema, read.nameMapping) : {},
      absent: read === undefined && !(await tableWithoutMetadata(backend, req)),
    };
  });
}

/** `fn` with the request's catalog open, closed after it. */
async function withCatalog<T>(req: CatalogRequest, warehouseRoot: string, local: WorkerLocalResources, fn: (backend: IcebergCatalogBackend) => Promise<T>): Promise<T> {
  const backend = await openCatalogBackend(req.catalog, warehouseRoot, req.catalogName, { scratchDir: await catalogScratch(local) });
  try {
    return await fn(backend);
  } finally {
    await backend.close();
  }
}

/**
 * The table types and renamed columns each plan recorded, read once per worker: every bucket of the plan
 * is written with them, and a plan's manifest never changes. A failed read is not remembered.
 */
class PlanTableColumns {
  private readonly plans = new Map<string, Promise<{ tableTypes?: TableNumberTypes; tableRenames?: TableRenames }>>();

  get(store: WarehouseStore, planId: string): Promise<{ tableTypes?: TableNumberTypes; tableRenames?: TableRenames }> {
    const key = `${store.root}\u0000${planId}`;
    let found = this.plans.get(key);
    if (!found) {
      found = readPlanManifest(store, planId).then((m) => ({
        ...(m?.tableTypes ? { tableTypes: m.tableTypes } : {}),
        ...(m?.tableRenames ? { tableRenames: m.tableRenames } : {}),
      }));
      found.catch(() => this.plans.delete(key));
      // A worker serves a few plans at a time; the oldest are forgotten.
      if (this.plans.size >= 64) this.plans.delete(this.plans.keys().next().value!);
      this.plans.set(key, found);
    }
    return found;
  }
}

/** Where a catalog.db kept in S3 is worked on: inside the worker's scratch claim, so that what a killed worker leaves is swept. */
async function catalogScratch(local: WorkerLocalResources): Promise<string> {
  return path.join((await local.ready).scratch.dir, 'catalog');
}

export function createActivities(resources: ActivityResources = defaultActivityResources(), local = new WorkerLocalResources(resources)) {
  const planTableColumns = new PlanTableColumns();
  return {
    ...createLockActivities(),

    async planCompaction(req: PlanRequest): Promise<PlanSummary> {
      // On a timer too: a throttled listing page, or writing the plan's pages, can take longer than the
      // heartbeat timeout without a new thousand objects, and a second attempt would list all over again.
      let listed = 0;
      return withStore(req.warehouse, (store) =>
        keepAlive(
          () => ({ listed }),
          async () => {
            const table = req.catalog ? await readTableColumns(req.catalog, store.root, local, req.dryRun) : undefined;
            const summary = await planBuckets(
              store,
              req,
              (n) => {
                listed = n;
                const ctx = Context.current();
                ctx.heartbeat({ listed });
                ctx.cancellationSignal.throwIfAborted();
              },
              table?.types,
              table?.renames,
            );
            // The run's rebuild lists the whole warehouse and refuses to empty a table that registers files: a dry
            // run whose listing (maybe of a selection) found no bucket asks the same of the whole warehouse.
            if (req.dryRun && req.catalog && table && !table.absent && summary.filesBefore === 0 && !(await holdsDataFile(store, Context.current().cancellationSignal))) {
              const catalogReq = req.catalog;
              await withCatalog(catalogReq, store.root, local, (backend) => checkedTableSchema(backend, catalogReq, store.root, { warehouseEmpty: true }));
            }
            return table?.absent ? { ...summary, tableAbsent: true } : summary;
          },
        ),
      );
    },

    async loadPlan(req: { warehouse: string; planId: string }): Promise<PlanSummary> {
      return withStore(req.warehouse, async (store) => {
        if (req.planId === 'latest') {
          return (await findResumablePlan(store)).summary;
        }
        return (await resumablePlanById(store, req.planId)).summary;
      });
    },

    async loadPlanPage(req: PlanPageRequest): Promise<BucketTask[]> {
      return withStore(req.warehouse, (store) => readPlanPage(store, req.planId, req.page));
    },

    async compactBucket(req: BucketRequest): Promise<BucketResult> {
      const ctx = Context.current();
      const memoryFailures = memoryFailuresBefore(ctx.info.heartbeatDetails);
      let last: { phase: string } = withMemoryFailures({ phase: 'waiting-for-memory', filesIn: req.inputs.length }, memoryFailures);
      const slots = local.bucketSlots;
      let release: (() => void) | undefined;
      if (slots) {
        // acquire() queues this task before it yields, so the gauge counts it while it waits.
        const acquiring = slots.acquire(ctx.cancellationSignal);
        recordWaitingForMemory(ctx.metricMeter, slots.queued);
        release = await keepAlive(() => last, () => acquiring).finally(() => recordWaitingForMemory(ctx.metricMeter, slots.queued));
      }
      try {
        last = withMemoryFailures({ phase: 'starting', filesIn: req.inputs.length }, memoryFailures);
        const { scratch, sessions } = await local.ready;
        // Unique, not just plan-activity-attempt: activity ids restart in every run, so a terminated run's
        // orphaned attempt and its resume's could share a directory on this worker and remove each other's files.
        const scratchDir = path.join(scratch.dir, `${req.planId}-${ctx.info.activityId}-${ctx.info.attempt}-${randomUUID().slice(0, 8)}`);
        await fs.mkdir(scratchDir, { recursive: true });
        try {
          const result = await withStore(req.warehouse, (store) =>
            keepAlive(
              () => last,
              async () =>
                compactBucket(store, req, {
                  scratchDir,
                  ...(await planTableColumns.get(store, req.planId)),
                  memoryLimitMb: duckdbMemoryLimitMb(resources.memoryBudgetMb),
                  threads: resources.duckdbThreads,
                  sessions,
                  warn: (message) => ctx.log.warn(message),
                  heartbeat: (p) => {
                    last = withMemoryFailures(p, memoryFailures);
                    ctx.heartbeat(last);
                  },
                  // A cancelled attempt (its workflow closed or timed it out) stops at once, also mid-statement or
                  // mid-download, unless its deletes have begun: then it finishes, is counted as compacted, and
                  // the cancelled run's rebuild does not list the inputs just deleted.
                  signal: ctx.cancellationSignal,
                }),
            ),
          );
          recordBucketResult(ctx.metricMeter, result);
          return result;
        } catch (err) {
          // A cancelled attempt (its run stopped) did not fail.
          if (!ctx.cancellationSignal.aborted) {
            const failure = err instanceof ApplicationFailure ? err : undefined;
            recordBucketFailure(ctx.metricMeter, failure?.type ?? 'unclassified', !failure?.nonRetryable);
          } else if (ctx.cancellationDetails?.workerShutdown) {
            // Otherwise the worker's log says only that it drained: an operator sizing the grace needs to see what it cut short.
            ctx.log.warn(
              `bucket ${bucketPrefix(req.bucket)} stopped by this worker's shutdown in phase ${last.phase} ` +
                `before it finished (a longer --shutdown-grace lets a bucket finish); another worker retries it from the step it reached`,
            );
          } else {
            // The SDK logs a cancelled attempt at DEBUG only: one of a terminated run, looked for beside duplicates, left no trace.
            ctx.log.info(`bucket ${bucketPrefix(req.bucket)} stopped in phase ${last.phase} by ${stopCause(ctx.cancellationDetails) ?? "its run's cancellation"}`);
          }
          throw err;
        } finally {
          await fs.rm(scratchDir, { recursive: true, force: true });
        }
      } finally {
        release?.();
      }
    },

    async rebuildCatalog(req: CatalogRequest): Promise<CatalogResult> {
      const ctx = Context.current();
      // The commits earlier attempts began: what a killed one wrote goes after this attempt's commit.
      const abandonedCommits = commitUuidsOf(ctx.info.heartbeatDetails);
      const commits = [...abandonedCommits];
      let done = 0;
      let total = 0;
      const details = () => ({ done, total, commits: commits.slice(-MAX_REMEMBERED_COMMITS) });
      // One step kept alive from the catalog's open (a catalog.db kept in S3 is downloaded there, retried
      // through throttling) to the commit.
      // Every cancellation stops it before its next footer read except its run's own: a run cancelled
      // mid-rebuild lets it commit (the run's rebuild before it ends, a new activity, would not know the
      // commits of this one to clean up after). The signal fires once, so a shutdown after such a
      // cancellation is seen at the next footer.
      const stop = new AbortController();
      let stoppedBy: string | undefined;
      const stopIfDue = () => {
        if (stop.signal.aborted || !ctx.cancellationSignal.aborted) return;
        stoppedBy = stopCause(ctx.cancellationDetails);
        if (stoppedBy) stop.abort(ctx.cancellationSignal.reason);
      };
      ctx.cancellationSignal.addEventListener('abort', stopIfDue);
      return withStore(req.warehouse, (store) =>
        keepAlive(details, async (beatNow) => {
          const backend = await openCatalogBackend(req.catalog, store.root, req.catalogName, { scratchDir: await catalogScratch(local) });
          try {
            const result = await rebuildCatalog(store, backend, req, {
              onProgress: (d, t) => {
                done = d;
                total = t;
                stopIfDue();
              },
              // Sent before any file of the commit is written, so that the retry of a worker killed after writing names them.
              onCommitUuid: async (uuid) => {
                commits.push(uuid);
                await beatNow();
              },
              abandonedCommits,
              commitRefusal: async () => {
                const workflowId = ctx.info.workflowExecution?.workflowId;
                return workflowId === undefined ? undefined : endedRunRefusal(workflowId);
              },
              signal: stop.signal,
            }).catch((err: unknown) => {
              if (stoppedBy) {
                // Otherwise a worker's log says only that it drained, as for a bucket.
                const shutdown = ctx.cancellationDetails?.workerShutdown ? ' (a longer --shutdown-grace lets it finish)' : '';
                ctx.log.warn(
                  `catalog rebuild of ${req.namespace}.${req.table} stopped by ${stoppedBy} after ${done} of ${total} file(s) read, ` +
                    `before its commit${shutdown}; another attempt rebuilds it from the start`,
                );
              }
              throw err;
            });
            recordCatalogRebuild(Context.current().metricMeter, result);
            if (result.metadataCleanupError) Context.current().log.warn(`${req.namespace}.${req.table}: ${result.metadataCleanupError}`);
            if (result.droppedRefs) {
              Context.current().log.warn(
                `${req.namespace}.${req.table}: the rebuilt table has one snapshot and only main; tags and branches ${listSome(result.droppedRefs, MAX_REPORTED_REFS)} ` +
                  `were dropped (commits only on a branch are not in the table); they stay in the metadata files before ${result.metadataLocation} only while those are kept ` +
                  '(write.metadata.delete-after-commit.enabled removes those the metadata log no longer lists), and a scan of their snapshots fails once compaction has deleted a data file they list',
              );
            }
            if (result.partitionMismatches) {
              Context.current().log.warn(
                `${req.namespace}.${req.table}: ${result.partitionMismatches.length} data file(s) hold rows outside the partition of their path, ` +
                  `which engines pruning on grid_partition or year(datetime) skip: ${listSome(result.partitionMismatches.map((m) => `${m.key} (${m.reason})`), 5)}; ` +
                  `\`verify\` names them; their rows belong in another bucket`,
              );
            }
            if (result.schemaEvolved) {
              const { schemaId, added, widened } = result.schemaEvolved;
              Context.current().log.info(
                `${req.namespace}.${req.table}: the files needed schema ${schemaId}` +
                  `${added.length ? `; columns added: ${listSome(added, 10)}` : ''}${widened.length ? `; types widened: ${listSome(widened, 10)}` : ''}`,
              );
            }
            if (result.schemaMismatches) {
              Context.current().log.warn(
                `${req.namespace}.${req.table}: ${result.schemaMismatches.length} registered data file(s) have a column readers cannot read as the table's, ` +
                  `so scans that touch them fail: ${listSome(result.schemaMismatches.map((m) => `${m.key} (${m.reason})`), 5)}; \`verify\` names them`,
              );
            }
            if (result.droppedRegistrations) {
              Context.current().log.warn(
                `${req.namespace}.${req.table}: the replaced table registered ${result.droppedRegistrationsTotal ?? result.droppedRegistrations.length} file(s) that are no data files of the warehouse's layout ` +
                  `and the rebuilt table no longer lists: ${listSome(result.droppedRegistrations.map((m) => `${m.key} (${m.reason})`), 5)}; move them into a bucket folder or register them elsewhere`,
              );
            }
            if (result.bucketsGone) {
              Context.current().log.warn(
                `${req.namespace}.${req.table}: ${result.bucketsGone.length} bucket(s) the replaced table listed are no longer in the warehouse, ` +
                  `so their ${result.rowsGone ?? 0} row(s) left the table: ${listSome(result.bucketsGone, 5)}`,
              );
            }
            if (result.registeredAgain) {
              Context.current().log.warn(
                `${req.namespace}.${req.table}: ${result.registeredAgain.length} data file(s) the last rebuild registered were taken out of the table by another writer ` +
                  `since (a delete through the table?) and are registered again, as the warehouse still holds them: ${listSome(result.registeredAgain, 5)}`,
              );
            }
            if (result.deleteFilesDropped) {
              Context.current().log.warn(
                `${req.namespace}.${req.table}: the replaced table had ${result.deleteFilesDropped} delete file(s) (row-level deletes of another engine); ` +
                  `the rebuilt table registers the data files only, so the rows they deleted are visible again`,
              );
            }
            // Thousands of bad files (or of tags) must not push the result past the payload limit.
            return {
              ...result,
              unreadable: result.unreadable.slice(0, MAX_REPORTED_UNREADABLE),
              unreadableTotal: result.unreadable.length,
              ...(result.droppedRefs ? { droppedRefs: result.droppedRefs.slice(0, MAX_REPORTED_REFS), droppedRefsTotal: result.droppedRefs.length } : {}),
              ...(result.partitionMismatches
                ? { partitionMismatches: result.partitionMismatches.slice(0, MAX_REPORTED_UNREADABLE), partitionMismatchesTotal: result.partitionMismatches.length }
                : {}),
              ...(result.schemaMismatches
                ? { schemaMismatches: result.schemaMismatches.slice(0, MAX_REPORTED_UNREADABLE), schemaMismatchesTotal: result.schemaMismatches.length }
                : {}),
              ...(result.droppedRegistrations
                ? {
                    droppedRegistrations: result.droppedRegistrations.slice(0, MAX_REPORTED_UNREADABLE),
                    droppedRegistrationsTotal: result.droppedRegistrationsTotal ?? result.droppedRegistrations.length,
                  }
                : {}),
              ...(result.bucketsGone ? { bucketsGone: result.bucketsGone.slice(0, MAX_REPORTED_UNREADABLE) } : {}),
              ...(result.registeredAgain ? { registeredAgain: result.registeredAgain.slice(0, MAX_REPORTED_UNREADABLE) } : {}),
              ...(result.schemaEvolved
                ? {
                    schemaEvolved: {
                      ...result.schemaEvolved,
                      added: result.schemaEvolved.added.slice(0, MAX_REPORTED_REFS),
                      widened: result.schemaEvolved.widened.slice(0, MAX_REPORTED_REFS),
                    },
                  }
                : {}),
            };
          } finally {
            await backend.close();
          }
        }),
      );
    },

    /**
     * Where a local warehouse really is, for the lock of its real path: a run naming it through a
     * symbolic link then waits for a run naming it directly. An S3 URI, and a path that does not exist
     * (planning fails on it), are their own; any other error (EIO, ESTALE, a volume this worker lacks
     * but another has) is retried, so two runs never lock one warehouse under different names.
     */
    async warehouseLockKey(req: { warehouse: string }): Promise<string> {
      if (!req.warehouse.startsWith('/')) return req.warehouse;
      return fs.realpath(req.warehouse).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'ELOOP') return req.warehouse;
        throw new Error(`cannot resolve the warehouse ${req.warehouse} on this worker: ${err.message}`);
      });
    },

    /** Pre-flight: fails the run before any bucket is touched when the catalog cannot be read. */
    async checkCatalog(req: CatalogRequest): Promise<{ tableExists: boolean }> {
      if (await isAbsentLocalCatalog(req.catalog)) {
        await assertLocalCatalogCreatable(req.catalog).catch((err: unknown) => {
          throw toActivityFailure(err);
        });
        return { tableExists: false };
      }
      return withStore(req.warehouse, (store) =>
        withCatalog(req, store.root, local, async (backend) => {
          await backend.assertWritable?.(req.namespace, req.table);
          return checkTable(backend, req, store.root);
        }),
      );
    },

    async finishPlan(req: { warehouse: string; planId: string; summary: CompactionSummary }): Promise<void> {
      return withStore(req.warehouse, async (store) => {
        await markPlanFinished(store, req.planId, req.summary);
        // Housekeeping: a run whose compaction succeeded does not fail over it (a policy without DeleteObject
        // on the control prefix, say); the next finished run tries again.
        await removeSpentPlanPages(store, req.planId).catch((err: unknown) =>
          Context.current().log.warn(`plan pages of finished or superseded plans left in ${store.root}: ${(err as Error).message}`),
        );
      });
    },

    /** Returns whose object it took over (a note for the run's summary), if it did. */
    async acquirePipelineLock(req: PipelineLockRequest): Promise<string | undefined> {
      const note = await withLockObject(req, (store, key) => acquirePipelineLock(store, req.owner, abandonedOwner, key));
      if (note) Context.current().log.warn(note);
      return note;
    },

    /** A dry run's look at the `--use-lock` object: what a run would find there (nothing is written). */
    async inspectPipelineLock(req: PipelineLockRequest): Promise<string | undefined> {
      const running = async (owner: string) => (await workflowStatus(owner).catch(() => undefined)) === 'RUNNING';
      // A dry run reports what it could not read rather than fail after its plan: a role without s3:ListBucket
      // is answered 403 for an absent object, where the run's conditional write may still succeed.
      return withLockObject(
        req,
        (store, key) => inspectPipelineLock(store, req.owner, abandonedOwner, key, running),
        (problem) => `${problem}: a run would fail`,
      ).catch((err: unknown) => `the pipeline lock object ${req.lock ?? pipelineLockLocation(req)} could not be read (${firstLine(err)}): a run takes it by a conditional write, which may still succeed`);
    },

    async releasePipelineLock(req: PipelineLockRequest): Promise<void> {
      // The acquire failed on the same missing folder (it names it), or the share went away since: no object of
      // this run is reachable here, which retrying would not change.
      await withLockObject(
        req,
        (store, key) => releasePipelineLock(store, req.owner, key),
        (problem) => Context.current().log.warn(`nothing to release: ${problem}`),
      );
      // Best effort: the object of an earlier release blocks only runs of that release, and expires.
      await withStore(req.warehouse, (store) => releasePipelineLock(store, req.owner, EARLIER_RELEASES_LOCK_KEY)).catch((err: unknown) =>
        Context.current().log.warn(`could not release ${req.owner}'s lock object of an earlier release (${EARLIER_RELEASES_LOCK_KEY}): ${(err as Error).message}`),
      );
    },
  };
}

export type CompactionActivities = ReturnType<typeof createActivities>;

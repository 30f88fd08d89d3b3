/**
 * compactWarehouse: plan the buckets, compact each bucket in its own activity, rebuild the Iceberg
 * catalog in one snapshot — under a workflow-level lock per warehouse and per catalog.
 *
 * Scale: the plan lives in the warehouse (pages of PLAN_PAGE_SIZE buckets), not in history. This
 * workflow walks the pages with bounded parallelism and continues-as-new between pages when its
 * history grows, carrying only counters and a capped failure list.
 */
import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  ContinueAsNew,
  condition,
  continueAsNew,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  workflowInfo,
  allHandlersFinished,
  isCancellation,
  patched,
  TimeoutFailure,
  uuid4,
  log,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { CompactionActivities } from '../activities';
import {
  FailureTypes,
  HEARTBEAT_TIMEOUT_MS,
  bucketPrefix,
  bucketTaskQueue,
  capFailureReason,
  compactionWorkflowIdProblem,
  inputAsStarted,
  invalidInputError,
  newerInputProblems,
  parseCompactionInput,
  pipelineLockLocation,
  type BucketFailure,
  type BucketResult,
  type BucketTask,
  type CatalogResult,
  type CompactionRequest,
  type CompactionSummary,
  type PlanSummary,
} from './contract';
import { confirmLockHeld, currentLockStates, withHeldLock, withResourceLock, type HeldLock } from './lock';
import { initialProgress, progressQuery, type CompactionProgress } from './progress';

/** At most this many failures are carried in history and returned; the total is always exact. */
export const MAX_REPORTED_FAILURES = 200;
/** patched() id of the catalog rebuild of a cancelled run. */
const REBUILD_ON_CANCEL = 'rebuild-catalog-on-cancel';
/** patched() id of the catalog rebuild of a run that fails between buckets (a plan page unreadable, say). */
const REBUILD_ON_FAILURE = 'rebuild-catalog-on-failure';
/** patched() id of the rebuild of a run cancelled while its own final rebuild waited for the catalog lock. */
const REBUILD_ON_CANCELLED_REBUILD = 'rebuild-catalog-on-cancel-in-final-rebuild';
/** patched() id of the rebuild of a run cancelled while its last buckets ended (completed, not cancelled). */
const REBUILD_ON_CANCEL_AFTER_BUCKETS = 'rebuild-catalog-on-cancel-after-last-buckets';
/** patched() id of the renewal of the `--use-lock` object after every plan page. */
const RENEW_PIPELINE_LOCK = 'renew-pipeline-lock-per-page';
/** patched() id of the check, before each page and before the rebuild, that the run still holds the warehouse lock. */
const CONFIRM_WAREHOUSE_LOCK = 'confirm-warehouse-lock-per-page';
/** patched() id of a run that keeps its outcome when releasing the `--use-lock` object fails. */
const KEEP_OUTCOME_WHEN_RELEASE_FAILS = 'keep-outcome-when-pipeline-lock-release-fails';
/** patched() id of the bucket window that slides across plan pages (the next page loads while the last buckets of one run). */
const WINDOW_ACROSS_PAGES = 'bucket-window-across-pages';
/** patched() id of the second warehouse lock, of the warehouse's real path (warehouseLockKey), taken when it differs. */
const REAL_PATH_WAREHOUSE_LOCK = 'warehouse-lock-of-real-path-too';
/** patched() id of the refusal of a carried state passed to a run that was not continued-as-new. */
const CARRIED_ONLY_WHEN_CONTINUED = 'carried-state-only-when-continued';
/** patched() id of the bucket activities scheduled on the bucket task queue (bucketTaskQueue) instead of the run's own. */
const BUCKET_TASK_QUEUE = 'buckets-on-their-own-task-queue';
/** patched() id of the check, before a bucket starts, that the run still holds the warehouse lock when it last confirmed so long ago. */
const CONFIRM_LOCK_BETWEEN_BUCKETS = 'confirm-warehouse-lock-between-buckets';
/** patched() id of a run cancelled while an attempt to take the `--use-lock` object runs: it ends Cancelled, not Failed. */
const CANCELLED_WHILE_TAKING_PIPELINE_LOCK = 'cancelled-while-taking-pipeline-lock';
/** patched() id of a bucket attempt that timed out after the run was cancelled: stopped by the cancellation, not failed. */
const BUCKET_TIMED_OUT_AFTER_CANCEL = 'bucket-timed-out-after-cancel-is-cancelled';
/**
 * A bucket starts at most this long (workflow time) after the run last confirmed it holds the warehouse
 * lock. A run reset to a point within a page (`temporal workflow reset`) resumes that long or more after
 * its last confirmation, so its next bucket asks first instead of writing beside the lock's new holder.
 */
const LOCK_CONFIRMED_FOR_MS = 10_000;
/** patched() id of the refusal of a workflow id of a lock's form (compactionWorkflowIdProblem). */
const NO_LOCK_WORKFLOW_ID = 'no-compaction-under-a-lock-workflow-id';
/** patched() id of the refusal of a first run's input by the schema (rules the schema gained after runs were started). */
const SCHEMA_REFUSAL = 'input-refused-by-schema';
/** patched() id of the checks, once the warehouse lock is granted and before the plan is made, that the run still holds it. */
const CONFIRM_LOCK_BEFORE_PLANNING = 'confirm-warehouse-lock-before-planning';
/** patched() id of the check, once the catalog lock is granted, that the run still holds it and the warehouse lock. */
const CONFIRM_LOCKS_BEFORE_REBUILD = 'confirm-locks-once-catalog-lock-granted';
/** patched() id of a dry run's look at the `--use-lock` object (it takes nothing; a real run would wait for a held one). */
const DRY_RUN_INSPECTS_PIPELINE_LOCK = 'dry-run-inspects-pipeline-lock';
/** Continue-as-new well before the server's 51,200-event limit (it suggests 4,096 events). */
const HISTORY_EVENTS_BEFORE_CONTINUE = 3_000;

/** What one run hands to the next across continue-as-new. Small and bounded. */
export interface CarriedState {
  plan: PlanSummary;
  nextPage: number;
  progress: CompactionProgress;
  warehouseLock: HeldLock;
  /** The lock of the warehouse's real path, when the input names it through a symbolic link. */
  realPathLock?: HeldLock;
}

const NON_RETRYABLE_BUCKET_ERRORS: string[] = [
  FailureTypes.badBucketData,
  FailureTypes.missingInput,
  FailureTypes.otherPlanOutput,
  FailureTypes.storageDenied,
  FailureTypes.storageMissing,
  FailureTypes.invalidInput,
];

/**
 * Every activity is awaited to its end when the run is cancelled (the SDK's effective default is
 * TRY_CANCEL, which reports the cancellation at once): the locks are released after that, so no
 * bucket, plan or lock activity of a cancelled run still writes while another run holds the warehouse.
 */
const cancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED;

const controlOptions: ActivityOptions = {
  cancellationType,
  startToCloseTimeout: '30 minutes',
  // These activities send no heartbeat of their own (each is a few storage or catalog calls, retried by the S3
  // client through throttling): the timeout bounds one attempt's silence.
  heartbeatTimeout: '2 minutes',
  retry: {
    initialInterval: '2 seconds',
    maximumInterval: '1 minute',
    maximumAttempts: 10,
    nonRetryableErrorTypes: [...NON_RETRYABLE_BUCKET_ERRORS, FailureTypes.planNotFound, FailureTypes.catalogCorrupt, FailureTypes.lockTimeout],
  },
};
const control = proxyActivities<CompactionActivities>(controlOptions);

/**
 * Planning heartbeats every 10 s from a timer, through listing pages and footer reads, and no synchronous
 * step of it or of the rebuild blocked the event loop for 2 s at 10,000 buckets (bench/MEASUREMENTS.md,
 * session 46): a worker killed mid-plan costs 30 s, as a bucket's does, not 2 minutes.
 */
const planning = proxyActivities<CompactionActivities>({ ...controlOptions, heartbeatTimeout: HEARTBEAT_TIMEOUT_MS });

const bucketOptions: ActivityOptions = {
  cancellationType,
  startToCloseTimeout: '6 hours',
  // The activity heartbeats every 10 s even inside a long DuckDB statement: a dead worker is noticed in 30 s.
  heartbeatTimeout: HEARTBEAT_TIMEOUT_MS,
  retry: {
    initialInterval: '5 seconds',
    backoffCoefficient: 2,
    maximumInterval: '2 minutes',
    maximumAttempts: 8,
    nonRetryableErrorTypes: NON_RETRYABLE_BUCKET_ERRORS,
  },
};
const buckets = proxyActivities<CompactionActivities>(bucketOptions);

const catalogOptions: ActivityOptions = {
  cancellationType,
  startToCloseTimeout: '2 hours',
  // Heartbeats every 10 s from a timer, as planning does (see there).
  heartbeatTimeout: HEARTBEAT_TIMEOUT_MS,
  retry: {
    initialInterval: '5 seconds',
    maximumInterval: '1 minute',
    maximumAttempts: 10,
    nonRetryableErrorTypes: [FailureTypes.catalogCorrupt, FailureTypes.storageDenied, FailureTypes.storageMissing],
  },
};
const catalog = proxyActivities<CompactionActivities>(catalogOptions);

export async function compactWarehouse(rawInput: unknown, carried?: CarriedState): Promise<CompactionSummary> {
  // The carried state adopts a lock and skips validation: only this workflow's own continue-as-new may
  // pass it. A copy of a continued run's arguments started anew would write beside the lock's holder.
  if (carried && !workflowInfo().continuedFromExecutionRunId && patched(CARRIED_ONLY_WHEN_CONTINUED)) {
    throw ApplicationFailure.nonRetryable(
      'compactWarehouse takes one input object; a second argument (the state a run hands to its continuation) is accepted only across continue-as-new. ' +
        'To finish an interrupted run, start it with resumePlanId',
      FailureTypes.invalidInput,
    );
  }
  // (Runs recorded before this replay without the check; none ran under such an id and ended.)
  const idProblem = compactionWorkflowIdProblem(workflowInfo().workflowId);
  if (idProblem && patched(NO_LOCK_WORKFLOW_ID)) throw ApplicationFailure.nonRetryable(idProblem, FailureTypes.invalidInput);
  let input: CompactionRequest;
  let refusal: string | undefined;
  try {
    input = parseCompactionInput(rawInput, { newerRules: false });
  } catch (err) {
    refusal = (err as Error).message;
    // A run continued-as-new carries the input its first run validated and completed with defaults. A
    // deploy that tightened the rules since must not fail it halfway, holding the pipeline's lock object
    // and leaving the table listing deleted inputs: it goes on with the input it was started with.
    input = carried ? (rawInput as CompactionRequest) : inputAsStarted(rawInput);
  }
  if (refusal === undefined && !carried) {
    const due = newerInputProblems(input).filter((p) => patched(p.patch));
    if (due.length) throw ApplicationFailure.nonRetryable(invalidInputError(due.map((p) => p.problem)).message, FailureTypes.invalidInput);
  }
  if (refusal !== undefined) {
    // A first run refused by the schema is refused behind a marker: a run that replays from before a rule
    // the schema gained since (its history has no marker) goes on with its input, as the version that
    // started it did, instead of failing its replay as nondeterministic. Rules added from now on belong
    // in newerInputProblems, each behind its own patch.
    if (!carried && patched(SCHEMA_REFUSAL)) throw ApplicationFailure.nonRetryable(refusal, FailureTypes.invalidInput);
    log.warn(`the ${carried ? 'carried ' : ''}input no longer passes this version's validation; the run goes on with it`, { error: refusal });
  }

  const progress: CompactionProgress = carried?.progress ?? initialProgress();
  setHandler(progressQuery, () => ({ ...progress, locks: currentLockStates() }));
  try {
    return await lockedRun(input, progress, carried);
  } catch (err) {
    // The SDK logs a failed run, not a cancelled one: without this line a cancelled run's log ended at its plan.
    if (isCancellation(err)) {
      const rebuilt = progress.phase === 'rebuilt-before-ending' ? '; the table was rebuilt from the files as they are' : '';
      log.info(`compaction of ${input.warehouse} cancelled: ${progress.bucketsDone} of ${progress.bucketsTotal} buckets done${rebuilt}`, { planId: progress.planId ?? 'none' });
    }
    throw err;
  }
}

/** The run from its lock on: adopted across continue-as-new, none for a dry run, else taken and held to the end. */
async function lockedRun(input: CompactionRequest, progress: CompactionProgress, carried: CarriedState | undefined): Promise<CompactionSummary> {
  if (carried) {
    // The lock is held by workflow id, which continue-as-new keeps; this run adopts it and resumes the walk.
    const run = () => withPipelineLock(input, null, () => runPlan(input, progress, carried));
    return withHeldLock(carried.warehouseLock, () => (carried.realPathLock ? withHeldLock(carried.realPathLock, run) : run()));
  }

  if (input.dryRun) {
    // A dry run only lists: it takes no lock, so it never waits behind a running compaction.
    progress.phase = 'planning';
    const plan = await planning.planCompaction(planRequest(input));
    const pipelineLock = input.useLock && patched(DRY_RUN_INSPECTS_PIPELINE_LOCK) ? await control.inspectPipelineLock(pipelineLockOwner(input)) : undefined;
    const summary = await runPlan(input, progress, { plan, nextPage: 0, progress, warehouseLock: { lockId: '', requestId: '', fence: 0 } });
    return pipelineLock ? { ...summary, pipelineLock } : summary;
  }

  progress.phase = 'waiting-for-lock';
  publishDetails(input, progress);
  // A path through a symbolic link takes the lock of the path as given (what other writers and earlier
  // runs take) and then the lock of the real path, which a run naming the warehouse another way takes too.
  // Locks of a path as given are only ever taken first, so two runs never wait for each other in a cycle.
  const realPath = patched(REAL_PATH_WAREHOUSE_LOCK) ? await control.warehouseLockKey({ warehouse: input.warehouse }) : input.warehouse;
  const lockOptions = { purpose: `compaction of ${input.warehouse}`, timeoutSeconds: input.lockTimeoutSeconds };
  return withResourceLock('warehouse', input.warehouse, lockOptions, async (warehouseLock) => {
    const locked = async (realPathLock?: HeldLock) => {
      // A run reset into its wait for the lock, or past the grant, replays the grant: it asks the lock
      // workflow before it takes the pipeline's lock object and again before it writes a plan (a reset to a
      // point after the first ask), so that it writes nothing beside the holder. A plan written there made
      // the holder's own resume refuse its plan as older. (Runs recorded before this replay without them.)
      const confirmBeforeWriting = patched(CONFIRM_LOCK_BEFORE_PLANNING);
      if (confirmBeforeWriting) await confirmLockHeld(warehouseLock);
      progress.phase = 'planning';
      publishDetails(input, progress);
      return withPipelineLock(input, progress, async () => {
        await control.checkCatalog(catalogRequest(input));
        if (confirmBeforeWriting) await confirmLockHeld(warehouseLock);
        const plan = input.resumePlanId
          ? await control.loadPlan({ warehouse: input.warehouse, planId: input.resumePlanId })
          : await planning.planCompaction(planRequest(input));
        return runPlan(input, progress, { plan, nextPage: 0, progress, warehouseLock, ...(realPathLock ? { realPathLock } : {}) });
      });
    };
    return realPath === input.warehouse ? locked() : withResourceLock('warehouse', realPath, lockOptions, locked);
  });
}

function catalogRequest(input: CompactionRequest) {
  return {
    warehouse: input.warehouse,
    catalog: input.catalog,
    namespace: input.namespace,
    table: input.table,
    catalogName: input.catalogName,
  };
}

function planRequest(input: CompactionRequest) {
  return {
    warehouse: input.warehouse,
    planId: newPlanId(),
    threshold: input.threshold,
    dryRun: input.dryRun,
    cells: input.cells,
    years: input.years,
    catalog: catalogRequest(input),
  };
}

/**
 * `--use-lock`: the Python pipeline's lock object is taken (by the first run, whose `progress` says it
 * waits for it; a continued run, passing null, holds it already) and released when the run ends, however
 * it ends (not on continue-as-new). A cancelled run releases it too: the object would otherwise block the
 * Python pipeline until it expires (24 h).
 */
async function withPipelineLock<T>(input: CompactionRequest, acquiring: CompactionProgress | null, fn: () => Promise<T>): Promise<T> {
  if (!input.useLock) return fn();
  const owner = pipelineLockOwner(input);
  // Releasing is idempotent and checks the owner, so it is safe after a cancelled acquire too. When it
  // fails (a role without DeleteObject, say), the run keeps its own outcome: the object left behind
  // expires, and the next run takes over one whose owner has closed. (Runs recorded before this failed.)
  const release = () =>
    CancellationScope.nonCancellable(() => control.releasePipelineLock(owner)).catch((err: unknown) => {
      if (!patched(KEEP_OUTCOME_WHEN_RELEASE_FAILS)) throw err;
      log.warn('could not release the pipeline lock object; it expires, or the next run takes it over', { error: String(err) });
    });
  let result: T;
  try {
    if (acquiring) {
      const phase = acquiring.phase;
      acquiring.phase = 'waiting-for-pipeline-lock';
      publishDetails(input, acquiring);
      try {
        await takePipelineLock(input, acquiring);
      } catch (err) {
        // A cancel that lands while an attempt runs is not retried after it: the server ends the activity
        // with that attempt's failure (the object is held), which is no reason for the run to fail.
        if (!isCancellation(err) && CancellationScope.current().consideredCancelled && patched(CANCELLED_WHILE_TAKING_PIPELINE_LOCK)) {
          throw new CancelledFailure('cancelled while waiting for the pipeline lock object');
        }
        throw err;
      }
      acquiring.phase = phase;
      publishDetails(input, acquiring);
    }
    result = await fn();
  } catch (err) {
    if (!(err instanceof ContinueAsNew)) await release();
    throw err;
  }
  await release();
  return result;
}

/** The run's `--use-lock` object, owned by the workflow id (which continue-as-new keeps). */
/**
 * Takes, or renews, the run's `--use-lock` object. Whose stale (or abandoned) object it took over goes into the
 * summary, as the Python tool printed it: it may be a pipeline job that crashed. (Runs recorded before it
 * returned nothing: the same commands.)
 */
async function takePipelineLock(input: CompactionRequest, progress: CompactionProgress): Promise<void> {
  const tookOver = await control.acquirePipelineLock(pipelineLockOwner(input));
  if (typeof tookOver === 'string') progress.pipelineLock = tookOver;
}

function pipelineLockOwner(input: CompactionRequest): { warehouse: string; owner: string; lock: string } {
  return { warehouse: input.warehouse, owner: workflowInfo().workflowId, lock: pipelineLockLocation(input) };
}

function newPlanId(): string {
  const ts = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${ts}-${uuid4().slice(0, 8)}`;
}

async function runPlan(input: CompactionRequest, progress: CompactionProgress, state: CarriedState): Promise<CompactionSummary> {
  const { plan } = state;
  progress.planId = plan.planId;
  progress.bucketsTotal = plan.bucketsToCompact;
  // The worker's log tells a run's story without the UI: planned, then ended (failures are logged per bucket).
  // Logging adds no command, so runs recorded before these lines replay unchanged.
  if (state.nextPage === 0) {
    log.info(`${input.dryRun ? 'dry run' : 'compaction'} of ${input.warehouse}: ${plan.bucketsToCompact} of ${plan.bucketsScanned} buckets to compact${input.resumePlanId ? ' (resumed plan)' : ''}`, {
      planId: plan.planId,
    });
  }

  if (!input.dryRun) {
    progress.phase = 'compacting';
    try {
      // (Runs recorded before this replay the loop below, one page at a time.)
      if (patched(WINDOW_ACROSS_PAGES)) {
        const nextPage = await compactPages(input, state, progress);
        if (nextPage < plan.pages) return continueFrom(input, state, progress, nextPage);
      } else for (let page = state.nextPage; page < plan.pages; page++) {
        publishDetails(input, progress);
        // (Runs recorded before this replay without the check.)
        if (patched(CONFIRM_WAREHOUSE_LOCK)) await confirmLockHeld(state.warehouseLock);
        const tasks = await control.loadPlanPage({ warehouse: input.warehouse, planId: plan.planId, page });
        await compactAll(input, plan.planId, tasks, progress);
        // The lock object expires 24 h after it was written, and the Python pipeline may then take it
        // over: a run longer than that renews it after every page. (Runs recorded before this replay without it.)
        if (input.useLock && patched(RENEW_PIPELINE_LOCK)) {
          await takePipelineLock(input, progress);
        }
        const more = page + 1 < plan.pages;
        if (more && historyFull()) return continueFrom(input, state, progress, page + 1);
      }
    } catch (err) {
      // Compacted buckets deleted files that the current snapshot still lists, so readers of the table
      // would fail on them until a resume: a run that is cancelled, or fails, between its buckets rebuilds
      // the table from the files as they are before it ends. (Runs recorded before each of these replay
      // without that rebuild; the order of the checks keeps their patched() markers where they were.)
      // A run that lost its lock leaves the warehouse, and its table, to the lock's holder.
      const compacted = progress.bucketsCompacted > 0 && !isLockLost(err);
      const rebuild = isCancellation(err)
        ? compacted && patched(REBUILD_ON_CANCEL)
        : compacted && !(err instanceof ContinueAsNew) && patched(REBUILD_ON_FAILURE);
      if (rebuild) await rebuildBeforeEnding(input, progress, state.warehouseLock);
      throw err;
    }
  }

  if (!input.dryRun && patched(CONFIRM_WAREHOUSE_LOCK)) {
    try {
      await confirmLockHeld(state.warehouseLock);
    } catch (err) {
      // A cancel that arrives while the last buckets run lets them end (one whose deletes began always
      // completes), so the walk above ends without noticing it and the cancellation surfaces here, at the
      // run's next activity: the table must be rebuilt then as after a cancel between buckets.
      if (isCancellation(err) && progress.bucketsCompacted > 0 && patched(REBUILD_ON_CANCEL_AFTER_BUCKETS)) await rebuildBeforeEnding(input, progress, state.warehouseLock);
      throw err;
    }
  }
  const catalogResult = input.dryRun ? null : await finalRebuild(input, progress, state.warehouseLock);

  const summary = summarize(input, plan, progress, catalogResult);
  if (!input.dryRun) await control.finishPlan({ warehouse: input.warehouse, planId: plan.planId, summary });
  progress.phase = 'done';
  publishDetails(input, progress);
  log.info(`${input.dryRun ? 'dry run' : 'compaction'} of ${input.warehouse} done`, {
    planId: plan.planId,
    bucketsCompacted: summary.bucketsCompacted,
    failedBuckets: summary.failedBucketsTotal,
    rowsAfter: summary.rowsAfter,
    duplicatesRemoved: summary.duplicatesRemoved,
    snapshotId: summary.snapshotId ?? 'none',
    // What `compact` would exit 3 for, in the log of a scheduled run too (which no command follows).
    ...catalogProblemCounts(summary),
  });
  return summary;
}

/** The summary's counts of files readers cannot use as the table, only those that are not 0. */
function catalogProblemCounts(summary: CompactionSummary): Record<string, number> {
  const counts: Record<string, number> = {
    unreadableFiles: summary.unreadableFilesTotal,
    schemaMismatchFiles: summary.schemaMismatchFilesTotal ?? 0,
    partitionMismatchFiles: summary.partitionMismatchFilesTotal ?? 0,
    droppedRegistrations: summary.droppedRegistrationsTotal ?? 0,
  };
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0));
}

/**
 * The run's own rebuild at its end. A cancel that lands while it waits for the catalog lock (another
 * catalog's rebuild may hold it for hours) withdraws the request, and the table would keep listing the
 * inputs every bucket deleted: like a cancel between buckets, the rebuild then runs anyway before the
 * run ends. (Runs recorded before this replay without it.)
 */
async function finalRebuild(input: CompactionRequest, progress: CompactionProgress, warehouseLock: HeldLock): Promise<CatalogResult> {
  try {
    return await rebuildTable(input, progress, warehouseLock);
  } catch (err) {
    if (isCancellation(err) && progress.bucketsCompacted > 0 && patched(REBUILD_ON_CANCELLED_REBUILD)) await rebuildBeforeEnding(input, progress, warehouseLock);
    throw err;
  }
}

/** The rebuild of a run that is ending early (cancelled or failed), which a cancel cannot stop; its failure is logged, the run's own error wins. */
async function rebuildBeforeEnding(input: CompactionRequest, progress: CompactionProgress, warehouseLock: HeldLock): Promise<void> {
  await CancellationScope.nonCancellable(() => rebuildTable(input, progress, warehouseLock)).then(
    () => {
      // What `status` shows as the ended run's last phase; the rebuild itself is over.
      progress.phase = 'rebuilt-before-ending';
      publishDetails(input, progress);
    },
    (rebuildErr: unknown) => {
      log.warn('catalog rebuild before the run ended failed; resume rebuilds it', { error: String(rebuildErr) });
    },
  );
}

/** The catalog rebuild, under the catalog lock. */
function rebuildTable(input: CompactionRequest, progress: CompactionProgress, warehouseLock: HeldLock): Promise<CatalogResult> {
  progress.phase = 'waiting-for-catalog-lock';
  publishDetails(input, progress);
  return withResourceLock('catalog', input.catalog, { purpose: `catalog rebuild after compaction of ${input.warehouse}` }, async (catalogLock) => {
    // A run reset to a point between its last check and here (the wait for the catalog lock may last hours)
    // replays both grants: without asking again it would rebuild the table beside the warehouse's new holder,
    // listing inputs that run deletes. (Runs recorded before this replay without the check.)
    if (patched(CONFIRM_LOCKS_BEFORE_REBUILD)) {
      await confirmLockHeld(warehouseLock);
      await confirmLockHeld(catalogLock);
    }
    progress.phase = 'rebuilding-catalog';
    publishDetails(input, progress);
    return catalog.rebuildCatalog.executeWithOptions({ ...catalogOptions, summary: `rebuild ${input.namespace}.${input.table}` }, [catalogRequest(input)]);
  });
}

/** The history is long enough to continue as new (the server suggests it, or our own bound is passed). */
function historyFull(): boolean {
  return workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > HISTORY_EVENTS_BEFORE_CONTINUE;
}

/** Hands the plan's walk from `nextPage` on to a new run of this workflow, once every handler has finished. */
async function continueFrom(input: CompactionRequest, state: CarriedState, progress: CompactionProgress, nextPage: number): Promise<never> {
  progress.generation += 1;
  await condition(allHandlersFinished);
  return continueAsNew<typeof compactWarehouse>(input, { ...state, nextPage, progress });
}

/**
 * Runs the plan's buckets from page `state.nextPage` on with at most maxParallelBuckets in flight. The
 * next page is loaded as soon as the current one has no bucket left to start, not once its last bucket
 * ends: a page holds as few as 5 buckets of hundreds of files each, and must neither cap the run's
 * parallelism nor wait for its slowest bucket. Before each page the run confirms it holds the
 * warehouse lock, and after loading it renews the `--use-lock` object. When the history asks for
 * continue-as-new no further page is loaded; this returns the first page not loaded once the buckets in
 * flight have ended. A cancellation or a failed page load starts no further bucket and is rethrown
 * once every bucket in flight has stopped: the locks are released after that, never while a bucket writes.
 */
async function compactPages(input: CompactionRequest, state: CarriedState, progress: CompactionProgress): Promise<number> {
  const { plan } = state;
  let page = state.nextPage;
  const queue: BucketTask[] = [];
  let loading: Promise<void> | undefined;
  let stopped = false;
  let lockConfirmedAt = -Infinity;
  let confirming: Promise<void> | undefined;
  const confirmLock = async (): Promise<void> => {
    await confirmLockHeld(state.warehouseLock);
    lockConfirmedAt = Date.now();
  };
  // No await unless a check is due, so buckets start in the order they always did. (Runs recorded before
  // this replay without the check.)
  const lockCheckDue = (): boolean => Date.now() - lockConfirmedAt >= LOCK_CONFIRMED_FOR_MS && patched(CONFIRM_LOCK_BETWEEN_BUCKETS);
  const loadPage = async (): Promise<void> => {
    publishDetails(input, progress);
    await confirmLock();
    queue.push(...(await control.loadPlanPage({ warehouse: input.warehouse, planId: plan.planId, page })));
    page += 1;
    if (input.useLock) await takePipelineLock(input, progress);
  };
  const worker = async (): Promise<void> => {
    while (!stopped) {
      if (queue.length > 0 && lockCheckDue()) {
        await (confirming ??= confirmLock().finally(() => (confirming = undefined)));
        if (stopped) return;
      }
      const task = queue.shift();
      if (task) {
        await compactOne(input, plan.planId, task, progress);
        continue;
      }
      // At least one page per run, so a run never continues-as-new without progress.
      if (page >= plan.pages || (page > state.nextPage && historyFull())) return;
      loading ??= loadPage().finally(() => (loading = undefined));
      await loading;
    }
  };
  const guarded = () =>
    worker().catch((err: unknown) => {
      stopped = true;
      throw err;
    });
  const settled = await Promise.allSettled(Array.from({ length: input.maxParallelBuckets }, guarded));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return page;
}

/**
 * Runs the bucket activities of one page with at most maxParallelBuckets in flight (runs recorded
 * before compactPages). When the run is cancelled no further bucket starts, and this returns
 * (rethrowing the cancellation) only once every bucket in flight has stopped.
 */
async function compactAll(input: CompactionRequest, planId: string, tasks: BucketTask[], progress: CompactionProgress): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) await compactOne(input, planId, tasks[next++]!, progress);
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.min(input.maxParallelBuckets, tasks.length) }, worker));
  const stopped = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (stopped) throw stopped.reason;
}

/** One bucket activity; its result or failure is recorded in the progress. A cancellation is rethrown: the plan keeps that bucket for a resume. */
async function compactOne(input: CompactionRequest, planId: string, task: BucketTask, progress: CompactionProgress): Promise<void> {
  const name = bucketPrefix(task.bucket);
  progress.currentBuckets.push(name);
  try {
    // Runs started before this version keep their buckets on the run's queue (workers still serve both).
    const queue = patched(BUCKET_TASK_QUEUE) ? { taskQueue: bucketTaskQueue(workflowInfo().taskQueue) } : {};
    const result = await buckets.compactBucket.executeWithOptions(
      { ...bucketOptions, ...queue, summary: `${name} (${task.inputs.length} files)` },
      [{ ...task, warehouse: input.warehouse, planId }],
    );
    record(progress, result);
  } catch (err) {
    if (isCancellation(err)) throw err;
    // A cancelled run waits for its attempts in flight; one whose worker died meanwhile times out instead,
    // and the server does not retry it. Its bucket was stopped by the cancellation (the plan keeps it for a
    // resume), not failed. (Runs that met this before replay as they did.)
    if (err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && CancellationScope.current().consideredCancelled && patched(BUCKET_TIMED_OUT_AFTER_CANCEL)) {
      throw new CancelledFailure(`bucket ${name} stopped by the run's cancellation (its attempt timed out: its worker gone?)`);
    }
    recordFailure(progress, name, err);
  } finally {
    progress.currentBuckets = progress.currentBuckets.filter((b) => b !== name);
  }
  progress.bucketsDone += 1;
  // The Web UI's details follow every bucket, not only each page (200 buckets); they add no history event.
  publishDetails(input, progress);
}

function isLockLost(err: unknown): boolean {
  return err instanceof ApplicationFailure && err.type === FailureTypes.lockLost;
}

function record(progress: CompactionProgress, r: BucketResult): void {
  progress.bucketsCompacted += 1;
  if (r.outcome === 'already-compacted') progress.bucketsAlreadyCompacted += 1;
  progress.filesIn += r.filesIn;
  if (r.inputsRewritten) progress.filesRewritten = (progress.filesRewritten ?? 0) + r.inputsRewritten;
  if (!r.typedAsTable) {
    progress.untypedOutputsTotal = (progress.untypedOutputsTotal ?? 0) + 1;
    const listed = (progress.untypedOutputs ??= []);
    if (listed.length < MAX_REPORTED_FAILURES) listed.push(bucketPrefix(r.bucket));
  }
  progress.rowsBefore += r.rowsIn;
  progress.rowsAfter += r.rowsOut;
  progress.bytesBefore += r.bytesIn;
  progress.bytesAfter += r.bytesOut;
}

function recordFailure(progress: CompactionProgress, bucket: string, err: unknown): void {
  const failure = describeFailure(bucket, err);
  log.warn('bucket failed', { bucket, type: failure.type, reason: failure.reason });
  progress.bucketsFailed += 1;
  if (progress.failures.length < MAX_REPORTED_FAILURES) progress.failures.push(failure);
}

function describeFailure(bucket: string, err: unknown): BucketFailure {
  let cause: unknown = err;
  if (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  if (cause instanceof ApplicationFailure) {
    return { bucket, type: cause.type ?? 'Error', reason: capFailureReason(cause.message) };
  }
  return { bucket, type: 'Error', reason: capFailureReason(cause instanceof Error ? cause.message : String(cause)) };
}

function summarize(
  input: CompactionRequest,
  plan: PlanSummary,
  progress: CompactionProgress,
  cat: CatalogResult | null,
): CompactionSummary {
  // The seed's arithmetic: each compacted bucket turns its planned files into one. A dry run reports
  // what the run would leave, like its bucketsCompacted.
  const filesAfter = input.dryRun
    ? plan.filesBefore - plan.filesToCompact + plan.bucketsToCompact
    : plan.filesBefore - progress.filesIn + progress.bucketsCompacted;
  return {
    warehouse: input.warehouse,
    catalog: input.catalog,
    planId: plan.planId,
    dryRun: input.dryRun,
    bucketsScanned: plan.bucketsScanned,
    bucketsCompacted: input.dryRun ? plan.bucketsToCompact : progress.bucketsCompacted,
    bucketsAlreadyCompacted: progress.bucketsAlreadyCompacted,
    filesBefore: plan.filesBefore,
    filesAfter,
    rowsBefore: progress.rowsBefore,
    rowsAfter: progress.rowsAfter,
    duplicatesRemoved: progress.rowsBefore - progress.rowsAfter,
    bytesBefore: progress.bytesBefore,
    bytesAfter: progress.bytesAfter,
    failedBuckets: progress.failures,
    failedBucketsTotal: progress.bucketsFailed,
    snapshotId: cat?.snapshotId ?? null,
    catalogDataFiles: cat?.dataFiles ?? null,
    catalogRows: cat?.totalRows ?? null,
    catalogMetadataFilesExpired: cat?.metadataFilesDeleted ?? null,
    unreadableFiles: cat?.unreadable ?? [],
    unreadableFilesTotal: cat?.unreadableTotal ?? cat?.unreadable.length ?? 0,
    sampleBuckets: plan.sample,
    workflowRuns: progress.generation + 1,
    ...(plan.inputsDeferred ? { filesDeferred: plan.inputsDeferred } : {}),
    ...(plan.nullTypedBuckets ? { nullTypedBuckets: plan.nullTypedBuckets, nullTypedBucketsTotal: plan.nullTypedBucketsTotal ?? plan.nullTypedBuckets.length } : {}),
    ...(plan.retypedBuckets ? { retypedBuckets: plan.retypedBuckets, retypedBucketsTotal: plan.retypedBucketsTotal ?? plan.retypedBuckets.length } : {}),
    ...(progress.untypedOutputsTotal ? { untypedOutputs: progress.untypedOutputs ?? [], untypedOutputsTotal: progress.untypedOutputsTotal } : {}),
    ...(plan.ignoredObjects ? { objectsIgnored: plan.ignoredObjects } : {}),
    ...(plan.ignoredParquetLike ? { objectsIgnoredParquetLike: plan.ignoredParquetLike, objectsIgnoredParquetLikeTotal: plan.ignoredParquetLikeTotal ?? plan.ignoredParquetLike.length } : {}),
    ...(progress.filesRewritten ? { filesRewritten: progress.filesRewritten } : {}),
    ...(progress.pipelineLock ? { pipelineLock: progress.pipelineLock } : {}),
    ...(cat?.deleteFilesDropped ? { catalogDeleteFilesDropped: cat.deleteFilesDropped } : {}),
    // A dry run's summary is what the run would do: it would create the table its plan did not find. A
    // rebuild retried after its first attempt committed finds the table that attempt created, so a run
    // that rebuilt a table its plan did not find created it too (under the catalog's lock, no other
    // compaction can have).
    ...(cat?.createdTable || ((input.dryRun || cat) && plan.tableAbsent) ? { catalogTableCreated: true } : {}),
    ...(cat?.schemaEvolved ? { catalogSchemaEvolved: cat.schemaEvolved } : {}),
    ...(cat?.schemaMismatches
      ? { schemaMismatchFiles: cat.schemaMismatches, schemaMismatchFilesTotal: cat.schemaMismatchesTotal ?? cat.schemaMismatches.length }
      : {}),
    ...(cat?.partitionMismatches
      ? { partitionMismatchFiles: cat.partitionMismatches, partitionMismatchFilesTotal: cat.partitionMismatchesTotal ?? cat.partitionMismatches.length }
      : {}),
    ...(cat?.droppedRegistrations
      ? { droppedRegistrations: cat.droppedRegistrations, droppedRegistrationsTotal: cat.droppedRegistrationsTotal ?? cat.droppedRegistrations.length }
      : {}),
    ...(cat?.bucketsGone
      ? { catalogBucketsGone: cat.bucketsGone, catalogBucketsGoneTotal: cat.bucketsGoneTotal ?? cat.bucketsGone.length, catalogRowsGone: cat.rowsGone ?? 0 }
      : {}),
    ...(cat?.registeredAgain
      ? { catalogRegisteredAgain: cat.registeredAgain, catalogRegisteredAgainTotal: cat.registeredAgainTotal ?? cat.registeredAgain.length }
      : {}),
    ...(cat?.droppedRefs ? { catalogDroppedRefs: cat.droppedRefs, catalogDroppedRefsTotal: cat.droppedRefsTotal ?? cat.droppedRefs.length } : {}),
  };
}

/** The Web UI's "current details" of this execution. */
function publishDetails(input: CompactionRequest, p: CompactionProgress): void {
  const lines = [
    `**${p.phase}** — ${input.warehouse}`,
    p.planId ? `plan \`${p.planId}\`: ${p.bucketsDone}/${p.bucketsTotal} buckets (${p.bucketsFailed} failed)` : '',
    p.rowsBefore ? `rows ${p.rowsBefore} → ${p.rowsAfter}` : '',
  ];
  setCurrentDetails(lines.filter(Boolean).join('\n\n'));
}

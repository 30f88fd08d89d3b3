/**
 * Workflow-level mutual exclusion. One long-lived `resourceLock` workflow per resource (a warehouse or
 * a catalog) queues requests in arrival order and grants them one at a time. Requesters reach it with
 * signal-with-start (through an activity) and are told by a signal when they hold it.
 *
 * Why not a lock file: a workflow that dies cannot release a file, but the server knows when a workflow
 * closes. The lock polls its holder's status and frees the lock when the holder has closed for any
 * reason (completed, failed, timed out, terminated), within `livenessCheckSeconds`. A new run of the
 * holder's workflow id (a reset, or a restart under the same id) that asks for the lock supersedes the
 * closed run's request (isStale), since the liveness check sees that id running again.
 *
 * A lock workflow that is itself terminated (an operator taking it for a stuck lock) cannot hand its
 * state on: the next request would start a fresh run that grants at once, beside the holder that is
 * still writing, and the closed run's waiters would never hear from it again. So a fresh run first takes
 * over the holder and queue of its predecessor when that run closed any other way than idle
 * (closedLockState), and a waiter sends its request again now and then (`rerequestSeconds`), which
 * starts that fresh run when nobody else does.
 */
import {
  CancellationScope,
  ApplicationFailure,
  ContinueAsNew,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  getExternalWorkflowHandle,
  ActivityCancellationType,
  proxyActivities,
  setHandler,
  allHandlersFinished,
  log,
  patched,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import type { LockActivities } from '../activities/locking/lock-activities';
import { FailureTypes, LOCK_WORKFLOW_ID_PREFIX, MAX_WORKFLOW_ID_BYTES, utf8Length } from './contract';

export type LockKind = 'warehouse' | 'catalog';

export interface LockRequest {
  /** Workflow id of the requester; the grant is signalled there (its latest run, so continue-as-new keeps the lock). */
  workflowId: string;
  requestId: string;
  /** Free text for operators: who wants the lock and why. */
  purpose: string;
}

export interface LockHolder extends LockRequest {
  fence: number;
  grantedAtMs: number;
}

export interface LockGrant {
  lockId: string;
  requestId: string;
  fence: number;
}

export interface LockQueued {
  lockId: string;
  requestId: string;
  holder: string | null;
  position: number;
}

export interface LockRelease {
  requestId: string;
}

export interface LockState {
  holder: LockHolder | null;
  queue: LockRequest[];
  nextFence: number;
  livenessCheckSeconds: number;
  /** Continue-as-new once history is this long (well below the server's limits; small in tests). */
  maxHistoryEvents: number;
}

export const acquireLockSignal = defineSignal<[LockRequest]>('earthcatalog.lock.acquire');
export const releaseLockSignal = defineSignal<[LockRelease]>('earthcatalog.lock.release');
export const lockGrantedSignal = defineSignal<[LockGrant]>('earthcatalog.lock.granted');
export const lockQueuedSignal = defineSignal<[LockQueued]>('earthcatalog.lock.queued');
export const lockStateQuery = defineQuery<LockState>('earthcatalog.lock.state');

export const DEFAULT_LIVENESS_CHECK_SECONDS = 10;
/** patched() id of a lock timeout that counts from the lock workflow's answer, not from the request. */
const TIMEOUT_FROM_ANSWER = 'lock-timeout-from-answer';
/** patched() id of a request superseding an earlier one of the same workflow id (isStale). */
const SUPERSEDE_STALE = 'supersede-stale-request';
/** patched() id of the liveness check on a wake-up by a new request, once its interval has passed. */
const LIVENESS_CHECK_ON_WAKE = 'liveness-check-on-wake';
/** patched() id of a fresh lock run taking over the state of a predecessor that closed without handing it on. */
const INHERIT_CLOSED_RUN = 'inherit-closed-run-state';
/** patched() id of a waiter without a timeout sending its request again every `rerequestSeconds`. */
const REREQUEST_WHILE_WAITING = 'rerequest-while-waiting';
/** patched() id of the refusal of a lock whose workflow id Temporal would refuse (over 1,000 bytes). */
const LOCK_ID_WITHIN_LIMIT = 'lock-id-within-temporal-limit';
/**
 * How often a waiter without a timeout sends its request again: how long its wait outlives a terminated
 * lock workflow at most. Each time costs a timer and an activity (5 history events).
 */
export const DEFAULT_REREQUEST_SECONDS = 300;
/** How long a requester with a timeout waits for the lock workflow to answer at all. */
const ANSWER_SECONDS = 60;
/** How long an idle lock workflow lingers before completing (the next request starts a new run). */
const IDLE_CLOSE_SECONDS = 60;

/** The lock's workflow id: one per resource, so the server itself guarantees one lock per resource. */
export function lockWorkflowId(kind: LockKind, resource: string): string {
  return `${LOCK_WORKFLOW_ID_PREFIX}${kind}:${resource}`;
}

const { isWorkflowRunning, closedLockState } = proxyActivities<LockActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds' },
});

/**
 * Whether a signal's payload has the fields, of the types, its handler reads. Anyone who may signal in the
 * namespace can send these signals (`temporal workflow signal` without `--input` sends null): a payload
 * of another shape is logged and ignored, instead of failing every workflow task and wedging the run.
 */
function wellFormed<T>(signal: string, payload: unknown, fields: Readonly<Record<string, 'string' | 'number'>>): payload is T {
  const ok =
    typeof payload === 'object' && payload !== null && Object.entries(fields).every(([f, type]) => typeof (payload as Record<string, unknown>)[f] === type);
  if (!ok) log.warn(`ignored a ${signal} signal whose payload is not ${JSON.stringify(fields)}`, { payload: JSON.stringify(payload) ?? 'undefined' });
  return ok;
}

/**
 * Whether `req` makes `earlier` stale: another request of the same workflow id. A running workflow asks
 * for a lock at most once at a time (withResourceLock) and keeps a held one across continue-as-new
 * without asking again, so a second request comes from a new run of that id: a reset, or a run
 * terminated and started again under its id. The earlier request belongs to the closed run, and the
 * liveness check cannot free it, since the workflow id is running again; left in place, the new run
 * would wait behind its own predecessor forever.
 */
function isStale(earlier: LockRequest | null, req: LockRequest): boolean {
  return earlier !== null && earlier.workflowId === req.workflowId && earlier.requestId !== req.requestId;
}

/** The lock manager. Its state is small (one holder and a queue of ids), so it carries across continue-as-new. */
export async function resourceLock(initial?: LockState): Promise<void> {
  const state: LockState = initial ?? {
    holder: null,
    queue: [],
    nextFence: 1,
    livenessCheckSeconds: DEFAULT_LIVENESS_CHECK_SECONDS,
    maxHistoryEvents: 2000,
  };
  const lockId = workflowInfo().workflowId;

  setHandler(lockStateQuery, () => state);
  const acquire = (req: LockRequest): void => {
    // Signal-with-start may deliver a request twice when the requesting activity retries.
    if (state.holder?.requestId === req.requestId || state.queue.some((q) => q.requestId === req.requestId)) return;
    if (isStale(state.holder, req) && patched(SUPERSEDE_STALE)) state.holder = null;
    if (state.queue.some((q) => isStale(q, req)) && patched(SUPERSEDE_STALE)) state.queue = state.queue.filter((q) => !isStale(q, req));
    state.queue.push(req);
  };
  const release = (requestId: string): void => {
    // A release that does not name the current holder is stale (fencing): it may only withdraw a queued request.
    if (state.holder?.requestId === requestId) state.holder = null;
    else state.queue = state.queue.filter((q) => q.requestId !== requestId);
  };
  // Releases that arrive while a fresh run reads its predecessor's state may name the holder it takes over.
  let releasedWhileInheriting: string[] | undefined;
  setHandler(acquireLockSignal, (req: unknown) => {
    if (wellFormed<LockRequest>(acquireLockSignal.name, req, { workflowId: 'string', requestId: 'string', purpose: 'string' })) acquire(req);
  });
  setHandler(releaseLockSignal, (rel: unknown) => {
    if (!wellFormed<LockRelease>(releaseLockSignal.name, rel, { requestId: 'string' })) return;
    releasedWhileInheriting?.push(rel.requestId);
    release(rel.requestId);
  });

  if (!initial && patched(INHERIT_CLOSED_RUN)) {
    releasedWhileInheriting = [];
    const inherited = await closedLockState(lockId, workflowInfo().runId);
    if (inherited) {
      // The predecessor's holder and queue come first; requests that reached this run meanwhile follow.
      const arrived = state.queue;
      state.holder = inherited.holder;
      state.queue = [...inherited.queue];
      state.nextFence = Math.max(state.nextFence, inherited.nextFence);
      for (const req of arrived) acquire(req);
      for (const requestId of releasedWhileInheriting) release(requestId);
    }
    releasedWhileInheriting = undefined;
  }

  // Requests told their place in the queue; a new run (after continue-as-new) tells them again.
  const notified = new Set<string>();
  const unnotified = () => state.queue.some((q) => !notified.has(q.requestId));
  let lastLivenessCheck: { holder: LockHolder | null; atMs: number } = { holder: null, atMs: 0 };

  for (;;) {
    if (!state.holder && state.queue.length > 0) {
      const next = state.queue.shift()!;
      const holder: LockHolder = { ...next, fence: state.nextFence++, grantedAtMs: Date.now() };
      state.holder = holder;
      try {
        await getExternalWorkflowHandle(next.workflowId).signal(lockGrantedSignal, {
          lockId,
          requestId: next.requestId,
          fence: holder.fence,
        });
      } catch {
        // The requester closed while it waited: hand the lock to the next in line.
        state.holder = null;
      }
      notified.clear();
      await notifyQueue(state, lockId, notified);
      continue;
    }

    if (state.holder) {
      const held = state.holder;
      if (lastLivenessCheck.holder !== held) lastLivenessCheck = { holder: held, atMs: Date.now() };
      const changed = await condition(() => state.holder !== held || unnotified(), `${state.livenessCheckSeconds} seconds`);
      if (unnotified()) await notifyQueue(state, lockId, notified);
      // New requests wake this loop too: requests arriving more often than the check interval (ingest
      // workflows sharing the catalog lock) must not keep a dead holder's lock from being freed.
      // (Runs recorded before this replay without the check on a wake-up.)
      const due = Date.now() - lastLivenessCheck.atMs >= state.livenessCheckSeconds * 1000;
      if (state.holder === held && (!changed || (due && patched(LIVENESS_CHECK_ON_WAKE)))) {
        lastLivenessCheck = { holder: held, atMs: Date.now() };
        if (!(await isWorkflowRunning(held.workflowId))) state.holder = null;
      }
    } else {
      const woke = await condition(() => state.queue.length > 0, `${IDLE_CLOSE_SECONDS} seconds`);
      if (!woke && !state.holder && state.queue.length === 0) {
        await condition(allHandlersFinished);
        return;
      }
    }

    if (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > state.maxHistoryEvents) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof resourceLock>(state);
    }
  }
}

async function notifyQueue(state: LockState, lockId: string, notified: Set<string>): Promise<void> {
  const holder = state.holder?.workflowId ?? null;
  await Promise.all(
    state.queue.map((q, i) => {
      if (notified.has(q.requestId)) return undefined;
      notified.add(q.requestId);
      return getExternalWorkflowHandle(q.workflowId)
        .signal(lockQueuedSignal, { lockId, requestId: q.requestId, holder, position: i + 1 })
        .catch(() => undefined);
    }),
  );
}

const { requestLock, lockHolder } = proxyActivities<LockActivities>({
  // A cancelled requester withdraws its request only after the request itself was delivered, so the
  // withdrawal cannot overtake it (TRY_CANCEL, the SDK's effective default, would not wait).
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds' },
});

/** What a requester knows about the lock it is waiting for or holds (shown in progress). */
export interface LockWaitState {
  lockId: string;
  status: 'requested' | 'queued' | 'held' | 'released';
  holder: string | null;
  position: number;
  fence: number | null;
}

const grants = new Map<string, LockGrant>();
const waits = new Map<string, LockWaitState>();
let handlersInstalled = false;

function installRequesterHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  setHandler(lockGrantedSignal, (grant: unknown) => {
    if (!wellFormed<LockGrant>(lockGrantedSignal.name, grant, { lockId: 'string', requestId: 'string', fence: 'number' })) return;
    grants.set(grant.requestId, grant);
    const w = waits.get(grant.requestId);
    if (w) Object.assign(w, { status: 'held', holder: workflowInfo().workflowId, position: 0, fence: grant.fence });
  });
  setHandler(lockQueuedSignal, (q: unknown) => {
    if (!wellFormed<LockQueued>(lockQueuedSignal.name, q, { lockId: 'string', requestId: 'string', position: 'number' })) return;
    const w = waits.get(q.requestId);
    if (w && w.status !== 'held') Object.assign(w, { status: 'queued', holder: q.holder, position: q.position });
  });
}

/** The locks this workflow is waiting for or holding, for its progress query. */
export function currentLockStates(): LockWaitState[] {
  return [...waits.values()];
}

export interface WithLockOptions {
  purpose: string;
  /** Give up waiting after this long; absent waits as long as it takes. */
  timeoutSeconds?: number;
  /** Without a timeout: send the request again this often while waiting (DEFAULT_REREQUEST_SECONDS). */
  rerequestSeconds?: number;
}

/** A lock this workflow holds; carried across continue-as-new, since the holder is the workflow id. */
export interface HeldLock {
  lockId: string;
  requestId: string;
  fence: number;
}

/**
 * Runs `fn` while holding the lock of `resource`. Usable from any workflow that writes the same
 * warehouse or catalog (ingest, too), as long as its worker registers the lock activities.
 * The lock is released when `fn` settles — except by continue-as-new, where the next run adopts it
 * with `withHeldLock` — and by the lock's liveness check when this workflow dies. A workflow waits for or
 * holds one lock of a resource at a time: a second request from its id supersedes the first (isStale).
 */
export async function withResourceLock<T>(
  kind: LockKind,
  resource: string,
  options: WithLockOptions,
  fn: (held: HeldLock) => Promise<T>,
): Promise<T> {
  installRequesterHandlers();
  const lockId = lockWorkflowId(kind, resource);
  // Temporal would refuse the lock workflow's id, and the request be retried for ever (a cancel too: its
  // signal to that id failed the workflow task). The input's rules keep the paths given short enough; the
  // real path behind a symbolic link is known only here. (Asked only then: other runs replay as before.)
  if (utf8Length(lockId) > MAX_WORKFLOW_ID_BYTES && patched(LOCK_ID_WITHIN_LIMIT)) {
    throw ApplicationFailure.nonRetryable(
      `the ${kind} lock of ${resource} would be a workflow id of ${utf8Length(lockId)} bytes, over Temporal's ${MAX_WORKFLOW_ID_BYTES}: ` +
        `name the ${kind} by a shorter path (a real path behind a symbolic link counts too)`,
      FailureTypes.invalidInput,
    );
  }
  const requestId = uuid4();
  const wait: LockWaitState = { lockId, status: 'requested', holder: null, position: 0, fence: null };
  waits.set(requestId, wait);
  const request: LockRequest = { workflowId: workflowInfo().workflowId, requestId, purpose: options.purpose };
  let granted = false;
  try {
    const ask = () => requestLock({ lockWorkflowId: lockId, taskQueue: workflowInfo().taskQueue, request });
    await ask();
    const isGranted = () => grants.has(requestId);
    // No timeout: wait as long as it takes (the lock workflow frees a dead holder). The request is sent
    // again now and then: the lock workflow drops a duplicate, and one terminated meanwhile is started
    // anew, taking over its predecessor's queue (closedLockState).
    if (options.timeoutSeconds === undefined) {
      if (patched(REREQUEST_WHILE_WAITING)) {
        while (!(await condition(isGranted, `${options.rerequestSeconds ?? DEFAULT_REREQUEST_SECONDS} seconds`))) await ask();
      } else {
        await condition(isGranted);
      }
      granted = true;
    } else if (patched(TIMEOUT_FROM_ANSWER)) {
      // The timeout counts from the lock workflow's answer (granted, or queued behind a holder), so a short
      // one is not spent on that round trip, and 0 means "do not wait behind a holder". The wait for the
      // answer is bounded too, in case the lock workflow is not being run.
      const answered = await condition(() => isGranted() || wait.status === 'queued', `${Math.max(ANSWER_SECONDS, options.timeoutSeconds)} seconds`);
      granted = isGranted() || (answered && (await condition(isGranted, `${options.timeoutSeconds} seconds`)));
    } else {
      granted = await condition(isGranted, `${options.timeoutSeconds} seconds`);
    }
  } catch (err) {
    await release(lockId, requestId);
    throw err;
  }
  if (!granted) {
    await release(lockId, requestId);
    throw ApplicationFailure.nonRetryable(
      `${kind} ${resource} is locked by workflow ${wait.holder ?? '(unknown)'}; gave up after ${options.timeoutSeconds}s (lock ${lockId})`,
      FailureTypes.lockTimeout,
    );
  }
  return withHeldLock({ lockId, requestId, fence: grants.get(requestId)!.fence }, fn);
}

/**
 * Fails the run (non-retryably, LockLost) unless `held` is still the lock's holder. A run reset to a
 * point after its lock was granted replays the grant while the lock workflow has long handed the lock
 * on: without this it would go on writing beside the lock's real holder.
 */
export async function confirmLockHeld(held: HeldLock): Promise<void> {
  const holder = await lockHolder(held.lockId);
  if (holder?.requestId === held.requestId && holder.workflowId === workflowInfo().workflowId) return;
  const now = holder ? `held by workflow ${holder.workflowId}` : 'free';
  throw ApplicationFailure.nonRetryable(
    `the lock ${held.lockId} is no longer held by this run (it is ${now}): was the run reset to a point after the lock was granted? ` +
      'Nothing more was written; finish the work with a resume, which takes the lock anew',
    FailureTypes.lockLost,
  );
}

/** Runs `fn` under a lock this workflow already holds and releases it afterwards (not on continue-as-new). */
export async function withHeldLock<T>(held: HeldLock, fn: (held: HeldLock) => Promise<T>): Promise<T> {
  installRequesterHandlers();
  if (!waits.has(held.requestId)) {
    waits.set(held.requestId, { lockId: held.lockId, status: 'held', holder: workflowInfo().workflowId, position: 0, fence: held.fence });
  }
  let result: T;
  try {
    result = await fn(held);
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    await release(held.lockId, held.requestId);
    throw err;
  }
  await release(held.lockId, held.requestId);
  return result;
}

async function release(lockId: string, requestId: string): Promise<void> {
  const wait = waits.get(requestId);
  if (wait) wait.status = 'released';
  grants.delete(requestId);
  // Release even when this workflow is being cancelled; a lock that is already gone is fine.
  await CancellationScope.nonCancellable(() =>
    getExternalWorkflowHandle(lockId)
      .signal(releaseLockSignal, { requestId })
      .catch(() => undefined),
  );
}

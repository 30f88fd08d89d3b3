import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type WorkflowExecutionInfo } from '@temporalio/client';
import type { LockRequest, LockState } from '../../workflows/lock';
import { acquireLockSignal, lockGrantedSignal, lockStateQuery, type LockGrant } from '../../workflows/lock';
import { decodeHistoryPayload } from './history-payload';
import { firstLine } from '../error-text';

export interface RequestLockInput {
  lockWorkflowId: string;
  taskQueue: string;
  request: LockRequest;
}

/**
 * The status of the newest run of `workflowId` in this activity's namespace ('RUNNING', 'TERMINATED',
 * ...), or null when there is no such workflow. Activity context only.
 */
export async function workflowStatus(workflowId: string): Promise<string | null> {
  try {
    return (await Context.current().client.workflow.getHandle(workflowId).describe()).status.name;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
}

async function isRunning(workflowId: string): Promise<boolean> {
  return (await workflowStatus(workflowId)) === 'RUNNING';
}

/** A string literal of Temporal's visibility query language. */
function visibilityString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** What a fresh lock run takes over from a predecessor that closed without handing its state on. */
export type InheritedLockState = Pick<LockState, 'holder' | 'queue' | 'nextFence'>;

/** Statuses of a lock run that handed its state on or had none left: continued as new, or completed idle. */
const HANDED_ON = new Set(['COMPLETED', 'CONTINUED_AS_NEW']);

/**
 * How long a lock workflow's workflow task may wait unstarted on another task queue before a requester
 * takes it for unserved: a live worker starts one within a second or two. A task first offered to a dead
 * worker's sticky queue is scheduled again on the normal queue after 10 s, so a requester looks for up to
 * LOOK_SECONDS, within the request activity's 30 s timeout.
 */
const UNSERVED_SECONDS = 12;
const LOOK_SECONDS = 25;

/** How long a fresh lock run waits for its closed predecessor to answer for its state. */
const CLOSED_STATE_QUERY_MS = 10_000;

/** PendingWorkflowTaskState.SCHEDULED: the task waits for a worker to take it. */
const WORKFLOW_TASK_SCHEDULED = 1;

/**
 * Terminates the run of the lock that `input` was just sent to when no worker serves it and nobody it
 * granted the lock to is still running; true when it did. A lock workflow runs on the task queue of the
 * request that started it: once that queue's workers are gone (a deploy that moved to another queue, or
 * `schedule update --task-queue`), it can neither grant nor close, and every later request would wait
 * forever. A lock run whose grantee still runs is left alone (that workflow may be writing): the log
 * says which queue needs a worker.
 */
async function retireUnservedLock(input: RequestLockInput): Promise<boolean> {
  const { client, log } = Context.current();
  const since = Date.now();
  for (;;) {
    const lock = await client.workflow.getHandle(input.lockWorkflowId).describe();
    const task = lock.raw.pendingWorkflowTask;
    if (lock.status.name !== 'RUNNING' || lock.taskQueue === input.taskQueue || task?.state !== WORKFLOW_TASK_SCHEDULED) return false;
    const waitedMs = Date.now() - Number(task.scheduledTime?.seconds ?? 0) * 1000;
    if (waitedMs < UNSERVED_SECONDS * 1000) {
      // A task scheduled just now (this request's signal) may yet be taken: look again until it has waited long enough.
      if (Date.now() - since > LOOK_SECONDS * 1000) return false;
      await new Promise((r) => setTimeout(r, 2000));
      continue;
    }
    const { running } = await runningGrantees(lock.workflowId, lock.runId, input.request.workflowId);
    const unserved = `no worker has taken its workflow task on task queue ${lock.taskQueue} for ${Math.round(waitedMs / 1000)} s`;
    if (running.length) {
      log.warn(`lock ${input.lockWorkflowId}: ${unserved}, and ${running.join(', ')}, to which it granted the lock, is still running: start a worker on ${lock.taskQueue}`);
      return false;
    }
    try {
      await client.workflow.getHandle(input.lockWorkflowId, lock.runId).terminate(`${unserved} and nobody it granted the lock to is running: taken over on task queue ${input.taskQueue}`);
    } catch (err) {
      // Another request retired it first, or it closed meanwhile: the request is sent again either way.
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
    log.warn(`lock ${input.lockWorkflowId}: ${unserved}; its run ${lock.runId} was terminated and the lock starts anew on task queue ${input.taskQueue}`);
    return true;
  }
}

/**
 * The workflows a lock run granted the lock to, or carried as its holder from the run it continued, that
 * are still running (`except` left out), and the next fencing number after every one it gave: read from
 * its history, which needs no worker (a query of that run would).
 */
async function runningGrantees(lockWorkflowId: string, runId: string, except?: string): Promise<{ running: string[]; nextFence: number }> {
  const { client } = Context.current();
  const history = await client.workflow.getHandle(lockWorkflowId, runId).fetchHistory();
  const grantees = new Set<string>();
  let nextFence = 1;
  for (const event of history.events ?? []) {
    const started = event.workflowExecutionStartedEventAttributes;
    if (started) {
      const state = await decodeHistoryPayload<LockState | null>(client, started.input?.payloads?.[0]);
      if (state?.holder) grantees.add(state.holder.workflowId);
      nextFence = Math.max(nextFence, state?.nextFence ?? 1);
    }
    const signal = event.signalExternalWorkflowExecutionInitiatedEventAttributes;
    if (signal?.signalName === lockGrantedSignal.name && signal.workflowExecution?.workflowId) {
      grantees.add(signal.workflowExecution.workflowId);
      const grant = await decodeHistoryPayload<LockGrant>(client, signal.input?.payloads?.[0]);
      if (grant) nextFence = Math.max(nextFence, grant.fence + 1);
    }
  }
  const running = [];
  for (const workflowId of grantees) if (workflowId !== except && (await isRunning(workflowId))) running.push(workflowId);
  return { running, nextFence };
}

/** Activities the lock protocol needs: workflows cannot signal-with-start or describe other workflows. */
export function createLockActivities() {
  return {
    async requestLock(input: RequestLockInput): Promise<void> {
      const client = Context.current().client;
      const ask = () =>
        client.workflow.signalWithStart('resourceLock', {
          workflowId: input.lockWorkflowId,
          taskQueue: input.taskQueue,
          args: [undefined as LockState | undefined],
          signal: acquireLockSignal,
          signalArgs: [input.request],
          staticSummary: `lock ${input.lockWorkflowId}`,
        });
      await ask();
      // The request now starts a fresh run on this task queue, which takes over what the closed run had.
      if (await retireUnservedLock(input)) await ask();
    },

    isWorkflowRunning(workflowId: string): Promise<boolean> {
      return isRunning(workflowId);
    },

    /**
     * The state a fresh run of the lock `lockWorkflowId` (run `runId`) takes over: that of the run before
     * it, when that one closed without handing its state on (terminated, say), less the holder and the
     * requests whose workflows are no longer running. Null when there is nothing to take over. Its
     * final state is read by a query, which the server answers for a closed run by replaying it.
     */
    async closedLockState(lockWorkflowId: string, runId: string): Promise<InheritedLockState | null> {
      const { client, log } = Context.current();
      let previous: WorkflowExecutionInfo | undefined;
      for await (const wf of client.workflow.list({ query: `WorkflowId = ${visibilityString(lockWorkflowId)}` })) {
        if (wf.runId !== runId && (!previous || wf.startTime > previous.startTime)) previous = wf;
      }
      if (!previous || previous.status.name === 'RUNNING' || HANDED_ON.has(previous.status.name)) return null;
      let state: LockState;
      try {
        // Cut short: a run whose task queue no worker serves (retireUnservedLock) is never answered, and
        // the activity's 30 s would run out first and be retried without end.
        state = await client.connection.withDeadline(Date.now() + CLOSED_STATE_QUERY_MS, () =>
          client.workflow.getHandle(lockWorkflowId, previous!.runId).query(lockStateQuery),
        );
      } catch (err) {
        // Without its state, the run's history still names whom it granted the lock to: while one of them
        // runs it may hold the lock, and this attempt fails (it is retried) rather than grant beside it.
        // Blocking every later run on an unreadable predecessor for good would be worse than what it guards against.
        const { running, nextFence } = await runningGrantees(lockWorkflowId, previous.runId);
        const why = `cannot read the state of its ${previous.status.name.toLowerCase()} run ${previous.runId} (${firstLine(err)})`;
        if (running.length) throw new Error(`lock ${lockWorkflowId}: ${why}, and ${running.join(', ')}, to which it granted the lock, is still running`);
        log.error(`lock ${lockWorkflowId}: ${why}; nobody it granted the lock to is running, so it starts without holder or queue (waiters send their requests again)`);
        return { holder: null, queue: [], nextFence };
      }
      const holder = state.holder && (await isRunning(state.holder.workflowId)) ? state.holder : null;
      const queue = [];
      for (const req of state.queue) if (await isRunning(req.workflowId)) queue.push(req);
      log.warn(
        `lock ${lockWorkflowId}: its run ${previous.runId} was ${previous.status.name.toLowerCase()}; this run takes over ` +
          `${holder ? `the holder ${holder.workflowId} (fence ${holder.fence})` : 'no holder'} and ${queue.length} queued request(s)`,
      );
      return { ...state, holder, queue };
    },

    /** Who holds the lock now, as its lock workflow says (null: nobody, or no lock workflow any more). */
    async lockHolder(lockWorkflowId: string): Promise<{ workflowId: string; requestId: string } | null> {
      try {
        const { holder } = await Context.current().client.workflow.getHandle(lockWorkflowId).query(lockStateQuery);
        return holder ? { workflowId: holder.workflowId, requestId: holder.requestId } : null;
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return null;
        throw err;
      }
    },
  };
}

export type LockActivities = ReturnType<typeof createLockActivities>;

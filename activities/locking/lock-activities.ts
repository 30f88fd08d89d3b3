import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type WorkflowExecutionInfo } from '@temporalio/client';
import type { LockRequest, LockState } from '../../workflows/lock';
import { acquireLockSignal, lockStateQuery } from '../../workflows/lock';

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

/** Statuses of a lock run that handed its state on or had none left: continued as new, or completed idle. */
const HANDED_ON = new Set(['COMPLETED', 'CONTINUED_AS_NEW']);

/** Activities the lock protocol needs: workflows cannot signal-with-start or describe other workflows. */
export function createLockActivities() {
  return {
    async requestLock(input: RequestLockInput): Promise<void> {
      const client = Context.current().client;
      await client.workflow.signalWithStart('resourceLock', {
        workflowId: input.lockWorkflowId,
        taskQueue: input.taskQueue,
        args: [undefined as LockState | undefined],
        signal: acquireLockSignal,
        signalArgs: [input.request],
        staticSummary: `lock ${input.lockWorkflowId}`,
      });
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
    async closedLockState(lockWorkflowId: string, runId: string): Promise<LockState | null> {
      const { client, log } = Context.current();
      let previous: WorkflowExecutionInfo | undefined;
      for await (const wf of client.workflow.list({ query: `WorkflowId = ${visibilityString(lockWorkflowId)}` })) {
        if (wf.runId !== runId && (!previous || wf.startTime > previous.startTime)) previous = wf;
      }
      if (!previous || previous.status.name === 'RUNNING' || HANDED_ON.has(previous.status.name)) return null;
      let state: LockState;
      try {
        state = await client.workflow.getHandle(lockWorkflowId, previous.runId).query(lockStateQuery);
      } catch (err) {
        // Blocking every later run on an unreadable predecessor would be worse than what it guards against.
        log.error(`lock ${lockWorkflowId}: cannot read the state of its ${previous.status.name.toLowerCase()} run ${previous.runId}; starting empty`, {
          error: (err as Error).message,
        });
        return null;
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

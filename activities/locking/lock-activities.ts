import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
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

    async isWorkflowRunning(workflowId: string): Promise<boolean> {
      return (await workflowStatus(workflowId)) === 'RUNNING';
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

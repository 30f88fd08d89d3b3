import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { LockRequest, LockState } from '../../workflows/lock';
import { acquireLockSignal } from '../../workflows/lock';

export interface RequestLockInput {
  lockWorkflowId: string;
  taskQueue: string;
  request: LockRequest;
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
      const client = Context.current().client;
      try {
        const d = await client.workflow.getHandle(workflowId).describe();
        return d.status.name === 'RUNNING';
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return false;
        throw err;
      }
    },
  };
}

export type LockActivities = ReturnType<typeof createLockActivities>;

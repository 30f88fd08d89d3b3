/** Starting a compaction and following it to its summary: shared by the CLI, the API and the demo. */
import { randomBytes } from 'node:crypto';
import { CancelledFailure } from '@temporalio/common';
import { WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import type { CompactionInput, CompactionSummary } from '../workflows/contract';
import { parseCompactionInput } from '../workflows/contract';
import type { compactWarehouse } from '../workflows/compact-warehouse';
import type { CompactionProgress } from '../workflows/progress';

export function newWorkflowId(prefix = 'earthcatalog-compact'): string {
  const ts = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${prefix}-${ts}-${randomBytes(3).toString('hex')}`;
}

export async function startCompaction(
  client: Client,
  input: CompactionInput,
  opts: { taskQueue: string; workflowId?: string },
): Promise<WorkflowHandle<typeof compactWarehouse>> {
  // Validate here too, so a bad flag fails before anything is started (the workflow validates again).
  const parsed = parseCompactionInput(input);
  return client.workflow.start('compactWarehouse', {
    taskQueue: opts.taskQueue,
    workflowId: opts.workflowId ?? newWorkflowId(),
    args: [input],
    staticSummary: `compact ${parsed.warehouse}${parsed.dryRun ? ' (dry run)' : ''}`,
    staticDetails: `catalog ${parsed.catalog} · threshold ${parsed.threshold} · up to ${parsed.maxParallelBuckets} buckets in parallel`,
  }) as Promise<WorkflowHandle<typeof compactWarehouse>>;
}

export async function queryProgress(handle: WorkflowHandle): Promise<CompactionProgress | undefined> {
  try {
    return await handle.query<CompactionProgress>('progress');
  } catch {
    return undefined;
  }
}

/** Waits for the result, calling `onProgress` about twice a second. */
export async function followCompaction(
  handle: WorkflowHandle,
  onProgress?: (p: CompactionProgress) => void,
): Promise<CompactionSummary> {
  let done = false;
  const poller = (async () => {
    while (!done && onProgress) {
      const p = await queryProgress(handle);
      if (p && !done) onProgress(p);
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  try {
    return (await handle.result()) as CompactionSummary;
  } catch (err) {
    throw new Error(describeWorkflowError(err));
  } finally {
    done = true;
    await poller;
  }
}

/** The innermost useful message of a workflow failure, on one line. */
export function describeWorkflowError(err: unknown): string {
  if (err instanceof WorkflowFailedError) {
    if (err.cause instanceof CancelledFailure) return 'workflow was cancelled; finish its plan with resume';
    let cause: unknown = err.cause;
    while (cause instanceof Error && 'cause' in cause && cause.cause instanceof Error) cause = cause.cause;
    return `workflow ${err.message.includes('terminated') ? 'was terminated' : 'failed'}: ${cause instanceof Error ? cause.message : err.message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Starting a compaction and following it to its summary: shared by the CLI, the API and the demo. */
import { randomBytes } from 'node:crypto';
import { ApplicationFailure, CancelledFailure, TerminatedFailure, TimeoutFailure } from '@temporalio/common';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import type { CompactionInput, CompactionSummary } from '../workflows/contract';
import { COMPACTION_WORKFLOW_TYPE, parseCompactionInput } from '../workflows/contract';
import type { compactWarehouse } from '../workflows/compact-warehouse';
import type { CompactionProgress } from '../workflows/progress';
import { firstLine } from '../activities/error-text';
import { serverAnswers, ServerUnreachableError, throughOutages } from './server-outages';
import { workflowArgs } from './cli-args';

export function newWorkflowId(prefix = 'earthcatalog-compact'): string {
  const ts = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${prefix}-${ts}-${randomBytes(3).toString('hex')}`;
}

export async function startCompaction(
  client: Client,
  input: CompactionInput,
  /** `connection`: the flags that reach this server and namespace, for the command a refusal prints. */
  opts: { taskQueue: string; workflowId?: string; connection?: readonly string[] },
): Promise<WorkflowHandle<typeof compactWarehouse>> {
  // Validate here too, so a bad flag fails before anything is started (the workflow validates again).
  const parsed = parseCompactionInput(input);
  const workflowId = opts.workflowId ?? newWorkflowId();
  try {
    return (await client.workflow.start(COMPACTION_WORKFLOW_TYPE, {
      taskQueue: opts.taskQueue,
      workflowId,
      args: [input],
      staticSummary: `compact ${parsed.warehouse}${parsed.dryRun ? ' (dry run)' : ''}`,
      staticDetails: `catalog ${parsed.catalog} · threshold ${parsed.threshold} · up to ${parsed.maxParallelBuckets} buckets in parallel`,
    })) as WorkflowHandle<typeof compactWarehouse>;
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    throw new Error(
      `a workflow with the id ${workflowId} is already running: give this run another --workflow-id, ` +
        `or follow that one (earthcatalog-compact status --watch ${workflowArgs(workflowId, opts.connection)})`,
    );
  }
}

/**
 * The run's progress, or why there is none. The query is cut short at QUERY_DEADLINE_MS: one that no
 * worker answers (a task queue nobody polls) would otherwise take ~30 s to fail, which delays the
 * follower's notice and, run after run, `status`.
 */
export async function tryQueryProgress(handle: WorkflowHandle): Promise<{ progress: CompactionProgress } | { error: string }> {
  try {
    return { progress: await handle.client.connection.withDeadline(Date.now() + QUERY_DEADLINE_MS, () => handle.query<CompactionProgress>('progress')) };
  } catch (err) {
    return { error: firstLine(err) };
  }
}

export async function queryProgress(handle: WorkflowHandle): Promise<CompactionProgress | undefined> {
  const answer = await tryQueryProgress(handle);
  return 'progress' in answer ? answer.progress : undefined;
}

/**
 * How long the progress query may go unanswered before the follower is told: a workflow answers
 * queries only through a worker, so this is mostly a task queue nobody polls (a typo, no worker started).
 */
export const NO_ANSWER_MS = 15_000;

/** How long one progress query may take: a worker answers within a workflow task, well under this. */
export const QUERY_DEADLINE_MS = 10_000;

/** Why a run has not answered its progress query: no worker serves it, or the server itself is gone. */
export interface NoAnswer {
  error: string;
  serverUnreachable: boolean;
}

/**
 * Waits for the result, calling `onProgress` about twice a second, and `onNoAnswer` once the run has
 * not answered for NO_ANSWER_MS (again after it answered in between). Through an outage of the server
 * it keeps waiting (the run waits too), for up to OUTAGE_LIMIT_MS, then throws ServerUnreachableError.
 */
export async function followCompaction(
  handle: WorkflowHandle,
  onProgress?: (p: CompactionProgress) => void,
  onNoAnswer?: (why: NoAnswer) => void | Promise<void>,
): Promise<CompactionSummary> {
  let done = false;
  let last: CompactionProgress | undefined;
  const poller = (async () => {
    // From the last answer, not the first failure: an unanswered query itself takes QUERY_DEADLINE_MS to fail.
    let answeredAt = Date.now();
    let told = false;
    while (!done && (onProgress || onNoAnswer)) {
      const answer = await tryQueryProgress(handle);
      if (done) break;
      if ('progress' in answer) {
        last = answer.progress;
        onProgress?.(answer.progress);
        answeredAt = Date.now();
        told = false;
      } else if (!told && onNoAnswer && Date.now() - answeredAt >= NO_ANSWER_MS) {
        told = true;
        await onNoAnswer({ error: answer.error, serverUnreachable: !(await serverAnswers(handle.client.connection)) });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  let summary: CompactionSummary;
  try {
    const giveUp = `stopped waiting; the compaction goes on as workflow ${handle.workflowId} once the server is back`;
    summary = (await throughOutages(() => handle.result(), { giveUp })) as CompactionSummary;
  } catch (err) {
    if (err instanceof ServerUnreachableError) throw err;
    throw new CompactionEndedError(describeWorkflowError(err), failureTypeOf(err), { cause: err });
  } finally {
    done = true;
    await poller;
  }
  // The run ends between two polls, so the last answer was an earlier phase (the rebuild, say): its end, from the summary.
  if (last) onProgress?.(finalProgress(last, summary));
  return summary;
}

/** The progress a completed run ended with, from the last one seen and its summary. */
function finalProgress(last: CompactionProgress, summary: CompactionSummary): CompactionProgress {
  // A completed run has released its locks, whatever the last answer saw.
  const ended: CompactionProgress = { ...last, phase: 'done', locks: [] };
  // A dry run compacts nothing: its buckets stay undone.
  if (summary.dryRun) return ended;
  return { ...ended, bucketsDone: last.bucketsTotal, bucketsFailed: summary.failedBucketsTotal, rowsBefore: summary.rowsBefore, rowsAfter: summary.rowsAfter };
}

/**
 * The run ended without completing (failed, cancelled, terminated, timed out). `failureType` is the type of
 * the failure it failed with, when it has one (`FailureTypes` in workflows/contract: `LockTimeout`,
 * `PlanNotFound`, …), so that a caller can tell them apart without parsing the message; `cause` is the
 * client's error.
 */
export class CompactionEndedError extends Error {
  constructor(
    message: string,
    readonly failureType?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CompactionEndedError';
  }
}

/** The type of the innermost typed failure a run failed with (an activity's, below the workflow's own). */
export function failureTypeOf(err: unknown): string | undefined {
  let type: string | undefined;
  for (let cause: unknown = err; cause instanceof Error; cause = cause.cause) {
    if (cause instanceof ApplicationFailure && cause.type) type = cause.type;
  }
  return type;
}

/** The innermost useful message of a workflow failure, on one line. */
export function describeWorkflowError(err: unknown): string {
  if (err instanceof WorkflowFailedError) {
    if (err.cause instanceof CancelledFailure) return 'workflow was cancelled';
    // The SDK's message names the termination's reason, not the termination.
    if (err.cause instanceof TerminatedFailure) return `workflow was terminated: ${err.cause.message || 'no reason given'}`;
    if (err.cause instanceof TimeoutFailure) return `workflow timed out (${err.cause.message})`;
    let cause: unknown = err.cause;
    while (cause instanceof Error && 'cause' in cause && cause.cause instanceof Error) cause = cause.cause;
    return `workflow failed: ${cause instanceof Error ? cause.message : err.message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

import type { Client } from '@temporalio/client';
import { connectionFlags, parse, UsageError, workflowArgs } from '../cli-args';
import { connectClient, resolveTarget } from '../connection';
import { NO_ANSWER_MS, QUERY_DEADLINE_MS, queryProgress } from '../start-compaction';
import { bucketsDone, connectionFlagsOf, endedLine, everServed, failedWorkflowTaskAttempts, howItEnded, noAnswer, recentWorkflowPollers, runningCompactions, waitUntilClosed } from './status';

export const cancelUsage = `earthcatalog-compact cancel [--workflow-id ID] [--no-wait] [--json] [--address host:port] [--namespace NS] [--task-queue Q]
    Stops a running compaction cleanly (without --workflow-id: the one running compaction, of task queue Q
    given --task-queue): no bucket
    starts any more, the buckets in flight stop at their next step, the table is rebuilt from the
    files as they are (when a bucket was compacted), then the locks are released.
    Waits until the run has ended unless --no-wait. Finish its plan later with 'resume'.
    --json: one JSON object on stdout (workflowId, status; error for a run that did not complete; planId and
    the command that finishes the table when there is one; alreadyEnded or cancelRequested when nothing was waited for).`;

export async function runCancelCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { ...connectionFlags, 'workflow-id': { type: 'string' }, 'no-wait': { type: 'boolean' }, json: { type: 'boolean' } });
  const say = (text: string, json: string) => console.log(values.json ? json : text);
  const target = resolveTarget({ address: values.address, namespace: values.namespace });
  const client = await connectClient(target);
  try {
    const taskQueue = values['task-queue'];
    const workflowId = values['workflow-id'] ?? (await theRunningCompaction(client, taskQueue));
    const handle = client.workflow.getHandle(workflowId);
    const before = await handle.describe();
    const connection = connectionFlagsOf(values);
    const stopped = { workflowId, runId: before.runId, taskQueue: before.taskQueue };
    if (before.status.name !== 'RUNNING') {
      // Cancelled (by an earlier cancel, the Web UI), failed, terminated or timed out: what it left and the
      // command that finishes it, as for a run this command stops; only a completed run left nothing.
      const ended = before.status.name === 'COMPLETED' ? undefined : await howItEnded(client, handle, stopped, before.status.name, connection);
      say(
        `${workflowId} already ${before.status.name}: nothing to cancel${ended ? `; ${ended.outcome.text}` : ''}`,
        endedLine(workflowId, before.status.name, ended?.error, ended?.outcome, { alreadyEnded: true }),
      );
      return before.status.name === 'CANCELLED' || before.status.name === 'COMPLETED' ? 0 : 1;
    }
    await handle.cancel();
    if (values['no-wait']) {
      say(`cancellation of ${workflowId} requested`, endedLine(workflowId, 'RUNNING', undefined, undefined, { cancelRequested: true }));
      return 0;
    }
    console.error(`cancellation of ${workflowId} requested; waiting for the run to end (buckets in flight stop at their next step)`);
    const requestedAt = Date.now();
    let told = false;
    let asked: { answered?: boolean } | undefined;
    // A run acts on the request only through a worker: with none on its queue it waits, and so would this command, silently.
    const status = await waitUntilClosed(handle, async () => {
      const since = Date.now() - requestedAt;
      // Asked QUERY_DEADLINE_MS ahead, beside the polling, so an unanswered query has given up by NO_ANSWER_MS, when the notice is due.
      if (!asked && since >= NO_ANSWER_MS - QUERY_DEADLINE_MS) {
        const ask: { answered?: boolean } = (asked = {});
        void queryProgress(handle).then((p) => (ask.answered = p !== undefined));
      }
      if (told || asked?.answered !== false || since < NO_ANSWER_MS) return;
      told = true;
      const desc = await handle.describe();
      if (desc.status.name !== 'RUNNING') return;
      // Started on a queue no worker serves (a typo in --task-queue, say): the cancel would wait forever, and terminating is safe.
      const unserved = (await everServed(client, workflowId, desc.runId)) ? '' :
        `; no worker has run it yet, so it holds no lock and made no plan: a worker on ${desc.taskQueue} ends it at once, or end it now with ` +
        `temporal workflow terminate ${workflowArgs(workflowId, connection)} (nothing is left to finish)`;
      console.error(`earthcatalog-compact: ${workflowId} has not stopped ${NO_ANSWER_MS / 1000} s after the request ${noAnswer(workflowId, desc.taskQueue, failedWorkflowTaskAttempts(desc), await recentWorkflowPollers(client, desc.taskQueue), connection)}${unserved}; still waiting`);
    });
    if (status === 'COMPLETED') {
      // Its last buckets and rebuild were done before the request took effect.
      const p = await queryProgress(handle);
      say(`${workflowId} ${status}${p ? `: ${bucketsDone(p)}` : ''}`, endedLine(workflowId, status));
    } else {
      // Cancelled as asked, or ended otherwise meanwhile (terminated, its rebuild failed): what it left, and what finishes it.
      const { why, outcome, error } = await howItEnded(client, handle, stopped, status, connection);
      say(`${workflowId} ${status}: ${status === 'CANCELLED' ? '' : `${why}; `}${outcome.text}`, endedLine(workflowId, status, error, outcome));
    }
    return status === 'CANCELLED' || status === 'COMPLETED' ? 0 : 1;
  } finally {
    await client.connection.close();
  }
}

async function theRunningCompaction(client: Client, taskQueue: string | undefined): Promise<string> {
  const ids = await runningCompactions(client, taskQueue);
  if (ids.length === 1) return ids[0]!;
  if (ids.length === 0) throw new Error(taskQueue === undefined ? 'no compaction is running' : `no compaction is running on task queue ${taskQueue}`);
  throw new UsageError(`${ids.length} compactions are running (${ids.join(', ')}): name one with --workflow-id`);
}

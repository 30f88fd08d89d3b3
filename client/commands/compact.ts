import { compactionFlags, compactionInputFromFlags, connectionFlags, parse, UsageError, workflowArgs } from '../cli-args';
import { connectClient, describeTarget, resolveTarget } from '../connection';
import { createProgressRenderer } from '../progress-bar';
import { OUTAGE_LIMIT_MS, ServerUnreachableError } from '../server-outages';
import { CompactionEndedError, followCompaction, NO_ANSWER_MS, startCompaction } from '../start-compaction';
import { exitCodeOf, formatSummary } from '../summary-format';
import { connectionFlagsOf, endedLine, runningCompactionsOf, stoppedRunOutcome, unansweredNotice } from './status';
import { compactionWorkflowIdProblem, type CompactionInput, type CompactionSummary } from '../../workflows/contract';

export const compactUsage = `earthcatalog-compact --warehouse W --catalog C [--threshold N] [--dry-run] [--use-lock [--pipeline-lock URI]] [--json]
    [--cells a,b] [--years 2024,2025] [--max-parallel N] [--lock-timeout S] [--workflow-id ID] [--detach]
    [--iceberg-namespace NS] [--table T] [--catalog-name N]
    [--address host:port] [--namespace NS] [--task-queue Q]`;

export async function runCompactCommand(argv: string[], extra: Partial<CompactionInput> = {}): Promise<number> {
  const { values } = parse(argv, {
    ...connectionFlags,
    ...compactionFlags,
    json: { type: 'boolean' },
    'workflow-id': { type: 'string' },
    detach: { type: 'boolean' },
  });
  const target = resolveTarget({ address: values.address, namespace: values.namespace, taskQueue: values['task-queue'] });
  const input = compactionInputFromFlags(values, extra);
  const idProblem = values['workflow-id'] === undefined ? undefined : compactionWorkflowIdProblem(values['workflow-id']);
  if (idProblem) throw new UsageError(`--workflow-id: ${idProblem}`);
  const client = await connectClient(target);
  try {
    if (input.resumePlanId) {
      const running = (await runningCompactionsOf(client, input.warehouse)).map((r) => r.workflowId);
      if (running.length === 1) {
        throw new Error(
          `${running[0]} is still compacting ${input.warehouse}: a resume has nothing to finish while it runs ` +
            `(follow it: earthcatalog-compact status --watch ${workflowArgs(running[0]!, connectionFlagsOf(values))}; to go on with other flags, cancel it, then resume)`,
        );
      }
      if (running.length > 1) {
        // At most one of them compacts and the others wait for its lock; which one, only their progress tells.
        throw new Error(
          `${running.length} compactions of ${input.warehouse} are still running (${running.join(', ')}; at most one compacts, the others wait for its lock): ` +
            `a resume has nothing to finish while they run (see them: earthcatalog-compact status ${connectionFlagsOf(values).join(' ')}`.trimEnd() +
            `; to go on with other flags, cancel them, then resume)`,
        );
      }
    }
    const handle = await startCompaction(client, input, { taskQueue: target.taskQueue, workflowId: values['workflow-id'], connection: connectionFlagsOf(values) });
    if (values.detach) {
      console.log(values.json ? JSON.stringify({ workflowId: handle.workflowId }) : handle.workflowId);
      return 0;
    }
    const bar = values.json ? undefined : createProgressRenderer();
    // Ctrl-C stops following, not the compaction: it is a durable workflow that needs no terminal.
    // The commands must reach the same server and namespace as this one did.
    const followArgs = () => workflowArgs(handle.workflowId, connectionFlagsOf(values));
    // SIGTERM too: that is what schedulers (Airflow, `timeout`, systemd) send to stop a task.
    const detach = (signal: NodeJS.Signals) => {
      bar?.finish();
      const id = followArgs();
      console.error(
        `earthcatalog-compact: detached; the compaction continues as workflow ${handle.workflowId} ` +
          `(follow it: earthcatalog-compact status --watch ${id}; stop it: earthcatalog-compact cancel ${id})`,
      );
      process.exit(signal === 'SIGTERM' ? 143 : 130);
    };
    // Taken before the first line is printed: a Ctrl-C that answers that line must detach, not kill.
    process.once('SIGINT', detach);
    process.once('SIGTERM', detach);
    // On stderr with --json too: a script's log then names the run even if this process is killed outright.
    console.error(`started ${handle.workflowId} on ${describeTarget(target)} (task queue ${target.taskQueue})`);
    let summary: CompactionSummary;
    try {
      summary = await followCompaction(handle, bar ? (p) => bar.update(p) : undefined, async ({ error, serverUnreachable }) => {
        const notice = serverUnreachable
          ? `earthcatalog-compact: the Temporal server at ${describeTarget(target)} has not answered for over ${NO_ANSWER_MS / 1000} s (${error}); ` +
            `the compaction goes on once it is back. Still waiting (up to ${OUTAGE_LIMIT_MS / 60_000} minutes).`
          : await unansweredNotice(client, handle.workflowId, target.taskQueue, error, connectionFlagsOf(values));
        // With --json stdout holds only the summary; the notice goes to stderr either way.
        if (bar) bar.note(notice);
        else console.error(notice);
      });
    } catch (err) {
      if (err instanceof ServerUnreachableError) throw new Error(`${err.message} (follow it: earthcatalog-compact status --watch ${followArgs()})`);
      // Stopped by someone else (`cancel`, a terminate, the UI) or failed: say what it left, and the command that finishes it.
      if (!(err instanceof CompactionEndedError)) throw err;
      bar?.finish();
      const { runId, taskQueue, status } = await handle.describe();
      const outcome = await stoppedRunOutcome(client, { workflowId: handle.workflowId, runId, taskQueue }, connectionFlagsOf(values));
      const error = `${err.message}; ${outcome.text}`;
      // A script gets what it needs to go on (the run, its plan, the command that finishes it) without reading stderr's prose.
      if (values.json) console.log(endedLine(handle.workflowId, status.name, error, outcome));
      throw new Error(`${handle.workflowId}: ${error}`);
    } finally {
      process.off('SIGINT', detach);
      process.off('SIGTERM', detach);
      bar?.finish();
    }
    // The run's id beside its summary: what a script logs, and what `status --workflow-id` shows again.
    console.log(values.json ? JSON.stringify({ workflowId: handle.workflowId, ...summary }, null, 2) : formatSummary(summary, input));
    return exitCodeOf(summary);
  } finally {
    await client.connection.close();
  }
}

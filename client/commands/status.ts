import { ApplicationFailure, isGrpcServiceError, WorkflowNotFoundError, type Client, type WorkflowExecutionDescription, type WorkflowExecutionInfo, type WorkflowHandle } from '@temporalio/client';
import { connectionFlags, parse, shellWord, workflowArgs } from '../cli-args';
import {
  COMPACTION_WORKFLOW_TYPE,
  compactionInputSchema,
  DEFAULT_CATALOG_NAME,
  DEFAULT_MAX_PARALLEL_BUCKETS,
  DEFAULT_NAMESPACE,
  DEFAULT_TABLE,
  DEFAULT_TASK_QUEUE,
  FailureTypes,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_TIMEOUT_MS,
  type BucketSelection,
  type CompactionRequest,
  type CompactionSummary,
} from '../../workflows/contract';
import type { CompactionProgress } from '../../workflows/progress';
import { DEFAULT_REREQUEST_SECONDS } from '../../workflows/lock';
import { decodeHistoryPayload } from '../../activities/locking/history-payload';
import { firstLine } from '../../activities/error-text';
import { connectClient, GRPC_NOT_FOUND, resolveTarget } from '../connection';
import { createProgressRenderer, progressLine } from '../progress-bar';
import { OUTAGE_LIMIT_MS, throughOutages } from '../server-outages';
import { describeWorkflowError, NO_ANSWER_MS, QUERY_DEADLINE_MS, queryProgress, tryQueryProgress } from '../start-compaction';
import { formatSummary } from '../summary-format';

export const statusUsage = `earthcatalog-compact status [--workflow-id ID] [--watch] [--json] [--address host:port] [--namespace NS] [--task-queue Q]
    Without --workflow-id: every running compaction (of task queue Q only, given --task-queue), and (on stderr)
    each table whose latest compaction with a plan was terminated, timed out, or failed before its rebuild
    completed, with the command that finishes it, and
    each compaction schedule whose latest run failed or timed out, with why.`;

export async function runStatusCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { ...connectionFlags, 'workflow-id': { type: 'string' }, watch: { type: 'boolean' }, json: { type: 'boolean' } });
  const target = resolveTarget({ address: values.address, namespace: values.namespace });
  const client = await connectClient(target);
  try {
    const ids = values['workflow-id'] ? [values['workflow-id']] : await runningCompactions(client, values['task-queue']);
    // The commands it prints must reach the same server and namespace as this status did.
    const connection = connectionFlagsOf(values);
    if (!values['workflow-id']) {
      // Side checks: when they fail, the running compactions are still listed.
      const warn = (w: StatusWarning) => console.error(warningLine(w, values.json === true));
      const [interrupted, failing] = await Promise.all([
        interruptedCompactions(client).catch((err: unknown) => {
          warn({ kind: 'not-checked', message: `warning: could not look for terminated compactions: ${firstLine(err)}` });
          return [];
        }),
        failingSchedules(client).catch((err: unknown) => {
          warn({ kind: 'not-checked', message: `warning: could not look at the compaction schedules: ${firstLine(err)}` });
          return [];
        }),
      ]);
      // A schedule's failed run that left its table stale gets one warning: the stale table's, with why and the schedule.
      const scheduleOf = new Map(failing.map((f) => [f.workflowId, f]));
      for (const run of interrupted) {
        const schedule = scheduleOf.get(run.workflowId);
        const failed = run.status === 'FAILED' || run.status === 'TIMED_OUT';
        const error = schedule?.error ?? (failed ? await whyItEnded(client.workflow.getHandle(run.workflowId, run.runId)).catch(() => undefined) : undefined);
        // A run of this table completed since would have ended the warning: one found is of another table of the warehouse.
        const later = await completedRunAfter(client, run, run.input.warehouse).catch(() => undefined);
        warn(interruptedWarning(run, connection, error, schedule, later && !later.before ? later : undefined));
      }
      for (const f of failing.filter((f) => !interrupted.some((run) => run.workflowId === f.workflowId))) warn(failingScheduleWarning(f, connection));
    }
    if (ids.length === 0) {
      console.log(values.json ? '[]' : 'no compaction is running');
      return 0;
    }
    if (values.watch && ids.length === 1) return await watch(client, ids[0]!, values.json === true, connection);
    const selections = new Map<string, BucketSelection>();
    // All runs at once: each query may wait QUERY_DEADLINE_MS for an answer.
    const report = await Promise.all(
      ids.map(async (id) => {
        const handle = client.workflow.getHandle(id);
        const [desc, progress] = await Promise.all([handle.describe(), queryProgress(handle)]);
        const workflowTaskFailures = failedWorkflowTaskAttempts(desc);
        // An ended run still lists the activities it had pending, which nothing retries any more.
        const pending = desc.status.name === 'RUNNING' ? (desc.raw.pendingActivities ?? []) : [];
        const now = Date.now();
        const silentBuckets = silentBucketCount(pending, now);
        const rebuildSilent = silentRebuild(pending, now);
        const planSilent = silentPlan(pending, now);
        const rebuildWaiting = waitingRebuild(pending, now);
        const paused = pausedActivities(pending);
        const pollers = progress || desc.status.name !== 'RUNNING' ? 0 : await recentWorkflowPollers(client, desc.taskQueue);
        const lockClosed = desc.status.name === 'RUNNING' && progress ? await closedLockWaitedIn(client, progress) : undefined;
        // An ended run that did not complete (named by --workflow-id): why, as `compact` would have said it.
        const ended = desc.status.name !== 'RUNNING' && desc.status.name !== 'COMPLETED' && desc.status.name !== 'CONTINUED_AS_NEW';
        const error = ended ? await whyItEnded(handle) : undefined;
        // A completed run named by --workflow-id: its summary, as `compact` printed it (failed buckets and files that need a person, named).
        const summary = desc.status.name === 'COMPLETED' && desc.type === COMPACTION_WORKFLOW_TYPE && values['workflow-id'] ? ((await handle.result()) as CompactionSummary) : undefined;
        // Its cells and years, for what its summary says of a selection that matched nothing (as `compact` did).
        if (summary?.bucketsScanned === 0) selections.set(id, (await startInput(client, id, desc.runId)) ?? {});
        return {
          workflowId: id,
          status: desc.status.name,
          taskQueue: desc.taskQueue,
          startTime: desc.startTime.toISOString(),
          progress: progress ?? null,
          ...(pollers ? { pollers } : {}),
          ...(error ? { error } : {}),
          ...(workflowTaskFailures ? { workflowTaskFailures } : {}),
          ...(silentBuckets ? { silentBuckets, bucketHeartbeatTimeoutSeconds: heartbeatTimeoutSeconds(pending, 'compactBucket') } : {}),
          ...(planSilent ? { silentPlan: true, planHeartbeatTimeoutSeconds: heartbeatTimeoutSeconds(pending, 'planCompaction') } : {}),
          ...(rebuildSilent ? { silentRebuild: true, rebuildHeartbeatTimeoutSeconds: heartbeatTimeoutSeconds(pending, 'rebuildCatalog') } : {}),
          ...(rebuildWaiting ? { rebuildWaitingForWorker: rebuildWaiting } : {}),
          ...(paused.length ? { pausedActivities: paused } : {}),
          ...(lockClosed ? { lockWorkflowClosed: lockClosed } : {}),
          ...(summary ? { summary } : {}),
        };
      }),
    );
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else {
      for (const r of report) {
        const detail = r.progress
          ? progressLine(r.progress, 120, r.status !== 'RUNNING')
          : r.status === 'RUNNING'
            ? noAnswer(r.workflowId, r.taskQueue, r.workflowTaskFailures ?? 0, r.pollers ?? 0, connection)
            : undefined;
        const silent =
          (r.silentPlan ? ` · ${silentPlanNote(r.planHeartbeatTimeoutSeconds)}` : '') +
          (r.silentBuckets ? ` · ${silentBucketsNote(r.silentBuckets, r.bucketHeartbeatTimeoutSeconds)}` : '') +
          (r.silentRebuild ? ` · ${silentRebuildNote(r.rebuildHeartbeatTimeoutSeconds)}` : '') +
          (r.rebuildWaitingForWorker ? ` · ${waitingRebuildNote(r.rebuildWaitingForWorker, r.taskQueue, connection)}` : '') +
          (r.pausedActivities ? ` · ${pausedNote(r.workflowId, r.pausedActivities, connection)}` : '') +
          (r.lockWorkflowClosed ? ` · ${closedLockNote(r.lockWorkflowClosed)}` : '');
        // A cancellation is its own reason; a failure, a termination or a timeout is told.
        const why = r.error && r.status !== 'CANCELLED' ? ` · ${r.error}` : '';
        console.log(`${r.workflowId} ${r.status}${detail ? ` ${detail}` : ''}${silent}${why}`);
        if (r.summary) console.log(formatSummary(r.summary, selections.get(r.workflowId)));
      }
    }
    return 0;
  } finally {
    await client.connection.close();
  }
}

/**
 * Bucket activities and the catalog rebuild send a heartbeat every 10 s, and workers send every one; one
 * silent for two intervals has most likely lost its worker (killed, its machine gone), and is retried
 * elsewhere only after the heartbeat timeout.
 */
const SILENT_MS = 2 * HEARTBEAT_INTERVAL_MS;
const TIMEOUT_S = HEARTBEAT_TIMEOUT_MS / 1000;

type PendingActivity = {
  activityId?: string | null;
  activityType?: { name?: string | null } | null;
  state?: number | null;
  /** Set by `temporal activity pause` (servers from 1.27), also while the attempt it stops still runs. */
  paused?: boolean | null;
  attempt?: number | null;
  scheduledTime?: Timestamp | null;
  lastHeartbeatTime?: Timestamp | null;
  lastStartedTime?: Timestamp | null;
  /** The options the activity runs with (servers from 1.27): those of the release that scheduled it. */
  activityOptions?: { heartbeatTimeout?: { seconds?: Timestamp['seconds']; nanos?: number | null } | null } | null;
};

/**
 * The longest heartbeat timeout of the run's pending activities of type `name`, as their history set it: a
 * run scheduled by an earlier release keeps that release's (its rebuild had 2 minutes). TIMEOUT_S when the
 * server does not say.
 */
export function heartbeatTimeoutSeconds(pending: ReadonlyArray<PendingActivity>, name: string): number {
  const set = pending
    .filter((a) => a.activityType?.name === name)
    .map((a) => a.activityOptions?.heartbeatTimeout)
    .map((d) => (d ? Number(d.seconds ?? 0) + Math.round((d.nanos ?? 0) / 1e9) : 0))
    .filter((s) => s > 0);
  return set.length ? Math.max(...set) : TIMEOUT_S;
}

/** A protobuf timestamp of the server's answers in epoch ms. */
const ms = (t: Timestamp | null | undefined) => (t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : undefined);

/** Started activities of type `name` whose last heartbeat (or start) is older than `silentMs` at `nowMs`. */
function silentCount(pending: ReadonlyArray<PendingActivity>, nowMs: number, name: string, silentMs: number): number {
  return pending.filter((a) => {
    if (a.activityType?.name !== name || a.state !== PENDING_ACTIVITY_STATE_STARTED) return false;
    // The later of the two: a retried attempt keeps its predecessor's last heartbeat until it sends its own.
    const times = [ms(a.lastHeartbeatTime), ms(a.lastStartedTime)].filter((t): t is number => t !== undefined);
    return times.length > 0 && nowMs - Math.max(...times) > silentMs;
  }).length;
}

/** Started bucket activities whose last heartbeat (or start) is older than SILENT_MS at `nowMs`. */
export function silentBucketCount(pending: ReadonlyArray<PendingActivity>, nowMs: number): number {
  return silentCount(pending, nowMs, 'compactBucket', SILENT_MS);
}

/** Whether the run's catalog rebuild has started and been silent for longer than SILENT_MS at `nowMs`. */
export function silentRebuild(pending: ReadonlyArray<PendingActivity>, nowMs: number): boolean {
  return silentCount(pending, nowMs, 'rebuildCatalog', SILENT_MS) > 0;
}

/** Whether the run's planning has started and been silent for longer than SILENT_MS at `nowMs` (minutes long on a real warehouse). */
export function silentPlan(pending: ReadonlyArray<PendingActivity>, nowMs: number): boolean {
  return silentCount(pending, nowMs, 'planCompaction', SILENT_MS) > 0;
}

export function silentPlanNote(timeoutS = TIMEOUT_S): string {
  return `the planning without a heartbeat for over ${SILENT_MS / 1000} s (its worker gone? it is retried on another after the ${timeoutS} s heartbeat timeout, listing the warehouse again)`;
}

export function silentBucketsNote(count: number, timeoutS = TIMEOUT_S): string {
  return `${count} bucket(s) without a heartbeat for over ${SILENT_MS / 1000} s (their worker gone? they are retried on another after the ${timeoutS} s heartbeat timeout)`;
}

/** One of a run's activities paused by an operator (`temporal activity pause`, the Web UI). */
export interface PausedActivity {
  activityId: string;
  activityType: string;
}

/**
 * The run's paused activities: nothing runs or retries them until they are unpaused, and the run waits for
 * them (a paused bucket keeps its slot, and the rebuild and the end of the run wait for it), so it stands
 * still, holding its locks, with neither a heartbeat to miss nor a worker to ask for.
 */
export function pausedActivities(pending: ReadonlyArray<PendingActivity>): PausedActivity[] {
  return pending
    .filter((a) => a.paused === true || a.state === PENDING_ACTIVITY_STATE_PAUSED || a.state === PENDING_ACTIVITY_STATE_PAUSE_REQUESTED)
    .map((a) => ({ activityId: a.activityId ?? '', activityType: a.activityType?.name ?? '' }));
}

export function pausedNote(workflowId: string, paused: readonly PausedActivity[], connection: readonly string[] = []): string {
  const buckets = paused.filter((a) => a.activityType === 'compactBucket').length;
  const others = paused.filter((a) => a.activityType !== 'compactBucket').map((a) => PAUSED_STEP[a.activityType] ?? a.activityType);
  const what = [...(buckets ? [`${buckets} bucket(s)`] : []), ...others].join(' and ');
  const ids = paused.length > 1 ? ` (activity ids ${paused.map((a) => a.activityId).join(', ')})` : '';
  const commands = paused.map((a) => `temporal activity unpause ${workflowArgs(workflowId, connection)} --activity-id ${shellWord(a.activityId)}`);
  return `${what} paused${ids}: the run waits, holding its locks, until ${paused.length > 1 ? 'each is' : 'it is'} unpaused: ${commands.join('; ')}`;
}

/** How a note names a paused activity other than a bucket. */
const PAUSED_STEP: Partial<Record<string, string>> = { planCompaction: 'the planning', loadPlan: 'the plan loading', rebuildCatalog: 'the catalog rebuild' };

/**
 * The catalog rebuild's attempt, when it has been due for over SILENT_MS without a worker taking it: after
 * its worker was lost (the attempt the heartbeat timeout retried), no worker of the run's task queue is left.
 * Buckets waiting are not told: with more buckets in flight than worker slots they wait by design.
 */
export function waitingRebuild(pending: ReadonlyArray<PendingActivity>, nowMs: number): { attempt: number; sinceMs: number } | undefined {
  const rebuild = pending.find((a) => a.activityType?.name === 'rebuildCatalog' && a.state === PENDING_ACTIVITY_STATE_SCHEDULED);
  const due = ms(rebuild?.scheduledTime);
  if (!rebuild || due === undefined || nowMs - due <= SILENT_MS) return undefined;
  return { attempt: rebuild.attempt ?? 1, sinceMs: nowMs - due };
}

export function waitingRebuildNote(waiting: { attempt: number; sinceMs: number }, taskQueue: string, connection: readonly string[] = []): string {
  const lost = waiting.attempt > 1 ? ` (attempt ${waiting.attempt}: the one before lost its worker, or failed)` : '';
  return (
    `the catalog rebuild${lost} has waited ${Math.round(waiting.sinceMs / 1000)} s for a worker: ` +
    `is a worker running on task queue ${taskQueue}? ${workerCommand(taskQueue, connection)}`
  );
}

/** The command that starts a worker for `taskQueue` on the server and namespace `connection` names. */
function workerCommand(taskQueue: string, connection: readonly string[]): string {
  return ['earthcatalog-compact worker --task-queue', shellWord(taskQueue), ...connection].join(' ');
}

interface ClosedLock {
  lockId: string;
  /** The lock workflow's status ('TERMINATED', ...), or 'gone' when the server no longer knows it. */
  status: string;
}

/**
 * The lock workflow a running compaction waits in, when that has closed (an operator terminated it,
 * taking it for a stuck lock): the run's request went with it, and the holder it names may be long gone.
 */
async function closedLockWaitedIn(client: Client, progress: CompactionProgress): Promise<ClosedLock | undefined> {
  const wait = progress.locks.find((l) => l.status === 'queued' || l.status === 'requested');
  if (!wait) return undefined;
  const status = await client.workflow
    .getHandle(wait.lockId)
    .describe()
    .then(
      (d) => d.status.name,
      (err: unknown) => (err instanceof WorkflowNotFoundError ? 'gone' : undefined),
    );
  return status && status !== 'RUNNING' ? { lockId: wait.lockId, status } : undefined;
}

export function closedLockNote(lock: ClosedLock): string {
  return (
    `the lock workflow ${lock.lockId} it waits in is ${lock.status} (taken for a stuck lock?), and its request with it: ` +
    `the run asks again within ${DEFAULT_REREQUEST_SECONDS / 60} minutes of its last request, which starts the lock anew with the closed run's holder and queue ` +
    '(a run with --lock-timeout gives up at its timeout instead)'
  );
}

export function silentRebuildNote(timeoutS = TIMEOUT_S): string {
  return `the catalog rebuild without a heartbeat for over ${SILENT_MS / 1000} s (its worker gone? it is retried on another after the ${timeoutS} s heartbeat timeout, from the start, still one snapshot)`;
}

/** A workflow task on its second attempt or later failed or timed out on a worker (one of another version, a hung one): how often. */
export function failedWorkflowTaskAttempts(desc: WorkflowExecutionDescription): number {
  return Math.max(0, (desc.raw.pendingWorkflowTask?.attempt ?? 1) - 1);
}

/**
 * Why a running compaction may not answer: no worker on its queue, workers whose workflow task fails on
 * it, or (`pollers`: workers seen polling its queue lately) one lost or hung while it held the run.
 */
export function noAnswer(workflowId: string, taskQueue: string, workflowTaskFailures: number, pollers = 0, connection: readonly string[] = []): string {
  const none = `no progress answer within ${QUERY_DEADLINE_MS / 1000} s`;
  if (workflowTaskFailures > 0) {
    return (
      `(${none}: its workflow task has failed or timed out ${workflowTaskFailures} time(s) on a worker of task queue ${taskQueue}: one of an older or another ` +
      `version fails a run it cannot replay, or a worker hangs (stopped, starved of CPU); temporal workflow show ${workflowArgs(workflowId, connection)} names the error)`
    );
  }
  if (pollers > 0) {
    return (
      // A worker stopped cleanly moments ago is still counted: the server keeps its last poll for minutes.
      `(${none}, though ${pollers} worker(s) polled task queue ${taskQueue} in the last ${RECENT_POLL_MS / 1000} s: the worker that holds the run may be gone or hung ` +
      `(its workflow task moves to another worker after a 10 s timeout), or busy replaying a long history, or they have all stopped since: ` +
      `is a worker still running? ${workerCommand(taskQueue, connection)})`
    );
  }
  // The worker must reach the run's server and namespace: a worker of another namespace never sees it.
  return `(${none}: is a worker running on task queue ${taskQueue}? ${workerCommand(taskQueue, connection)})`;
}

/** A live worker polls again within about a minute (a long poll); one gone stays listed by the server for minutes. */
const RECENT_POLL_MS = 90_000;
/** temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW. */
const TASK_QUEUE_TYPE_WORKFLOW = 1;

/** What `compact` and `status --watch` say once a run has not answered its progress query for NO_ANSWER_MS, the server answering. */
export async function unansweredNotice(client: Client, workflowId: string, taskQueue: string, error: string, connection: readonly string[]): Promise<string> {
  const why = noAnswer(workflowId, taskQueue, 0, await recentWorkflowPollers(client, taskQueue), connection);
  return `earthcatalog-compact: ${workflowId} has not answered for over ${NO_ANSWER_MS / 1000} s (${error}) ${why}. Still waiting.`;
}

/** How many workers polled `taskQueue` for workflow tasks within RECENT_POLL_MS (0 when the server cannot say). */
export async function recentWorkflowPollers(client: Client, taskQueue: string): Promise<number> {
  const response = await client.workflowService
    .describeTaskQueue({ namespace: client.options.namespace, taskQueue: { name: taskQueue }, taskQueueType: TASK_QUEUE_TYPE_WORKFLOW })
    .catch(() => undefined);
  const now = Date.now();
  return (response?.pollers ?? []).filter((p) => now - (ms(p.lastAccessTime) ?? 0) < RECENT_POLL_MS).length;
}

const RUNNING_COMPACTIONS = `WorkflowType = '${COMPACTION_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'`;

/** Workflow ids of the compactions running in the client's namespace, of task queue `taskQueue` when given. */
export async function runningCompactions(client: Client, taskQueue?: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const wf of client.workflow.list({ query: RUNNING_COMPACTIONS })) {
    if (taskQueue === undefined || wf.taskQueue === taskQueue) ids.push(wf.workflowId);
  }
  return ids;
}

/**
 * The running compactions of `warehouse` (as their inputs name it), oldest first. A resume started beside
 * them would wait for their lock and then find its plan finished: the operator meant to follow them.
 */
export async function runningCompactionsOf(client: Client, warehouse: string): Promise<{ workflowId: string; input: CompactionRequest }[]> {
  const runs: { workflowId: string; input: CompactionRequest; startTime: Date }[] = [];
  for await (const wf of client.workflow.list({ query: RUNNING_COMPACTIONS })) {
    const input = await startInput(client, wf.workflowId, wf.runId);
    if (input?.warehouse === warehouse) runs.push({ workflowId: wf.workflowId, input, startTime: wf.startTime });
  }
  return runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime()).map(({ workflowId, input }) => ({ workflowId, input }));
}

export interface InterruptedCompaction {
  workflowId: string;
  runId: string;
  status: string;
  taskQueue: string;
  closeTime?: Date;
  input: CompactionRequest;
}

/** temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED. */
const PENDING_ACTIVITY_STATE_STARTED = 2;
/** temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED. */
const PENDING_ACTIVITY_STATE_SCHEDULED = 1;
/** temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED. */
const PENDING_ACTIVITY_STATE_PAUSED = 4;
/** temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_PAUSE_REQUESTED: the attempt runs until its next heartbeat stops it. */
const PENDING_ACTIVITY_STATE_PAUSE_REQUESTED = 5;

/** google.protobuf.Timestamp as the SDK's protos carry it (seconds may be a Long). */
interface Timestamp {
  seconds?: number | { toNumber(): number } | null;
  nanos?: number | null;
}

/** The visibility query of compactions, one run per chain (its last, or the one running). */
export const LAST_RUNS_OF_COMPACTIONS = `WorkflowType = '${COMPACTION_WORKFLOW_TYPE}' AND ExecutionStatus != 'ContinuedAsNew'`;

/** How many of the newest compactions (the last runs of their chains) are looked at: a table whose latest run is further back has had a week of runs since. */
const RECENT_RUNS = 50;

/**
 * The tables whose latest compaction (among the recent ones) that got as far as a plan was terminated or
 * timed out, or failed without rebuilding the table (its rebuild used up its retries: a full disk under
 * catalog.db, say). Such a run could not rebuild the table after its buckets deleted their inputs (a
 * cancelled run does, and so does one failing before its rebuild), so readers fail until a run rebuilds
 * it; operators otherwise learn that from their readers. A later run that stopped before it had a plan
 * (waiting for its lock, or failing on a missing warehouse) compacted nothing, so it decides nothing: the
 * run before it still does.
 */
async function interruptedCompactions(client: Client): Promise<InterruptedCompaction[]> {
  const runs: { workflowId: string; runId: string; status: string; taskQueue: string; closeTime?: Date }[] = [];
  // Visibility lists running executions first, then the closed ones by close time, newest first: the
  // first run seen of a table is the one still running or the last to end. A run that continued as new
  // is never the last of its chain: left in, one 10,000-bucket compaction would fill 13 of the 50.
  for await (const wf of client.workflow.list({ query: LAST_RUNS_OF_COMPACTIONS, pageSize: RECENT_RUNS })) {
    runs.push({ workflowId: wf.workflowId, runId: wf.runId, status: wf.status.name, taskQueue: wf.taskQueue, closeTime: wf.closeTime });
    if (runs.length >= RECENT_RUNS) break;
  }
  // One history call per run, concurrently: 50 round trips to a remote server one after another add up.
  const inputs = await Promise.all(runs.map((run) => startInput(client, run.workflowId, run.runId)));
  const byTable = new Map<string, InterruptedCompaction[]>();
  for (const [i, run] of runs.entries()) {
    const input = inputs[i];
    if (!input || input.dryRun) continue;
    const table = [input.warehouse, input.catalog, input.catalogName, input.namespace, input.table].join('\n');
    byTable.set(table, [...(byTable.get(table) ?? []), { ...run, input }]);
  }
  const found = await Promise.all([...byTable.values()].map((tableRuns) => interruptedRunOf(client, tableRuns)));
  return found.filter((run): run is InterruptedCompaction => run !== undefined);
}

/**
 * Of one table's runs, newest first: the one that left the table stale, if the latest run with a plan did.
 * A run whose plan an earlier run of the list completed is passed over: a `temporal workflow reset` of a
 * finished chain replays its plan and fails as `LockLost`, and the plan's inputs were gone before it started.
 */
async function interruptedRunOf(client: Client, runs: readonly InterruptedCompaction[]): Promise<InterruptedCompaction | undefined> {
  for (const [i, run] of runs.entries()) {
    if (run.status === 'RUNNING' || run.status === 'COMPLETED') return undefined;
    // Only a failed run's own rebuild counts: a terminated or timed-out run was stopped before its end.
    const failed = run.status === 'FAILED';
    const { planned, rebuilt, planId } = await whatRunDid(client, run, failed);
    if (!planned) continue;
    const stale = run.status === 'TERMINATED' || run.status === 'TIMED_OUT' || (failed && !rebuilt);
    if (!stale) return undefined;
    const completed = runs.slice(i + 1).filter((r) => r.status === 'COMPLETED');
    // Such a replay decides nothing: a run before it may still have left the table stale.
    if (planId !== undefined && (await completedPlanRun(client, completed, planId))) continue;
    return run;
  }
  return undefined;
}

/** The first of `runs` (completed ones) whose summary says it finished plan `planId`. */
async function completedPlanRun<T extends { workflowId: string; runId: string }>(client: Client, runs: readonly T[], planId: string): Promise<T | undefined> {
  for (const run of runs) {
    const summary = await completedSummary(client, run);
    if (summary?.dryRun === false && summary.planId === planId) return run;
  }
  return undefined;
}

/** The summary a completed run returned (undefined when it is not a compaction's). */
async function completedSummary(client: Client, run: { workflowId: string; runId: string }): Promise<Partial<CompactionSummary> | undefined> {
  const result: unknown = await client.workflow.getHandle(run.workflowId, run.runId).result();
  return typeof result === 'object' && result !== null ? (result as Partial<CompactionSummary>) : undefined;
}

/**
 * Whether a run had a plan (it was continued from one, its start carrying the walk's state beside the
 * input, or its `planCompaction` or `loadPlan` completed) and, when `rebuildMatters`, whether its own
 * rebuild completed (else the history is read only until the plan: a long run's is thousands of events).
 * A history gone with the namespace's retention counts as planned and not rebuilt: the warning is then
 * kept rather than dropped.
 */
async function whatRunDid(
  client: Client,
  run: { workflowId: string; runId: string },
  rebuildMatters: boolean,
): Promise<{ planned: boolean; rebuilt: boolean; planId?: string }> {
  let planned = false;
  let planId: string | undefined;
  const planSteps = new Set<string>();
  const rebuilds = new Set<string>();
  let nextPageToken: Uint8Array | undefined;
  do {
    const response = await historyPage(client, run.workflowId, run.runId, 200, nextPageToken);
    if (!response) return { planned: true, rebuilt: false };
    for (const event of response.history?.events ?? []) {
      const started = event.workflowExecutionStartedEventAttributes;
      // Only a continuation carries a plan: a run started with a second argument is refused before it plans, as the workflow checks.
      const carried = started?.continuedExecutionRunId ? started.input?.payloads?.[1] : undefined;
      if (carried) {
        planned = true;
        planId = planIdOf((await decodeHistoryPayload<{ plan?: unknown }>(client, carried))?.plan);
      }
      const type = event.activityTaskScheduledEventAttributes?.activityType?.name;
      if (type === 'planCompaction' || type === 'loadPlan') planSteps.add(String(event.eventId));
      if (type === 'rebuildCatalog') rebuilds.add(String(event.eventId));
      const completed = event.activityTaskCompletedEventAttributes?.scheduledEventId;
      if (completed != null && planSteps.has(String(completed))) {
        planned = true;
        planId = planIdOf(await decodeHistoryPayload(client, event.activityTaskCompletedEventAttributes?.result?.payloads?.[0]));
      }
      if (planned && !rebuildMatters) return { planned, rebuilt: false, planId };
      if (completed != null && rebuilds.has(String(completed))) return { planned, rebuilt: true, planId };
    }
    nextPageToken = response.nextPageToken?.length ? response.nextPageToken : undefined;
  } while (nextPageToken);
  return { planned, rebuilt: false, planId };
}

/** The `planId` of a plan step's result or a continued run's carried plan, as recorded (undefined when it has none). */
function planIdOf(plan: unknown): string | undefined {
  const id = (plan as { planId?: unknown } | undefined)?.planId;
  return typeof id === 'string' ? id : undefined;
}

/** A page of a run's history; undefined when it is gone (a closed run's history goes at the end of the namespace's retention, possibly before its listing). */
async function historyPage(client: Client, workflowId: string, runId: string, maximumPageSize: number, nextPageToken?: Uint8Array) {
  return client.workflowService
    .getWorkflowExecutionHistory({ namespace: client.options.namespace, execution: { workflowId, runId }, maximumPageSize, nextPageToken })
    .catch((err: unknown) => {
      if (isGrpcServiceError(err) && err.code === GRPC_NOT_FOUND) return undefined;
      throw err;
    });
}

/**
 * Whether a worker ever completed a workflow task of the run: one that none did ran none of its code, so
 * it asked for no lock and made no plan, and terminating it leaves nothing behind. (A run that continued
 * as new had its first task completed by the run before.)
 */
export async function everServed(client: Client, workflowId: string, runId: string): Promise<boolean> {
  const events = (await historyPage(client, workflowId, runId, 20))?.history?.events ?? [];
  return events.some((e) => e.workflowTaskCompletedEventAttributes != null || e.workflowExecutionStartedEventAttributes?.continuedExecutionRunId);
}

/** The input a run was started with; undefined when it is not a compaction input (another tool's workflow type of the same name). */
export async function startInput(client: Client, workflowId: string, runId: string): Promise<CompactionRequest | undefined> {
  const history = (await historyPage(client, workflowId, runId, 1))?.history;
  const payload = history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  if (!payload) return undefined;
  const parsed = compactionInputSchema.safeParse(await decodeHistoryPayload(client, payload));
  return parsed.success ? parsed.data : undefined;
}

/**
 * How a run that ended without completing ended, said the same way by `status --watch` and `cancel`: why
 * (as `compact` would have said it; its status when the server gives no reason) and what it left, joined
 * as the `error` of its last line.
 */
export async function howItEnded(
  client: Client,
  handle: WorkflowHandle,
  run: { workflowId: string; runId: string; taskQueue: string },
  status: string,
  connection: readonly string[],
): Promise<{ why: string; outcome: RunOutcome; error: string }> {
  const why = (await whyItEnded(handle)) ?? status;
  const outcome = await stoppedRunOutcome(client, run, connection);
  return { why, outcome, error: `${why}; ${outcome.text}` };
}

/** Why an ended run did not complete, as `compact` would have said it; undefined for a completed one. */
function whyItEnded(handle: WorkflowHandle): Promise<string | undefined> {
  return handle.result().then(
    () => undefined,
    (err: unknown) => describeWorkflowError(err),
  );
}

export interface FailingSchedule {
  scheduleId: string;
  paused: boolean;
  workflowId: string;
  status: string;
  closeTime?: Date;
  error?: string;
}

/**
 * Compaction schedules whose latest run failed or timed out. A schedule whose target changed after it
 * was created (a table bucket deleted, a warehouse moved) fails every week before it plans, which the
 * warning of stale tables passes over (such a run compacted nothing), and nobody watches a weekly run.
 */
async function failingSchedules(client: Client): Promise<FailingSchedule[]> {
  const latest: { scheduleId: string; paused: boolean; workflowId: string }[] = [];
  for await (const s of client.schedule.list()) {
    if (s.action?.workflowType !== COMPACTION_WORKFLOW_TYPE) continue;
    const last = s.info.recentActions[s.info.recentActions.length - 1];
    if (last) latest.push({ scheduleId: s.scheduleId, paused: s.state.paused, workflowId: last.action.workflow.workflowId });
  }
  const found = await Promise.all(
    latest.map(async ({ scheduleId, paused, workflowId }): Promise<FailingSchedule | undefined> => {
      // The id, not the run: a run that continued as new goes on under it, and its chain's last run tells.
      const handle = client.workflow.getHandle(workflowId);
      // Gone with the namespace's retention: nothing to tell.
      const desc = await handle.describe().catch((err: unknown) => {
        if (err instanceof WorkflowNotFoundError) return undefined;
        throw err;
      });
      if (!desc || (desc.status.name !== 'FAILED' && desc.status.name !== 'TIMED_OUT')) return undefined;
      // Followed up since (the cause fixed, a run by hand): the schedule's next run tells whether it is gone.
      const input = await startInput(client, workflowId, desc.runId).catch(() => undefined);
      const later = input && (await completedRunAfter(client, { workflowId, runId: desc.runId }, input.warehouse, undefined, input).catch(() => undefined));
      if (later && !later.before) return undefined;
      const error = await whyItEnded(handle);
      return { scheduleId, paused, workflowId, status: desc.status.name, closeTime: desc.closeTime, error };
    }),
  );
  return found.filter((f): f is FailingSchedule => f !== undefined);
}

/**
 * One of `status`'s warnings: its text, and for scripts (`--json`: one JSON object per line on stderr,
 * stdout keeping the list of running runs) what it is about and the command that acts on it.
 */
export interface StatusWarning {
  kind: 'stale-table' | 'failing-schedule' | 'not-checked';
  message: string;
  workflowId?: string;
  warehouse?: string;
  /** The stale table: a warehouse may have tables in more than one catalog, or several in one. */
  catalog?: string;
  namespace?: string;
  table?: string;
  /** Only when not the default (earthcatalog): a catalog.db may hold the tables of several catalog names. */
  catalogName?: string;
  scheduleId?: string;
  /** What finishes or rebuilds the stale table (resume or compact), or shows the schedule's failed run. */
  command?: string;
}

export function warningLine(w: StatusWarning, json: boolean): string {
  if (!json) return w.message;
  const { kind, message, ...about } = w;
  return JSON.stringify({ warning: kind, message, ...about });
}

function failingScheduleWarning(f: FailingSchedule, connection: string[]): StatusWarning {
  const when = f.closeTime ? ` at ${f.closeTime.toISOString()}` : '';
  const command = `earthcatalog-compact status ${workflowArgs(f.workflowId, connection)}`;
  return {
    kind: 'failing-schedule',
    message:
      `warning: the latest run of schedule ${f.scheduleId}, ${f.workflowId}, ${f.status}${when}${f.error ? `: ${f.error}` : ''}; ` +
      `${f.paused ? 'the schedule is paused' : 'the schedule starts its next run as planned'} (details: ${command})`,
    workflowId: f.workflowId,
    scheduleId: f.scheduleId,
    command,
  };
}

/**
 * `error`: why the run failed or timed out; `schedule`: the schedule whose latest run it is; `later`: a run
 * of another table of the warehouse that completed since, whose newer plan leaves no resume of this one.
 */
export function interruptedWarning(
  run: InterruptedCompaction,
  connection: string[],
  error?: string,
  schedule?: FailingSchedule,
  later?: { workflowId: string; closeTime: string },
): StatusWarning {
  const i = run.input;
  const when = run.closeTime ? ` at ${run.closeTime.toISOString()}` : '';
  const of = schedule ? ` (the latest run of schedule ${schedule.scheduleId}, which ${schedule.paused ? 'is paused' : 'starts its next run as planned'})` : '';
  // With --use-lock the run's lock object also stays, and the Python pipeline honours it until it expires.
  const lockObject = i.useLock ? ', and the Python pipeline waits for its lock object until it expires or a resume with --use-lock ends' : '';
  const command = later ? compactCommand(i, run.taskQueue, connection) : resumeCommand(i, run.taskQueue, connection);
  const message =
    `warning: the latest compaction of ${i.warehouse}, ${run.workflowId}${of}, was ${run.status}${when}${error ? ` (${error})` : ''}: if it had compacted ` +
    `buckets, the table ${i.namespace}.${i.table} in ${i.catalog} lists files they deleted until a run rebuilds it${lockObject}. ` +
    (later
      ? `A run of the warehouse for another table, ${later.workflowId}, completed at ${later.closeTime} with a newer plan, so no resume finishes this one: ` +
        `${error ? 'once that is fixed, rebuild' : 'rebuild'} this table with ${command}`
      : `${error ? 'Once that is fixed, finish' : 'Finish'} it: ${command}`);
  return { kind: 'stale-table', message, workflowId: run.workflowId, warehouse: i.warehouse, catalog: i.catalog, namespace: i.namespace, table: i.table, ...(i.catalogName !== DEFAULT_CATALOG_NAME ? { catalogName: i.catalogName } : {}), ...(schedule ? { scheduleId: schedule.scheduleId } : {}), command };
}

/**
 * The command that finishes a run started with `input`, reaching the same server, namespace and task
 * queue (`connection`: the flags the operator gave). `planId` pins the plan (else the input's own pin, if any).
 */
export function resumeCommand(input: CompactionRequest, taskQueue: string, connection: readonly string[], planId?: string): string {
  return `earthcatalog-compact resume ${runFlags(input, taskQueue, connection, planId ?? (input.resumePlanId !== 'latest' ? input.resumePlanId : undefined)).join(' ')}`;
}

/** The command that rebuilds the table of `input` through a new compaction of its warehouse: what is left when no plan is there to resume. */
export function compactCommand(input: CompactionRequest, taskQueue: string, connection: readonly string[]): string {
  return `earthcatalog-compact ${runFlags(input, taskQueue, connection).join(' ')}`;
}

function runFlags(input: CompactionRequest, taskQueue: string, connection: readonly string[], plan?: string): string[] {
  const flags = [`--warehouse ${shellWord(input.warehouse)}`, `--catalog ${shellWord(input.catalog)}`];
  if (plan) flags.push(`--plan ${plan}`);
  if (input.namespace !== DEFAULT_NAMESPACE) flags.push(`--iceberg-namespace ${input.namespace}`);
  if (input.table !== DEFAULT_TABLE) flags.push(`--table ${input.table}`);
  if (input.catalogName !== DEFAULT_CATALOG_NAME) flags.push(`--catalog-name ${input.catalogName}`);
  if (input.useLock) flags.push('--use-lock');
  if (input.pipelineLock) flags.push(`--pipeline-lock ${shellWord(input.pipelineLock)}`);
  // How the run went, not what it does: a resume left at the defaults would crawl at 4 buckets, or wait forever.
  if (input.maxParallelBuckets !== DEFAULT_MAX_PARALLEL_BUCKETS) flags.push(`--max-parallel ${input.maxParallelBuckets}`);
  if (input.lockTimeoutSeconds !== undefined) flags.push(`--lock-timeout ${input.lockTimeoutSeconds}`);
  flags.push(...connection);
  if (taskQueue !== DEFAULT_TASK_QUEUE) flags.push(`--task-queue ${shellWord(taskQueue)}`);
  return flags;
}

/** What a run that stopped before it had a plan left. */
const NOTHING_PLANNED = 'it stopped before it made or loaded a plan, so it compacted nothing: there is nothing to resume';

/** What a stopped run left: said in a sentence, and for scripts its plan and the command that finishes its table (when there is one). */
export interface RunOutcome {
  text: string;
  planId?: string;
  command?: string;
}

/**
 * What a run that ended without completing (cancelled, terminated, timed out, or failed: a rebuild that
 * used up its retries, say) left, said the same way by `cancel`, `compact` and `status --watch`: `N of M buckets done` and the command that finishes its plan, or that there is
 * nothing to finish (stopped before it planned, or a dry run, which stores no plan). The progress comes from a query of the closed
 * run, which a worker answers by replaying it; without an answer it can only say what resume would do.
 */
export async function stoppedRunOutcome(
  client: Client,
  run: { workflowId: string; runId: string; taskQueue: string },
  connection: readonly string[],
): Promise<RunOutcome> {
  const input = await startInput(client, run.workflowId, run.runId).catch(() => undefined);
  // Its history read to the end without a plan step that completed: nothing to finish, whatever a query
  // would say. Not asked of the worker either: a run refused at its input ends before it answers queries
  // (and one refused by an earlier release replays as nondeterministic on this one). A resume is left to
  // the query below, as its plan may still be there to finish.
  const did = await whatRunDid(client, run, false).catch(() => undefined);
  if (did && !did.planned && !input?.resumePlanId) return { text: NOTHING_PLANNED };
  const p = await queryProgress(client.workflow.getHandle(run.workflowId));
  if (!p) {
    // The worker died with the run, most likely: its history still holds its input and its plan.
    const planId = input && !input.dryRun ? did?.planId : undefined;
    if (!input || !planId) return { text: 'if it had made a plan, resume finishes it (no worker answered for its progress)' };
    return finishingCommand(client, run, connection, input, planId, `no worker answered for its progress, so how many buckets are done is not known; its plan is ${planId}`);
  }
  if (!p.planId) {
    // A resume stopped before it loaded its plan (its pre-flight failed, say) leaves that plan to finish,
    // unless it was refused because there is no plan left to finish.
    if (input?.resumePlanId) {
      if (!(await failedOnItsPlan(client, run))) {
        const command = resumeCommand(input, run.taskQueue, connection);
        return { text: `it stopped before it loaded its plan, so this resume compacted nothing; once what stopped it is fixed, run it again: ${command}`, command };
      }
      // Refused for want of a plan (its error names the finished one): another run may have finished the
      // warehouse's plan for another table, leaving this one stale.
      const command = compactCommand(input, run.taskQueue, connection);
      return { text: `this resume found nothing to finish, so it compacted nothing; a compaction rebuilds this table from the files as they are: ${command}`, command };
    }
    return { text: NOTHING_PLANNED };
  }
  const done = bucketsDone(p);
  const planId = p.planId;
  if (input?.dryRun) return { text: `${done}; a dry run stores no plan: there is nothing to resume`, planId };
  return finishingCommand(client, run, connection, input, planId, done);
}

/** The rest of stoppedRunOutcome for a run with plan `planId`: the command that finishes it, unless nothing can or needs to. */
async function finishingCommand(
  client: Client,
  run: { workflowId: string; runId: string; taskQueue: string },
  connection: readonly string[],
  input: CompactionRequest | undefined,
  planId: string,
  done: string,
): Promise<RunOutcome> {
  if (await failedOnItsPlan(client, run)) {
    // A resume would read the same missing or damaged page and fail the same way.
    return { text: `${done}; its plan ${planId} cannot be read, so a resume cannot finish it: start a new compaction of the warehouse instead (what this run left are ordinary data files to the next plan)`, planId };
  }
  // Watched long after it stopped, the run may have been followed up already; its resume would then be refused.
  const later = input ? await completedRunAfter(client, run, input.warehouse, planId).catch(() => undefined) : undefined;
  if (later) {
    const what = later.planId === planId ? 'finished its plan' : `made a newer plan, ${later.planId}, and completed`;
    return { text: `${done}; ${later.before ? 'an earlier' : 'a later'} run, ${later.workflowId}, ${what} at ${later.closeTime}: there is nothing to resume`, planId };
  }
  const command = input ? resumeCommand(input, run.taskQueue, connection, planId) : `earthcatalog-compact resume --warehouse … --catalog … --plan ${planId}`;
  const running = input ? (await runningCompactionsOf(client, input.warehouse).catch(() => [])).filter((r) => r.workflowId !== run.workflowId) : [];
  const resuming = running.find((r) => r.input.resumePlanId === planId);
  if (resuming) {
    return { text: `${done}; ${resuming.workflowId}, a resume of this plan, is running and finishes it (follow it: earthcatalog-compact status --watch ${workflowArgs(resuming.workflowId, connection)})`, planId };
  }
  // A run of the warehouse that waited for this one's lock takes it now and plans anew: that plan, not this
  // one, is then the one to finish, and the resume would be refused as older. A dry run writes no plan.
  const others = running.filter((r) => !r.input.dryRun).map((r) => r.workflowId);
  if (others.length) {
    const who = others.length === 1 ? `${others[0]} is` : `${others.join(', ')} are`;
    return {
      text: `${done}; ${who} running on the same warehouse (waiting for its lock, or compacting): it plans anew and compacts what is left, after which this plan can no longer be resumed; only if it is cancelled before it plans, finish this one with ${command}`,
      planId,
      command,
    };
  }
  return { text: `${done}; finish it with ${command}`, planId, command };
}

/** Whether `run` failed because a file of its plan is missing or damaged (PlanNotFound anywhere in the failure's causes). */
async function failedOnItsPlan(client: Client, run: { workflowId: string; runId: string }): Promise<boolean> {
  const failure = await client.workflow.getHandle(run.workflowId, run.runId).result().then(
    () => undefined,
    (err: unknown) => err,
  );
  for (let e: unknown = failure; e instanceof Error; e = e.cause) {
    if (e instanceof ApplicationFailure && e.type === FailureTypes.planNotFound) return true;
  }
  return false;
}

/**
 * Among the recent compactions of `warehouse` (and of `table`'s table, when given) that completed (not as a dry run): the newest one that
 * completed after `run` stopped, or one that finished `run`'s plan `planId` before it (`before`: `run` is
 * a `temporal workflow reset` of a finished chain). It either finished that plan or made a newer one,
 * which took the plan's files as inputs: either way `resume` of the stopped run's plan has nothing left to do.
 */
async function completedRunAfter(
  client: Client,
  run: { workflowId: string; runId: string },
  warehouse: string,
  planId?: string,
  table?: Pick<CompactionRequest, 'catalog' | 'catalogName' | 'namespace' | 'table'>,
): Promise<{ workflowId: string; planId: string; closeTime: string; before: boolean } | undefined> {
  const stoppedAt = (await client.workflow.getHandle(run.workflowId, run.runId).describe()).closeTime;
  if (!stoppedAt) return undefined;
  const completed: WorkflowExecutionInfo[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowType = '${COMPACTION_WORKFLOW_TYPE}' AND ExecutionStatus = 'Completed'`, pageSize: RECENT_RUNS })) {
    completed.push(wf);
    if (completed.length >= RECENT_RUNS) break;
  }
  // Concurrently, as for the runs' inputs (`status` asks this for every interrupted table); a run whose
  // result cannot be read (its history past retention) is passed over.
  const summaries = await Promise.all(completed.map((wf) => completedSummary(client, wf).catch(() => undefined)));
  for (const [i, wf] of completed.entries()) {
    const closeTime = wf.closeTime ?? stoppedAt;
    const before = closeTime <= stoppedAt;
    const summary = summaries[i];
    if (summary?.warehouse !== warehouse || summary.dryRun !== false || typeof summary.planId !== 'string') continue;
    if (table && !(summary.catalog === table.catalog && (await sameTable(client, wf, table)))) continue;
    if (!before || summary.planId === planId) return { workflowId: wf.workflowId, planId: summary.planId, closeTime: closeTime.toISOString(), before };
  }
  return undefined;
}

/** Whether `run` was started for `table` (its catalog, catalog name, namespace and table name). */
async function sameTable(client: Client, run: { workflowId: string; runId: string }, table: Pick<CompactionRequest, 'catalog' | 'catalogName' | 'namespace' | 'table'>): Promise<boolean> {
  const input = await startInput(client, run.workflowId, run.runId);
  return input !== undefined && input.catalog === table.catalog && input.catalogName === table.catalogName && input.namespace === table.namespace && input.table === table.table;
}

/** `N of M buckets done` (and how many of them failed: a bucket that failed is done too), as every command says it of an ended run. */
export function bucketsDone(p: Pick<CompactionProgress, 'bucketsDone' | 'bucketsTotal'> & { bucketsFailed?: number }): string {
  return `${p.bucketsDone} of ${p.bucketsTotal} buckets done${p.bucketsFailed ? ` (${p.bucketsFailed} failed)` : ''}`;
}

/** The flags that reach the server and namespace the operator named (none for the defaults). */
export function connectionFlagsOf(values: { address?: string; namespace?: string }): string[] {
  return [values.address && `--address ${shellWord(values.address)}`, values.namespace && `--namespace ${shellWord(values.namespace)}`].filter(
    (f): f is string => Boolean(f),
  );
}

/**
 * Polls the run about once a second until it has closed (calling `onPoll` after each look); its final
 * status. Waits through an outage of the server, saying so on stderr once per outage.
 */
export async function waitUntilClosed(handle: WorkflowHandle, onPoll?: () => Promise<void>): Promise<string> {
  const giveUp = `stopped waiting; ${handle.workflowId} goes on once the server is back`;
  const onLost = (error: string) =>
    console.error(`earthcatalog-compact: the Temporal server does not answer (${error}); still waiting for ${handle.workflowId} (up to ${OUTAGE_LIMIT_MS / 60_000} minutes)`);
  for (;;) {
    const status = (await throughOutages(() => handle.describe(), { giveUp, onLost })).status.name;
    await onPoll?.();
    if (status !== 'RUNNING') return status;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Follows one run to its end: a progress bar, or with `json` one JSON line per change of its progress and one for its end. */
async function watch(client: Client, workflowId: string, json: boolean, connection: readonly string[]): Promise<number> {
  const handle = client.workflow.getHandle(workflowId);
  const bar = json ? undefined : createProgressRenderer(process.stdout);
  let last = '';
  // As `compact` does: a run whose worker died answers no query, and a silent watch looks hung.
  let answeredAt = Date.now();
  let told = false;
  const status = await waitUntilClosed(handle, async () => {
    const answer = await tryQueryProgress(handle);
    if (!('progress' in answer)) {
      if (told || Date.now() - answeredAt < NO_ANSWER_MS) return;
      told = true;
      const taskQueue = (await handle.describe().catch(() => undefined))?.taskQueue;
      if (!taskQueue) return;
      const notice = await unansweredNotice(client, workflowId, taskQueue, answer.error, connection);
      // Above the bar on a terminal; piped, stdout keeps only the run's progress.
      if (bar && process.stdout.isTTY) bar.note(notice);
      else console.error(notice);
      return;
    }
    answeredAt = Date.now();
    told = false;
    const { progress } = answer;
    bar?.update(progress);
    const line = JSON.stringify({ workflowId, status: 'RUNNING', progress });
    if (json && line !== last) console.log((last = line));
  });
  bar?.finish();
  // Why it did not complete, as the compact command would have said it.
  let error: string | undefined;
  let outcome: RunOutcome | undefined;
  if (status === 'CANCELLED' || status === 'TERMINATED' || status === 'TIMED_OUT' || status === 'FAILED') {
    const { runId, taskQueue } = await handle.describe();
    ({ error, outcome } = await howItEnded(client, handle, { workflowId, runId, taskQueue }, status, connection));
  } else if (status !== 'COMPLETED') {
    error = await whyItEnded(handle);
  }
  console.log(json ? endedLine(workflowId, status, error, outcome) : `${workflowId} ${status}${error ? `: ${error}` : ''}`);
  return status === 'COMPLETED' ? 0 : 1;
}

/**
 * The JSON line that ends a followed run (`status --watch --json`, `compact --json` of a run that did not
 * complete, `cancel --json`); `flags` says what `cancel` did not wait for.
 */
export function endedLine(workflowId: string, status: string, error?: string, outcome?: RunOutcome, flags?: { alreadyEnded?: true; cancelRequested?: true }): string {
  return JSON.stringify({
    workflowId,
    status,
    ...flags,
    ...(error ? { error } : {}),
    ...(outcome?.planId ? { planId: outcome.planId } : {}),
    ...(outcome?.command ? { command: outcome.command } : {}),
  });
}

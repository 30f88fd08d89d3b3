/**
 * How bucket errors become Temporal failures: which are retried and which stop at once. The errors
 * themselves are caused for real in compact-bucket.test.ts (a real DuckDB out-of-memory, real bad
 * files); here only the attempt number and the previous attempt's heartbeat details come from the
 * SDK's MockActivityEnvironment, the parts of an activity's context this classification reads. That
 * the real server hands the next attempt the details heartbeated just before a failure is checked on a
 * dev server.
 * Local listing errors are synthetic errno errors: EIO or ESTALE cannot be caused on purpose here (and root ignores permissions).
 */
import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { ActivityCancellationDetails, ActivityFailure, ApplicationFailure, RetryState } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger, type LogEntry } from '@temporalio/worker';
import { oneLineEntry, WorkerLogger } from '../worker/worker';
import { toActivityFailure, createActivities, memoryFailuresBefore } from '../activities';
import { BadBucketDataError, BucketMemoryError, InputsChangedError, InvalidBucketRequestError, OtherPlanOutputError } from '../activities/compaction/bucket-errors';
import { FailureTypes, MAX_FAILURE_REASON_CHARS, capFailureReason, type BucketResult } from '../workflows/contract';
import { MAX_REPORTED_FAILURES } from '../workflows/compact-warehouse';
import { listingError } from '../activities/storage/local-store';
import { startProbeWorker, startTemporal, uniqueTaskQueue } from './helpers/temporal';
import { makeTempDir } from './helpers/temp-dirs';
import { bucketRequest, makeTinyWarehouse } from './helpers/warehouse-fixtures';

const oom = () => new BucketMemoryError('grid_partition=x/year=2020', 256, 8, 1_086_000_000, 'Out of Memory Error: could not allocate block');

async function failureAt(attempt: number, err: Error, heartbeatDetails?: unknown): Promise<{ failure: ApplicationFailure; heartbeats: unknown[] }> {
  const env = new MockActivityEnvironment({ attempt, heartbeatDetails });
  const heartbeats: unknown[] = [];
  env.on('heartbeat', (d: unknown) => heartbeats.push(d));
  const failure = await env.run(async () => toActivityFailure(err));
  assert.ok(failure instanceof ApplicationFailure, `${err.name} becomes an ApplicationFailure`);
  return { failure, heartbeats };
}

test('running out of memory is retried once, then fails the bucket with the budget advice', async () => {
  const first = await failureAt(1, oom());
  assert.equal(first.failure.type, FailureTypes.memoryBudget);
  assert.equal(first.failure.nonRetryable, false);
  assert.deepEqual(first.heartbeats, [{ phase: 'out-of-memory', memoryFailures: 1 }], 'the count goes to the next attempt');
  const second = await failureAt(2, oom(), first.heartbeats.at(-1));
  assert.equal(second.failure.type, FailureTypes.memoryBudget);
  assert.equal(second.failure.nonRetryable, true);
  assert.match(second.failure.message, /^bucket grid_partition=x\/year=2020: DuckDB ran out of its 256 MB memory limit .* 8 input\(s\) of 1036 MB; nothing was deleted\. Give the workers a larger --memory-budget-mb/);
});

test('a first out-of-memory after attempts that failed another way is still retried', async () => {
  // Attempts 1 and 2 died otherwise (a worker killed mid-bucket, S3 down): their details hold progress only.
  const third = await failureAt(3, oom(), { phase: 'dedup', filesIn: 8 });
  assert.equal(third.failure.nonRetryable, false);
  const fourth = await failureAt(4, oom(), third.heartbeats.at(-1));
  assert.equal(fourth.failure.nonRetryable, true);
  assert.equal(memoryFailuresBefore(undefined), 0);
  assert.equal(memoryFailuresBefore({ memoryFailures: '1' }), 0, 'malformed details count nothing');
});

test('a bucket attempt after an out-of-memory carries the count in every heartbeat, so a failure of another kind in between does not reset it', async () => {
  const fx = await makeTinyWarehouse('oom-carry', 1);
  const activities = createActivities({ scratchDir: await makeTempDir('ec-oom-carry-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 });
  const env = new MockActivityEnvironment({ attempt: 2, heartbeatDetails: { phase: 'out-of-memory', memoryFailures: 1 } });
  const heartbeats: unknown[] = [];
  env.on('heartbeat', (d: unknown) => heartbeats.push(d));
  const result: BucketResult = await env.run(activities.compactBucket, await bucketRequest(fx.warehouse, 'cell00000', 2015, 'oom-carry'));
  assert.equal(result.outcome, 'compacted');
  assert.ok(heartbeats.length >= 2, `heartbeats: ${JSON.stringify(heartbeats)}`);
  for (const h of heartbeats) assert.equal((h as { memoryFailures?: number }).memoryFailures, 1, JSON.stringify(h));
});

test("a bucket attempt stopped by its run's end (the server no longer knows it) says so in the worker's log, naming the bucket and the phase", async () => {
  const fx = await makeTinyWarehouse('stopped-logged', 1);
  const activities = createActivities({ scratchDir: await makeTempDir('ec-stopped-logged-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 });
  const logged: string[] = [];
  const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('INFO', (entry) => void logged.push(entry.message)) });
  // What a heartbeat of an attempt whose run was terminated is answered with.
  env.on('heartbeat', (d: unknown) => {
    if ((d as { phase?: string }).phase === 'dedup') env.cancel('NOT_FOUND', new ActivityCancellationDetails({ notFound: true }));
  });
  await assert.rejects(env.run(activities.compactBucket, await bucketRequest(fx.warehouse, 'cell00000', 2015, 'stopped-logged')));
  const line = logged.find((m) => m.includes(' stopped in phase '));
  assert.match(line ?? logged.join('\n'), /^bucket grid_partition=cell00000\/year=2015 stopped in phase dedup by the server no longer knowing the attempt \(its run terminated, reset or timed out, or the attempt's own timeout passed\)$/);
});

test('on a dev server the next attempt sees the count: an out-of-memory after another failure is retried, the second one is not', async () => {
  const h = await startTemporal();
  const taskQueue = uniqueTaskQueue('oom-count');
  const attempts: string[] = [];
  const worker = await startProbeWorker(h, taskQueue, {
    async flakyBucket(): Promise<void> {
      const { attempt } = Context.current().info;
      if (attempt === 1) {
        attempts.push('lost');
        throw new Error('connection reset while reading an input');
      }
      attempts.push('oom');
      throw toActivityFailure(oom());
    },
  });
  try {
    const result = await h.client.workflow.execute('retryProbe', { taskQueue, workflowId: `oom-count-${Date.now()}` });
    assert.deepEqual(result, { failureType: FailureTypes.memoryBudget });
    assert.deepEqual(attempts, ['lost', 'oom', 'oom'], 'one retry after the first out-of-memory, none after the second');
  } finally {
    await worker.stop();
    await h.stop();
  }
});

test('bad data and malformed requests stop at the first attempt; other errors are left to the retry policy', async () => {
  assert.equal((await failureAt(1, new BadBucketDataError('bad', ['k']))).failure.nonRetryable, true);
  assert.equal((await failureAt(1, new InvalidBucketRequestError('malformed'))).failure.type, FailureTypes.invalidInput);
  // Routine beside an ingest: retried, and logged as one line, not as an unexpected error with its stack.
  const changed = (await failureAt(1, new InputsChangedError('grid_partition=x/year=2020', [], ['grid_partition=x/year=2020/part_1.parquet']))).failure;
  assert.deepEqual([changed.type, changed.nonRetryable], [FailureTypes.inputsChanged, false]);
  assert.match(changed.message, /1 planned input\(s\) were rewritten while being read \(grid_partition=x\/year=2020\/part_1\.parquet\); retry to resume$/);
  // Another plan's output in the bucket: no attempt of this plan can take it in, the next run's plan does.
  const beside = (await failureAt(1, new OtherPlanOutputError('grid_partition=x/year=2020', ['grid_partition=x/year=2020/compacted_p0.parquet']))).failure;
  assert.deepEqual([beside.type, beside.nonRetryable], [FailureTypes.otherPlanOutput, true]);
  const other = new Error('connection reset');
  assert.equal(await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(other)), other);
});

test("the worker logs a classified failure as one line, an unexpected error with its stack, no line with the task token, and webpack's bundle report only at DEBUG", async () => {
  const entries: LogEntry[] = [];
  const logger = new WorkerLogger('INFO', (e) => entries.push(e));
  // The attributes the SDK puts on every activity log line (activity.js activityLogAttributes).
  const attrs = { attempt: 1, namespace: 'default', taskToken: 'Y29tcGxldGVzIHRoZSBhY3Rpdml0eQ==', activityType: 'compactBucket', workflowId: 'w' };
  const { failure } = await failureAt(1, new BadBucketDataError('grid_partition=x/year=2020/a.parquet has no id column', ['grid_partition=x/year=2020/a.parquet']));
  const unexpected = new TypeError('cannot read properties of undefined');
  logger.warn('Activity failed', { ...attrs, error: failure, durationMs: 12 });
  logger.warn('Activity failed', { ...attrs, error: unexpected, durationMs: 12 });
  logger.warn('plan pages left', attrs);
  // A run ended by a failed activity: the SDK's workflow log line carries the ActivityFailure around it.
  const runAttrs = { namespace: 'default', workflowId: 'w', workflowType: 'compactWarehouse' };
  logger.warn('Workflow failed', { ...runAttrs, error: new ActivityFailure('Activity task failed', 'planCompaction', '4', RetryState.NON_RETRYABLE_FAILURE, 'worker', failure) });
  logger.warn('Workflow failed', { ...runAttrs, error: ApplicationFailure.nonRetryable('the lock is no longer held by this run', FailureTypes.lockLost) });
  // As a worker's workflow thread hands it over: plain Errors, the failure's class and type left behind.
  logger.warn('Workflow failed', { ...runAttrs, error: new Error('Activity task failed', { cause: new Error('warehouse /nowhere does not exist\n    at toActivityFailure') }) });
  // What the SDK's bundler logs at a worker's start: webpack's multi-line report, then one line of its own.
  logger.info('asset workflow-bundle-3f2a.js 1.37 MiB [emitted] (name: main)\nruntime modules 937 bytes 4 modules\nwebpack 5.104.1 compiled successfully in 1893 ms');
  logger.info('\x1b[1m\x1b[32masset workflow-bundle-3f2a.js\x1b[39m\x1b[22m 1.37 MiB [emitted]');
  logger.info('Workflow bundle created', { size: '1.37MB' });
  assert.equal(entries.length, 7, 'webpack report below INFO, with or without colours');
  assert.equal(entries[6]!.message, 'Workflow bundle created');
  entries.pop();
  assert.equal(entries[3]!.meta?.error, `${failure.type} (not retried): grid_partition=x/year=2020/a.parquet has no id column (in activity planCompaction)`);
  assert.equal(entries[4]!.meta?.error, `${FailureTypes.lockLost} (not retried): the lock is no longer held by this run`);
  assert.equal(entries[5]!.meta?.error, 'Activity task failed: warehouse /nowhere does not exist');
  assert.deepEqual(entries[0]!.meta, {
    attempt: 1, namespace: 'default', activityType: 'compactBucket', workflowId: 'w', durationMs: 12,
    error: `${failure.type} (not retried): grid_partition=x/year=2020/a.parquet has no id column`,
  });
  assert.equal(entries[1]!.meta?.error, unexpected, 'an error nobody classified keeps its stack');
  for (const e of entries) assert.equal(e.meta?.taskToken, undefined);
  assert.equal(entries[2]!.meta?.activityType, 'compactBucket');
});

test("the core's own warnings: one per message every 30 s with a count of those left out, per run, and a gRPC status as its message and code", () => {
  mock.timers.enable({ apis: ['Date'], now: 1_800_000_000_000 });
  try {
    const entries: LogEntry[] = [];
    const logger = new WorkerLogger('INFO', (e) => entries.push(e));
    const dump = 'Status { code: Unavailable, message: "tcp connect error", source: Some(tonic::transport::Error(Transport, ConnectError)), details: b"\\x08" }';
    const core = { sdkComponent: 'core', target: 'temporalio_client::retry', spanContexts: undefined };
    logger.warn('gRPC call poll_activity_task_queue retried 6 times', { ...core, error: dump });
    logger.warn('gRPC call poll_activity_task_queue retried 7 times', { ...core, error: dump });
    logger.warn('gRPC call poll_workflow_task_queue retried 6 times', { ...core, error: dump });
    mock.timers.tick(29_000);
    logger.warn('gRPC call poll_activity_task_queue retried 8 times', { ...core, error: dump });
    mock.timers.tick(2_000);
    logger.warn('gRPC call poll_activity_task_queue retried 9 times', { ...core, error: dump });
    logger.warn('Failing workflow task', { sdkComponent: 'core', runId: 'run-1', failure: 'x' });
    logger.warn('Failing workflow task', { sdkComponent: 'core', runId: 'run-2', failure: 'x' });
    logger.warn('Failing workflow task', { sdkComponent: 'core', runId: 'run-1', failure: 'x' });
    logger.warn(`Error when recording heartbeat: ${dump}`, { sdkComponent: 'core' });
    assert.deepEqual(
      entries.map((e) => [e.message, e.meta]),
      [
        ['gRPC call poll_activity_task_queue retried 6 times', { sdkComponent: 'core', target: 'temporalio_client::retry', error: 'tcp connect error (Unavailable)' }],
        ['gRPC call poll_workflow_task_queue retried 6 times', { sdkComponent: 'core', target: 'temporalio_client::retry', error: 'tcp connect error (Unavailable)' }],
        ['gRPC call poll_activity_task_queue retried 9 times', { sdkComponent: 'core', target: 'temporalio_client::retry', error: 'tcp connect error (Unavailable)', repeated: '2 more like it in the last 31 s' }],
        ['Failing workflow task', { sdkComponent: 'core', runId: 'run-1', failure: 'x' }],
        ['Failing workflow task', { sdkComponent: 'core', runId: 'run-2', failure: 'x' }],
        ['Error when recording heartbeat: tcp connect error (Unavailable)', { sdkComponent: 'core' }],
      ],
    );
  } finally {
    mock.timers.reset();
  }
});

test('a log entry is one line on stderr without colour codes (the SDK core colours some warnings)', () => {
  const written: string[] = [];
  const write = mock.method(process.stderr, 'write', (chunk: string | Uint8Array) => written.push(String(chunk)) > 0);
  try {
    oneLineEntry({
      level: 'WARN',
      timestampNanos: 1_800_000_000_000n * 1_000_000n,
      message: '\x1b[33m[TMPRL1104]\x1b[0m Workflow task duration exceeded 5 seconds',
      meta: { sdkComponent: 'core', workflowId: 'w' },
    });
  } finally {
    write.mock.restore();
  }
  assert.deepEqual(written, ["2027-01-15T08:00:00.000Z [WARN] [TMPRL1104] Workflow task duration exceeded 5 seconds { sdkComponent: 'core', workflowId: 'w' }\n"]);
});

test('a local listing error is permanent only when access is refused (EMFILE, EIO, ESTALE are retried)', async () => {
  const errno = (code: string) => Object.assign(new Error(`${code}: listing failed`), { code });
  for (const code of ['EACCES', 'EPERM']) {
    const { failure: f } = await failureAt(1, listingError('/wh/grid_partition=a', errno(code)));
    assert.equal(f.type, FailureTypes.storageDenied);
    assert.equal(f.nonRetryable, true);
    assert.match(f.message, /^cannot list \/wh\/grid_partition=a: /);
  }
  for (const code of ['EMFILE', 'EIO', 'ESTALE']) {
    const err = listingError('/wh/grid_partition=a', errno(code));
    assert.equal(await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(err)), err, `${code} is left to the retry policy`);
    assert.match(err.message, /cannot list \/wh\/grid_partition=a/);
  }
});

test('a failure reason kept by the run is capped, so 200 of them stay far below the 2 MB payload limit', () => {
  assert.equal(capFailureReason('short reason'), 'short reason');
  const long = `column 'platform' has conflicting types across inputs: ${'grid_partition=x/year=2020/part.parquet (BIGINT), '.repeat(1000)}`;
  const kept = capFailureReason(long);
  assert.ok(kept.startsWith(long.slice(0, MAX_FAILURE_REASON_CHARS)));
  assert.ok(kept.endsWith(`… (${long.length - MAX_FAILURE_REASON_CHARS} more characters)`), kept.slice(-60));
  const failures = Array.from({ length: MAX_REPORTED_FAILURES }, (_, i) => ({ bucket: `grid_partition=c${i}/year=2020`, type: FailureTypes.badBucketData, reason: kept }));
  assert.ok(JSON.stringify(failures).length < 512 * 1024, `${JSON.stringify(failures).length} bytes of failures`);
});

/**
 * Operating it: resume of a terminated run with the real CLI, the progress query and the Web UI's
 * details, `status --watch` to the end of a run, compacting selected years/cells, `--use-lock` with the Python pipeline's lock object, and a
 * scheduled run and an ad-hoc run on one warehouse that never overlap, and a worker stopped mid-bucket
 * with a shutdown grace.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { FailureTypes, type CompactionSummary } from '../workflows/contract';
import type { CompactionProgress } from '../workflows/progress';
import { waitFor } from './helpers/wait';
import { maybeRecordHistory } from './helpers/record-history';
import { createBucketWorker, REPO_ROOT, spawnWorkerProcess, startProbeWorker, startTemporal, startWorker, uniqueTaskQueue, type RunningWorker, type TemporalHarness } from './helpers/temporal';
import { byBucket, listFiles, makeFixture, makeTinyWarehouse, pyicebergScan } from './helpers/warehouse-fixtures';
import { PLAN_PAGE_SIZE } from '../activities/compaction/plan-store';
import { createCompactionSchedule } from '../client/commands/schedule';
import { silentBucketCount, stoppedRunOutcome } from '../client/commands/status';
import { verifyWarehouse } from '../activities/verification/verify-warehouse';
import { lockStateQuery, lockWorkflowId } from '../workflows/lock';
import { compactWarehouse } from '../client/api';
import { CompactionEndedError } from '../client/start-compaction';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { MockActivityEnvironment } from '@temporalio/testing';
import { Context } from '@temporalio/activity';
import { bundleWorkflowCode, DefaultLogger, Worker } from '@temporalio/worker';
import Database from 'better-sqlite3';
import { createActivities, WorkerLocalResources } from '../activities';
import { makeTempDir } from './helpers/temp-dirs';
import { formatSummary } from '../client/summary-format';
import { compactBucket as compactBucketFiles } from '../activities/compaction/compact-bucket';
import { openDuckSession, sqlString } from '../activities/compaction/duckdb-session';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { SqliteCatalogBackend } from '../activities/catalog/sqlite-catalog';
import { rebuildCatalog } from '../activities/catalog/rebuild-catalog';
import { finishProbeSignal } from './workflows/lock-probe';
import { findTemporalCli } from '../client/temporal-cli';

const run = promisify(execFile);
let h: TemporalHarness;
let taskQueue: string;
let worker: RunningWorker;

before(async () => {
  h = await startTemporal();
  taskQueue = uniqueTaskQueue('ops');
  worker = await startWorker(h, taskQueue, { maxConcurrentBuckets: 2 });
});

after(async () => {
  await worker?.stop();
  await h?.stop();
});


/** node's arguments to run the CLI with `args` against this file's server and task queue. */
function cliArgv(args: string[]): string[] {
  return [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), ...args, '--address', h.address, '--namespace', h.namespace, '--task-queue', taskQueue];
}

function cli(args: string[]) {
  return run(process.execPath, cliArgv(args), { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
}

/** What `status` prints: its stdout, its warning line about `warehouse` ('' when none) and the command that warning says finishes the run. */
async function statusWarning(warehouse: string): Promise<{ running: string; warning: string; hint?: string }> {
  const { stdout, stderr } = await cli(['status']);
  const warning = stderr.split('\n').find((l) => l.includes(warehouse)) ?? '';
  return { running: stdout, warning, hint: /[Ff]inish it: earthcatalog-compact (.*)$/.exec(warning)?.[1] };
}

/** Where `--use-lock` looks for the Python pipeline's lock object of a local warehouse by default. */
function pythonLockFile(warehouse: string): string {
  return path.join(warehouse, '.lock');
}

/** The Python pipeline's lock object in its S3Lock's shape, taken a minute ago (stale after its default 12 h). */
async function holdPythonLock(warehouse: string, lockFile = pythonLockFile(warehouse)): Promise<{ lockFile: string; body: string }> {
  const acquired = new Date(Date.now() - 60_000).toISOString().replace(/Z$/, '+00:00');
  const body = JSON.stringify({ owner: 'incremental', pid: 4242, hostname: 'py-host', acquired, ttl_hours: 12 });
  await fs.mkdir(path.dirname(lockFile), { recursive: true });
  await fs.writeFile(lockFile, body);
  return { lockFile, body };
}

/** The product's activities, as a worker registers them. */
type Activities = ReturnType<typeof createActivities>;

/**
 * A worker with the compaction workflow and a bucket worker beside it (without the plugin, the bucket
 * task queue needs one of its own), on a queue of their own, with some activities replaced by `faults`:
 * for a fault that cannot be caused for real here, which the test says.
 */
async function startWorkerWithFaults(name: string, faults: (activities: Activities) => Partial<Activities>): Promise<{ queue: string; stop: () => Promise<void> }> {
  const queue = uniqueTaskQueue(name);
  const resources = { scratchDir: await makeTempDir(`ec-${name}-scratch`), memoryBudgetMb: 256, duckdbThreads: 1, idleDuckdbSessions: 1 };
  const local = new WorkerLocalResources(resources);
  const activities = createActivities(resources, local);
  const replaced = { ...activities, ...faults(activities) };
  const w = await Worker.create({ connection: h.server.env.nativeConnection, namespace: h.namespace, taskQueue: queue, workflowBundle: await h.bundle(), activities: replaced });
  const bucketWorker = await createBucketWorker(h, queue, replaced.compactBucket);
  const running = Promise.all([w.run(), bucketWorker.run()]);
  return {
    queue,
    stop: async () => {
      w.shutdown();
      bucketWorker.shutdown();
      await running;
      await local.close();
    },
  };
}

/** Enough buckets that a run at one bucket at a time is still running after its first few. */
const TWELVE_BUCKETS = { cells: ['81283ffffffffff', '8128bffffffffff', '8129bffffffffff', '812a3ffffffffff'], years: [2020, 2021, 2022] };

/**
 * A probe workflow holding the `kind` lock of `target` (as the next scheduled run, or another warehouse's
 * rebuild, would) until `release`. Its worker also runs the lock workflow the probe starts, so it serves
 * until `stop` (which releases first, if need be); calling either again does nothing.
 */
async function holdLock(kind: 'warehouse' | 'catalog', target: string, name: string): Promise<{ holderId: string; release: () => Promise<void>; stop: () => Promise<void> }> {
  const probeQueue = uniqueTaskQueue(`${name}-probe`);
  const probeWorker = await startProbeWorker(h, probeQueue);
  const holder = await h.client.workflow.start('lockProbe', { taskQueue: probeQueue, workflowId: `${name}-holder-${Date.now()}`, args: [kind, target, null] });
  let released: Promise<void> | undefined;
  let stopped: Promise<void> | undefined;
  const release = () =>
    (released ??= (async () => {
      await holder.signal(finishProbeSignal);
      await holder.result();
    })());
  const stop = () =>
    (stopped ??= (async () => {
      await release();
      await probeWorker.stop();
    })());
  try {
    await waitFor(`the probe to hold the ${kind} lock`, async () =>
      (await h.client.workflow.getHandle(lockWorkflowId(kind, target)).query(lockStateQuery)).holder?.workflowId === holder.workflowId ? true : undefined,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { holderId: holder.workflowId, release, stop };
}

describe('resume', () => {
  it('a run terminated after its worker died: compact, cancel and status --watch still print the command that finishes its plan (from its history)', async () => {
    const fx = await makeFixture('resume-no-worker', { cells: ['8128bffffffffff'], years: [2020, 2021, 2022] });
    const queue = uniqueTaskQueue('resume-no-worker');
    const worker = await startWorker(h, queue);
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue: queue,
      workflowId: `resume-no-worker-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
    });
    const { planId } = await waitFor('a bucket done', async () => {
      const p = await handle.query<CompactionProgress>('progress');
      return p.bucketsDone >= 1 ? p : undefined;
    });
    await worker.stop();
    await handle.terminate('test: its worker is gone');
    const outcome = await stoppedRunOutcome(h.client, { workflowId: handle.workflowId, runId: handle.firstExecutionRunId, taskQueue: queue }, []);
    const command = `earthcatalog-compact resume --warehouse ${fx.warehouse} --catalog ${fx.catalog} --plan ${planId} --max-parallel 1 --task-queue ${queue}`;
    assert.equal(outcome.text, `no worker answered for its progress, so how many buckets are done is not known; its plan is ${planId}; finish it with ${command}`);
    assert.deepEqual({ planId: outcome.planId, command: outcome.command }, { planId, command });
  });

  it('finishes a terminated run: finished buckets are not redone, nothing lost or duplicated', async () => {
    const fx = await makeFixture('resume', TWELVE_BUCKETS);
    const bucketsBefore = byBucket(await listFiles(fx.warehouse));
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `resume-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
    });
    const progress = await waitFor('a few buckets done', async () => {
      const p = await handle.query<CompactionProgress>('progress');
      return p.bucketsDone >= 3 ? p : undefined;
    });
    await handle.terminate('test: operator stopped it');
    const planId = progress.planId!;

    // What the terminated run finished: buckets whose only file is this plan's output.
    const mid = byBucket(await listFiles(fx.warehouse));
    const finished = [...mid].filter(([, keys]) => keys.length === 1 && keys[0]!.endsWith(`compacted_${planId}.parquet`)).map(([b]) => b);
    assert.ok(finished.length >= 3 && finished.length < bucketsBefore.size, `terminated mid-run (${finished.length} finished)`);
    const inode = async (b: string) => (await fs.stat(path.join(fx.warehouse, mid.get(b)![0]!))).ino;
    const inodesBefore = await Promise.all(finished.map(inode));

    // A later run that fails before it has a plan (a resume of a plan that does not exist) compacted
    // nothing: the terminated run still decides the table's state.
    const unplanned = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `resume-unplanned-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, resumePlanId: 'no-such-plan' }],
    });
    await assert.rejects(unplanned.result());

    // `status` names the interrupted run and the command that finishes it, which is then run as printed.
    const { running, warning, hint } = await waitFor('status naming the terminated run', async () => {
      const seen = await statusWarning(fx.warehouse);
      return seen.warning ? seen : undefined;
    });
    assert.match(running, /no compaction is running/);
    assert.ok(warning.includes(`${handle.workflowId}, was TERMINATED`), warning);
    // The run's server, namespace and (not the default) task queue: the resume must reach its workers.
    assert.equal(hint, `resume --warehouse ${fx.warehouse} --catalog ${fx.catalog} --max-parallel 1 --address ${h.address} --namespace ${h.namespace} --task-queue ${taskQueue}`);
    // For scripts: stdout stays the JSON list of running runs, the warning is a JSON line on stderr with its command.
    const asJson = await cli(['status', '--json']);
    assert.deepEqual(JSON.parse(asJson.stdout), []);
    const jsonWarning = asJson.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { warning: string; workflowId?: string; warehouse?: string; command?: string })
      .find((w) => w.warehouse === fx.warehouse);
    assert.deepEqual(
      { warning: jsonWarning?.warning, workflowId: jsonWarning?.workflowId, command: jsonWarning?.command },
      { warning: 'stale-table', workflowId: handle.workflowId, command: `earthcatalog-compact ${hint}` },
    );

    const { stdout } = await cli([...hint.split(' '), '--json']);
    const summary = JSON.parse(stdout) as CompactionSummary & { workflowId?: string };
    assert.equal(summary.planId, planId, 'the resume adopted the interrupted plan');
    assert.match(summary.workflowId ?? '', /^earthcatalog-compact-/, 'the summary names its run');
    assert.equal(summary.bucketsCompacted, bucketsBefore.size);
    assert.ok(summary.bucketsAlreadyCompacted >= finished.length, 'finished buckets were recognised');
    assert.deepEqual(await Promise.all(finished.map(inode)), inodesBefore, 'finished outputs were not rewritten');

    const after = byBucket(await listFiles(fx.warehouse));
    for (const [b, keys] of after) assert.deepEqual(keys, [`${b}/compacted_${planId}.parquet`]);
    const report = await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog });
    assert.deepEqual(report.violations, []);
    assert.equal((await statusWarning(fx.warehouse)).warning, '', 'the finished table is no longer named');

    // A second resume has nothing to finish and says so.
    await assert.rejects(cli(['resume', '--warehouse', fx.warehouse, '--catalog', fx.catalog]), (err: { stderr?: string; code?: number }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr ?? '', new RegExp(`no unfinished compaction plan to resume in .*: its newest plan, ${planId} \\(made [^)]+\\), has finished; this resume found nothing to finish, so it compacted nothing; a compaction rebuilds`));
      // Another table of the warehouse may have had that plan finished: what rebuilds this one is a compaction.
      assert.ok(
        err.stderr!.trimEnd().endsWith(`; a compaction rebuilds this table from the files as they are: earthcatalog-compact --warehouse ${fx.warehouse} --catalog ${fx.catalog} --address ${h.address} --namespace ${h.namespace} --task-queue ${taskQueue}`),
        err.stderr,
      );
      return true;
    });
    // That refused resume is no reason to resume again.
    assert.equal((await statusWarning(fx.warehouse)).warning, '', 'a run that stopped before it had a plan is not named');
  });
});

describe('cancel', () => {
  it('a cancelled run dispatches no more buckets, rebuilds the table from the files as they are, releases both locks and leaves a plan that resume finishes', async () => {
    const fx = await makeFixture('cancel', TWELVE_BUCKETS);
    const bucketsBefore = byBucket(await listFiles(fx.warehouse));
    const lockFile = pythonLockFile(fx.warehouse);
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `cancel-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1, useLock: true }],
    });
    const progress = await waitFor('a few buckets done', async () => {
      const p = await handle.query<CompactionProgress>('progress');
      return p.bucketsDone >= 2 ? p : undefined;
    });
    // The Web UI's current details follow each bucket (the page was loaded before the first one).
    const details = (await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
    assert.ok(Number(/: (\d+)\/\d+ buckets/.exec(details)?.[1] ?? -1) >= 2, details);
    await fs.access(lockFile);
    await handle.cancel();
    await assert.rejects(handle.result(), (err: Error) => {
      assert.ok(err instanceof WorkflowFailedError, `failed as cancelled: ${String(err)}`);
      assert.ok(err.cause instanceof CancelledFailure, `cause: ${String(err.cause)}`);
      return true;
    });
    assert.equal((await handle.describe()).status.name, 'CANCELLED');
    await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-cancelled-rebuilt-use-lock');
    // Its last phase says the table was rebuilt before it ended, not that it stopped during a rebuild.
    assert.equal((await handle.query<CompactionProgress>('progress')).phase, 'rebuilt-before-ending');

    // Nothing was dispatched after the request, and no bucket was reported as failed because of it.
    const events = (await handle.fetchHistory()).events ?? [];
    const requested = events.findIndex((e) => e.workflowExecutionCancelRequestedEventAttributes);
    assert.ok(requested > 0, 'the cancel request is in the history');
    const laterBuckets = events
      .slice(requested)
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'compactBucket');
    assert.deepEqual(laterBuckets, [], 'no bucket activity scheduled after the cancel request');
    // The bucket in flight ended (cancelled or done) before any lock was released.
    const scheduled = new Map<string, string>();
    events.forEach((e) => {
      const type = e.activityTaskScheduledEventAttributes?.activityType?.name;
      if (type) scheduled.set(String(e.eventId), type);
    });
    const closedAt = (id: string) =>
      events.findIndex((e) =>
        [e.activityTaskCompletedEventAttributes, e.activityTaskFailedEventAttributes, e.activityTaskCanceledEventAttributes, e.activityTaskTimedOutEventAttributes].some(
          (a) => a && String(a.scheduledEventId) === id,
        ),
      );
    const releasedAt = events.findIndex((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'releasePipelineLock');
    assert.ok(releasedAt > requested, 'the pipeline lock is released after the request');
    const rebuilds = [...scheduled].filter(([, type]) => type === 'rebuildCatalog').map(([id]) => id);
    assert.equal(rebuilds.length, 1, 'one catalog rebuild');
    const rebuiltAt = closedAt(rebuilds[0]!);
    assert.ok(rebuiltAt > requested && rebuiltAt < releasedAt, 'the table was rebuilt after the request, before the locks were released');
    for (const [id, type] of scheduled) {
      if (type !== 'compactBucket') continue;
      const closed = closedAt(id);
      assert.ok(closed >= 0 && closed < rebuiltAt, `bucket activity ${id} closed (event index ${closed}) before the rebuild and the lock release (${rebuiltAt}, ${releasedAt})`);
    }
    const last = await handle.query<CompactionProgress>('progress');
    assert.equal(last.bucketsFailed, 0, `no bucket counted as failed: ${JSON.stringify(last.failures)}`);
    assert.ok(last.bucketsDone >= 2 && last.bucketsDone < bucketsBefore.size, `stopped mid-run (${last.bucketsDone} done)`);

    await assert.rejects(fs.access(lockFile), "the Python pipeline's lock object is released");
    // Readers can scan the table: it lists exactly the data files there are, compacted or not.
    const scan = await pyicebergScan(fx.catalog, []);
    const dataFiles = [...byBucket(await listFiles(fx.warehouse)).values()].flat();
    assert.deepEqual(scan.files.map((f) => f.path.slice(f.path.indexOf(fx.warehouse) + fx.warehouse.length + 1)).sort(), dataFiles.sort());
    assert.equal(scan.snapshot_count, 1);
    await waitFor('the warehouse lock is free', async () =>
      (await h.client.workflow.getHandle(lockWorkflowId('warehouse', fx.warehouse)).query(lockStateQuery)).holder === null ? true : undefined,
    );

    const { stdout } = await cli(['resume', '--warehouse', fx.warehouse, '--catalog', fx.catalog, '--use-lock', '--json']);
    const summary = JSON.parse(stdout) as CompactionSummary;
    assert.equal(summary.planId, progress.planId, 'the resume adopted the cancelled plan');
    assert.equal(summary.bucketsCompacted, bucketsBefore.size);
    assert.equal(summary.failedBucketsTotal, 0);
    for (const [b, keys] of byBucket(await listFiles(fx.warehouse))) assert.deepEqual(keys, [`${b}/compacted_${progress.planId}.parquet`]);
    assert.deepEqual((await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog })).violations, []);
  });
});

describe('cancel while the last buckets run', () => {
  it('rebuilds the table when those buckets complete instead of stopping (a bucket whose deletes began always completes)', async () => {
    // A bucket that completes despite the cancel cannot be timed for real (its deletes must have begun
    // just as the request lands): compactBucket is wrapped to do its real work, then hold its result
    // until the request is in the history, as a bucket past its deletes ignores the stop.
    let requested!: () => void;
    const cancelRequested = new Promise<void>((resolve) => (requested = resolve));
    let bucketsDone = 0;
    const { queue, stop } = await startWorkerWithFaults('ops-cancel-last', (activities) => ({
      compactBucket: async (req) => {
        const result = await activities.compactBucket(req);
        bucketsDone += 1;
        await cancelRequested;
        return result;
      },
    }));
    try {
      const fx = await makeFixture('cancel-last-buckets', { cells: ['81283ffffffffff', '8128bffffffffff'], years: [2020] });
      const handle = await h.client.workflow.start('compactWarehouse', {
        taskQueue: queue,
        workflowId: `cancel-last-buckets-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog }],
      });
      await waitFor('both buckets compacted, their results held', async () => (bucketsDone === 2 ? true : undefined));
      await handle.cancel();
      await waitFor('the cancel request in the history', async () =>
        (await handle.fetchHistory()).events?.some((e) => e.workflowExecutionCancelRequestedEventAttributes) ? true : undefined,
      );
      requested();
      await assert.rejects(handle.result(), (err: Error) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure);
      await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-cancelled-after-last-buckets');

      const events = (await handle.fetchHistory()).events ?? [];
      const requestedAt = events.findIndex((e) => e.workflowExecutionCancelRequestedEventAttributes);
      const completed = events.filter((e) => e.activityTaskCompletedEventAttributes);
      const types = new Map(events.map((e) => [String(e.eventId), e.activityTaskScheduledEventAttributes?.activityType?.name]));
      const bucketsCompleted = completed.filter((e) => types.get(String(e.activityTaskCompletedEventAttributes!.scheduledEventId)) === 'compactBucket');
      assert.equal(bucketsCompleted.length, 2, 'both buckets completed, after the request');
      const rebuiltAt = events.findIndex((e) => types.get(String(e.activityTaskCompletedEventAttributes?.scheduledEventId)) === 'rebuildCatalog');
      assert.ok(rebuiltAt > requestedAt, `the table was rebuilt after the request (rebuild completed at event index ${rebuiltAt})`);
      // Readers can scan the table: it lists exactly the files there are, the two compacted outputs.
      const scan = await pyicebergScan(fx.catalog, []);
      const dataFiles = [...byBucket(await listFiles(fx.warehouse)).values()].flat();
      assert.equal(dataFiles.length, 2);
      assert.deepEqual(scan.files.map((f) => f.path.slice(f.path.indexOf(fx.warehouse) + fx.warehouse.length + 1)).sort(), dataFiles.sort());
    } finally {
      requested();
      await stop();
    }
  });
});

describe('cancel while a bucket attempt is lost', () => {
  it('a bucket whose attempt times out after the cancel (its worker gone) is stopped by the cancellation, not counted as failed', async () => {
    // An attempt that never learns of the cancel and never heartbeats, as one on a worker killed after the
    // request: the server ends it at the 30 s heartbeat timeout and, the run being cancelled, does not retry it.
    let started = 0;
    let lost!: () => void;
    const attemptLost = new Promise<void>((resolve) => (lost = resolve));
    const { queue, stop } = await startWorkerWithFaults('ops-cancel-lost', (activities) => ({
      compactBucket: async (req) => {
        if (started++ === 0) return activities.compactBucket(req);
        lost();
        await Context.current().sleep(600_000);
        throw new Error('unreachable: held until the worker stops');
      },
    }));
    try {
      const fx = await makeFixture('cancel-lost-attempt', { cells: ['81283ffffffffff', '8128bffffffffff'], years: [2020] });
      const handle = await h.client.workflow.start('compactWarehouse', {
        taskQueue: queue,
        workflowId: `cancel-lost-attempt-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
      });
      await attemptLost;
      await handle.cancel();
      await assert.rejects(handle.result(), (err: Error) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure);
      await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-cancelled-bucket-timed-out');
      const p = await handle.query<CompactionProgress>('progress');
      assert.deepEqual([p.bucketsDone, p.bucketsFailed, p.failures], [1, 0, []]);
      const { stdout } = await cli(['status', '--workflow-id', handle.workflowId]);
      assert.match(stdout, /CANCELLED .*1\/2 buckets .* failed 0/);
    } finally {
      await stop();
    }
  });
});

describe('cancel while the final rebuild waits for the catalog lock', () => {
  it('still rebuilds the table before the run ends as cancelled', async () => {
    const fx = await makeFixture('cancel-final-rebuild');
    const holder = await holdLock('catalog', fx.catalog, 'catalog');
    try {
      const handle = await h.client.workflow.start('compactWarehouse', {
        taskQueue,
        workflowId: `cancel-final-rebuild-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog }],
      });
      const waiting = await waitFor('every bucket compacted, the run waiting for the catalog lock', async () => {
        const p = await handle.query<CompactionProgress>('progress');
        return p.phase === 'waiting-for-catalog-lock' ? p : undefined;
      });
      assert.ok(waiting.bucketsCompacted > 0);
      await handle.cancel();
      // The cancel alone does not end the run: it waits for the lock to rebuild.
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal((await handle.describe()).status.name, 'RUNNING');
      await holder.release();
      await assert.rejects(handle.result(), (err: Error) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure);
      await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-cancelled-in-final-rebuild');
      const scan = await pyicebergScan(fx.catalog, []);
      assert.equal(scan.error, undefined, scan.error);
      const dataFiles = [...byBucket(await listFiles(fx.warehouse)).values()].flat();
      assert.deepEqual(scan.files.map((f) => f.path.slice(f.path.indexOf(fx.warehouse) + fx.warehouse.length + 1)).sort(), dataFiles.sort());
      assert.ok(dataFiles.every((k) => /\/compacted_[^/]+\.parquet$/.test(k)), 'every bucket was compacted before the cancel');
    } finally {
      await holder.stop();
    }
  });
});

describe('a run whose rebuild fails for good', () => {
  it('compact, status --watch and status say the table lists deleted inputs and print the resume command', async () => {
    const fx = await makeFixture('failed-rebuild');
    const other = await makeFixture('failed-rebuild-other');
    // Held until the buckets are done, so that the table can be taken meanwhile.
    const holder = await holdLock('catalog', fx.catalog, 'catalog');
    try {
      const workflowId = `failed-rebuild-${Date.now()}`;
      const compacting = run(process.execPath, cliArgv(['--warehouse', fx.warehouse, '--catalog', fx.catalog, '--workflow-id', workflowId]), { cwd: REPO_ROOT }).then(
        () => assert.fail('the failed run printed a summary'),
        (err: { stderr?: string; code?: number }) => err,
      );
      const handle = h.client.workflow.getHandle(workflowId);
      const waiting = await waitFor('every bucket compacted, the run waiting for the catalog lock', async () => {
        const p = await handle.query<CompactionProgress>('progress').catch(() => undefined);
        return p?.phase === 'waiting-for-catalog-lock' ? p : undefined;
      });
      // Another warehouse's table takes the name meanwhile (a run given the wrong --catalog): the rebuild
      // refuses to replace it, which no retry changes, so the run fails with its buckets' inputs deleted.
      const backend = new SqliteCatalogBackend({ catalogDbPath: fx.catalog, catalogName: 'earthcatalog', warehouseRootUri: other.warehouse });
      try {
        await rebuildCatalog(new LocalWarehouseStore(other.warehouse), backend, { warehouse: other.warehouse, catalog: fx.catalog, namespace: 'earthcatalog', table: 'stac_items', catalogName: 'earthcatalog' });
      } finally {
        await backend.close();
      }
      await holder.release();

      const resume = `resume --warehouse ${fx.warehouse} --catalog ${fx.catalog} --plan ${waiting.planId} --address ${h.address} --namespace ${h.namespace} --task-queue ${taskQueue}`;
      const failed = await compacting;
      assert.equal(failed.code, 1, failed.stderr);
      const line = /workflow failed: (.*); (\d+) of (\d+) buckets done; finish it with earthcatalog-compact (.*)$/m.exec(failed.stderr ?? '');
      assert.ok(line, failed.stderr);
      assert.match(line[1]!, /registers files outside the warehouse/);
      assert.equal(line[2], line[3], 'every bucket was done');
      assert.equal(line[4], resume);

      await assert.rejects(cli(['status', '--workflow-id', workflowId, '--watch']), (err: { stdout?: string; code?: number }) => {
        assert.equal(err.code, 1);
        const last = err.stdout!.trim().split('\n').pop()!;
        assert.ok(last.startsWith(`${workflowId} FAILED: workflow failed: `), last);
        assert.ok(last.endsWith(`; ${line[2]} of ${line[3]} buckets done; finish it with earthcatalog-compact ${resume}`), last);
        return true;
      });
      await assert.rejects(cli(['status', '--workflow-id', workflowId, '--watch', '--json']), (err: { stdout?: string; code?: number }) => {
        assert.equal(err.code, 1);
        const last = JSON.parse(err.stdout!.trim().split('\n').pop()!) as Record<string, unknown>;
        assert.deepEqual({ status: last.status, planId: last.planId, command: last.command }, { status: 'FAILED', planId: waiting.planId, command: `earthcatalog-compact ${resume}` });
        return true;
      });
      const { warning, hint } = await statusWarning(fx.warehouse);
      // Why it failed, since a resume before that is fixed fails the same way.
      assert.match(warning, new RegExp(`the latest compaction of ${fx.warehouse}, ${workflowId}, was FAILED at \\S+ \\(workflow failed: .*registers files outside the warehouse.*\\): .*the table earthcatalog\\.stac_items in ${fx.catalog} lists files they deleted.* Once that is fixed, finish it: `));
      assert.equal(hint, `resume --warehouse ${fx.warehouse} --catalog ${fx.catalog} --address ${h.address} --namespace ${h.namespace} --task-queue ${taskQueue}`);
      // Resumed before the cause is fixed, the resume fails its pre-flight: the plan is still there to finish.
      await assert.rejects(cli(['resume', '--warehouse', fx.warehouse, '--catalog', fx.catalog]), (err: { stderr?: string; code?: number }) => {
        assert.equal(err.code, 1, err.stderr);
        assert.match(err.stderr ?? '', /registers files outside the warehouse.*; it stopped before it loaded its plan, so this resume compacted nothing; once what stopped it is fixed, run it again: earthcatalog-compact (.*)$/m);
        assert.ok(err.stderr!.trimEnd().endsWith(`run it again: earthcatalog-compact ${hint}`), err.stderr);
        return true;
      });
      assert.equal((await statusWarning(fx.warehouse)).hint, hint, 'the failed resume planned nothing: the stale run is still the one to finish');
    } finally {
      await holder.stop();
    }
  });
});

describe('a run that fails between its buckets', () => {
  it('rebuilds the table from the files as they are before it fails, and releases the warehouse lock', async () => {
    const fx = await makeTinyWarehouse('fail-between', PLAN_PAGE_SIZE + 1);
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `fail-between-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
    });
    const progress = await waitFor('the first page under way', async () => {
      const p = await handle.query<CompactionProgress>('progress');
      return p.planId && p.bucketsDone >= 1 ? p : undefined;
    });
    // The plan's second page becomes unreadable before the run gets to it (it fails without retries).
    const planDir = path.join(fx.warehouse, '_earthcatalog_compaction', 'plans', progress.planId!);
    const { pagesDir } = JSON.parse(await fs.readFile(path.join(planDir, 'manifest.json'), 'utf8')) as { pagesDir: string };
    await fs.rm(path.join(planDir, pagesDir, 'page-000001.json'));
    await assert.rejects(handle.result(), (err: Error) => {
      assert.ok(err instanceof WorkflowFailedError, String(err));
      assert.match(String((err.cause?.cause as Error | undefined)?.message), /has no page 1/);
      return true;
    });
    await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-failed-rebuilt');
    // A resume would fail on the same missing page: what the CLI says of the run points to a new compaction.
    const { runId } = await handle.describe();
    assert.equal(
      (await stoppedRunOutcome(h.client, { workflowId: handle.workflowId, runId, taskQueue }, [])).text,
      `${PLAN_PAGE_SIZE} of ${PLAN_PAGE_SIZE + 1} buckets done; its plan ${progress.planId} cannot be read, so a resume cannot finish it: start a new compaction of the warehouse instead (what this run left are ordinary data files to the next plan)`,
    );

    const events = (await handle.fetchHistory()).events ?? [];
    const scheduledAt = (type: string) => events.findIndex((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type);
    const pageFailed = events.findIndex((e) => e.activityTaskFailedEventAttributes);
    assert.ok(pageFailed > 0 && scheduledAt('rebuildCatalog') > pageFailed, 'the table was rebuilt after the page could not be read');
    const last = await handle.query<CompactionProgress>('progress');
    assert.equal(last.bucketsDone, PLAN_PAGE_SIZE, 'the first page was finished');
    // Readers can scan the table: it lists exactly the data files there are, compacted or not.
    const scan = await pyicebergScan(fx.catalog, []);
    const dataFiles = [...byBucket(await listFiles(fx.warehouse)).values()].flat();
    assert.equal(dataFiles.length, PLAN_PAGE_SIZE + 2, 'one file in each compacted bucket, two in the last');
    assert.deepEqual(scan.files.map((f) => f.path.slice(f.path.indexOf(fx.warehouse) + fx.warehouse.length + 1)).sort(), dataFiles.sort());
    assert.equal(scan.snapshot_count, 1);
    await waitFor('the warehouse lock is free', async () =>
      (await h.client.workflow.getHandle(lockWorkflowId('warehouse', fx.warehouse)).query(lockStateQuery)).holder === null ? true : undefined,
    );
  });
});

describe('a rebuild whose run has ended', () => {
  it("does not commit once the run that asked for it was terminated (its locks are gone); a live run's rebuild commits", async () => {
    const fx = await makeFixture('rebuild-of-ended-run');
    // Runs on a task queue nobody polls: they stay RUNNING until terminated, and only their status matters.
    const idle = uniqueTaskQueue('ops-idle');
    const start = (id: string) => h.client.workflow.start('compactWarehouse', { taskQueue: idle, workflowId: id, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
    const ended = await start(`rebuild-ended-${Date.now()}`);
    await ended.terminate('operator');
    const live = await start(`rebuild-live-${Date.now()}`);
    const resources = { scratchDir: await makeTempDir('ec-rebuild-ended-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 };
    const local = new WorkerLocalResources(resources);
    const activities = createActivities(resources, local);
    const request = { warehouse: fx.warehouse, catalog: fx.catalog, namespace: 'earthcatalog', table: 'stac_items', catalogName: 'earthcatalog' };
    const rebuildAs = (workflowId: string) =>
      new MockActivityEnvironment({ workflowExecution: { workflowId, runId: 'r' }, activityType: 'rebuildCatalog' }, { client: h.client }).run(activities.rebuildCatalog, request);
    try {
      await assert.rejects(rebuildAs(ended.workflowId), (err: Error) => {
        assert.equal(err.message, `earthcatalog.stac_items not committed: the run ${ended.workflowId} that asked for this rebuild is TERMINATED; its successor rebuilds the table`);
        return true;
      });
      const db = new Database(fx.catalog, { readonly: true });
      try {
        assert.deepEqual(db.prepare('SELECT metadata_location FROM iceberg_tables').all(), [], 'no table was committed');
      } finally {
        db.close();
      }
      const metadataDir = path.join(fx.warehouse, 'earthcatalog', 'stac_items', 'metadata');
      assert.deepEqual(await fs.readdir(metadataDir).catch(() => []), [], "the refused commit's files are removed");
      const committed = (await rebuildAs(live.workflowId)) as { createdTable: boolean };
      assert.equal(committed.createdTable, true);
    } finally {
      await live.terminate('test over');
      await local.close();
    }
  });
});

describe('a run whose buckets a worker of an earlier release compacts', () => {
  it("lists their outputs as untyped (summary and finish record); the next run reads them again and rewrites the one whose whole-float percent_valid_pixels the table types long", async () => {
    const fx = await makeFixture('untyped-outputs', { cells: ['81283ffffffffff', '8128bffffffffff'], years: [2020] });
    const buckets = byBucket(await listFiles(fx.warehouse));
    const [floatBucket, otherBucket] = [...buckets.keys()].sort();
    const session = await openDuckSession({ tempDir: await makeTempDir('ec-untyped-duck'), threads: 1 });
    try {
      // As pandas writes an integer property some item of the batch lacks: whole numbers as float64.
      for (const key of buckets.get(floatBucket!)!) {
        const file = path.join(fx.warehouse, key);
        await session.exec(`COPY (SELECT * REPLACE (CAST(round(percent_valid_pixels) AS DOUBLE) AS percent_valid_pixels) FROM read_parquet(${sqlString(file)}, hive_partitioning = false)) TO ${sqlString(`${file}.tmp`)} (FORMAT parquet)`);
        await fs.rename(`${file}.tmp`, file);
      }
    } finally {
      session.close();
    }
    // The earlier release's worker is the fault that cannot be run here: its bucket activity, which writes
    // the union's types whatever the plan records and says nothing of them, stands in for it.
    const { queue, stop } = await startWorkerWithFaults('untyped-outputs', () => ({
      compactBucket: async (req) => {
        const scratchDir = await makeTempDir('ec-untyped-scratch');
        return compactBucketFiles(new LocalWarehouseStore(req.warehouse), req, { scratchDir, memoryLimitMb: 128, threads: 1, heartbeat: () => Context.current().heartbeat() });
      },
    }));
    let first: CompactionSummary;
    try {
      first = await h.client.workflow.execute('compactWarehouse', { taskQueue: queue, workflowId: `untyped-outputs-${Date.now()}`, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
    } finally {
      await stop();
    }
    assert.deepEqual([[...(first.untypedOutputs ?? [])].sort(), first.untypedOutputsTotal], [[floatBucket, otherBucket], 2]);
    assert.deepEqual(first.schemaMismatchFiles, [{ key: `${floatBucket}/compacted_${first.planId}.parquet`, reason: "column 'percent_valid_pixels' is double in the file, long in the table" }]);
    const finish = JSON.parse(await fs.readFile(path.join(fx.warehouse, '_earthcatalog_compaction', 'plans', first.planId, 'finished.json'), 'utf8')) as { summary: CompactionSummary };
    assert.deepEqual(finish.summary.untypedOutputsTotal, 2, 'the next plan reads it there');

    // This release's workers: the plan reads both outputs again and rewrites the one the table cannot read.
    const second = await h.client.workflow.execute('compactWarehouse', { taskQueue, workflowId: `untyped-outputs-next-${Date.now()}`, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
    assert.deepEqual([second.retypedBuckets, second.bucketsCompacted, second.untypedOutputs], [[floatBucket], 1, undefined]);
    assert.equal(second.schemaMismatchFiles, undefined, 'no registered file has a column readers cannot read');
    const scan = await pyicebergScan(fx.catalog, []);
    assert.equal(scan.error, undefined, scan.error);
    assert.equal(scan.row_count, second.catalogRows, 'every row of the table scanned');
  });
});

describe('Ctrl-C and the cancel command', () => {
  it('Ctrl-C detaches the CLI while the run goes on; cancel stops it and leaves the Python lock alone', async () => {
    const fx = await makeFixture('cli-cancel');
    const { lockFile, body: pythonLock } = await holdPythonLock(fx.warehouse);
    const workflowId = `cli-cancel-${Date.now()}`;
    // The run waits for the Python pipeline's lock: it is running, and stays so, until cancelled.
    const child = spawn(
      process.execPath,
      cliArgv(['--warehouse', fx.warehouse, '--catalog', fx.catalog, '--use-lock', '--workflow-id', workflowId]),
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitFor('the CLI started the run', async () => (stderr.includes(`started ${workflowId}`) ? true : undefined));
    child.kill('SIGINT');
    assert.equal(await exited, 130);
    assert.match(stderr, new RegExp(`detached; the compaction continues as workflow ${workflowId}.*earthcatalog-compact cancel --workflow-id ${workflowId}`));
    const handle = h.client.workflow.getHandle(workflowId);
    assert.equal((await handle.describe()).status.name, 'RUNNING', 'Ctrl-C did not stop the compaction');
    await waitFor('the progress says what the run waits for', async () =>
      (await handle.query<CompactionProgress>('progress')).phase === 'waiting-for-pipeline-lock' ? true : undefined,
    );

    // --json: the object a script reads once the run has ended; nothing planned, so nothing to finish.
    const { stdout } = await cli(['cancel', '--json']);
    const ended = JSON.parse(stdout) as Record<string, unknown>;
    assert.deepEqual({ ...ended, error: undefined }, { workflowId, status: 'CANCELLED', error: undefined }, stdout);
    assert.match(String(ended.error), /^workflow was cancelled; it stopped before it made or loaded a plan, so it compacted nothing: there is nothing to resume$/);
    assert.equal((await handle.describe()).status.name, 'CANCELLED');
    assert.equal(await fs.readFile(lockFile, 'utf8'), pythonLock, "the Python pipeline's lock object is not ours to remove");
    // Visibility (which `cancel` without an id lists) may lag the close by a moment.
    await waitFor('no compaction listed as running', async () => {
      for await (const _ of h.client.workflow.list({ query: `WorkflowType = 'compactWarehouse' AND ExecutionStatus = 'Running'` })) return undefined;
      return true;
    });
    await assert.rejects(cli(['cancel']), (err: { stderr?: string; code?: number }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr ?? '', /no compaction is running/);
      return true;
    });
  });
});

describe('the CLI with a namespace the server lacks', () => {
  it('compact and status say which namespace on which server, and where the name came from, not only the server\'s bare "Namespace not found"', async () => {
    const bin = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
    for (const [args, env] of [
      [['status', '--address', h.address, '--namespace', 'no-such-namespace'], {}],
      [['--warehouse', '/tmp/ec-no-namespace', '--catalog', '/tmp/ec-no-namespace.db', '--address', h.address], { TEMPORAL_NAMESPACE: 'no-such-namespace' }],
    ] as const) {
      await assert.rejects(run(process.execPath, [bin, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env } }), (err: { code?: number; stderr?: string }) => {
        assert.equal(err.code, 1, err.stderr);
        assert.equal(
          err.stderr?.trim(),
          `earthcatalog-compact: namespace no-such-namespace does not exist on the Temporal server at ${h.address} (--namespace, TEMPORAL_NAMESPACE or the config profile names it; ` +
            `temporal operator namespace list --address ${h.address} lists those there)`,
        );
        return true;
      });
    }
  });
});

describe('the CLI when nobody serves the run', () => {
  it('a run on a task queue no worker polls: the CLI says so and names the queue; the same workflow id again, and a resume of its warehouse, are refused naming it', async () => {
    const fx = await makeFixture('cli-no-worker');
    const workflowId = `cli-no-worker-${Date.now()}`;
    const idle = uniqueTaskQueue('nobody-polls');
    // cliArgv ends with the suite's queue, which has workers: this run names one that has none.
    const onIdleQueue = (args: string[]) => [...cliArgv(args).slice(0, -1), idle];
    const child = spawn(process.execPath, onIdleQueue(['--warehouse', fx.warehouse, '--catalog', fx.catalog, '--workflow-id', workflowId]), {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // With --json (stdout only the summary) the notice still comes, on stderr.
    const jsonId = `${workflowId}-json`;
    const jsonChild = spawn(process.execPath, onIdleQueue(['--warehouse', fx.warehouse, '--catalog', fx.catalog, '--workflow-id', jsonId, '--json']), {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let jsonStderr = '';
    jsonChild.stderr.on('data', (d: Buffer) => (jsonStderr += d.toString()));
    const jsonExited = new Promise<number | null>((resolve) => jsonChild.on('exit', (code) => resolve(code)));
    try {
      await waitFor('the CLI started the run', async () => (stderr.includes(`started ${workflowId}`) ? true : undefined));
      const line = await waitFor('the CLI tells that nobody answers', async () => stderr.split('\n').find((l) => l.includes('has not answered')));
      assert.match(line, new RegExp(`${workflowId} has not answered for over 15 s .*is a worker running on task queue ${idle}\\?`));
      const jsonLine = await waitFor('the --json CLI tells that nobody answers', async () => jsonStderr.split('\n').find((l) => l.includes('has not answered')));
      assert.match(jsonLine, new RegExp(`${jsonId} has not answered for over 15 s .*is a worker running on task queue ${idle}\\?`));
      // `status --watch` of the run says so too, where it used to print nothing at all.
      const watcher = spawn(process.execPath, cliArgv(['status', '--watch', '--workflow-id', workflowId]), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let watchStderr = '';
      watcher.stderr.on('data', (d: Buffer) => (watchStderr += d.toString()));
      try {
        const watchLine = await waitFor('status --watch tells that nobody answers', async () => watchStderr.split('\n').find((l) => l.includes('has not answered')));
        assert.match(watchLine, new RegExp(`${workflowId} has not answered for over 15 s .*is a worker running on task queue ${idle}\\?`));
      } finally {
        watcher.kill('SIGINT');
      }
      await assert.rejects(run(process.execPath, onIdleQueue(['--warehouse', fx.warehouse, '--catalog', fx.catalog, '--workflow-id', workflowId]), { cwd: REPO_ROOT }), (err: { stderr?: string; code?: number }) => {
        assert.match(err.stderr ?? '', new RegExp(`a workflow with the id ${workflowId} is already running: .*\\(earthcatalog-compact status --watch --workflow-id ${workflowId} --address ${h.address} --namespace ${h.namespace}\\)`));
        return true;
      });
      const { stdout: status } = await cli(['status', '--workflow-id', workflowId]);
      // The worker command it suggests reaches the run's server and namespace: a worker of another namespace never sees it.
      assert.match(status, new RegExp(`^${workflowId} RUNNING \\(no progress answer within 10 s: is a worker running on task queue ${idle}\\? earthcatalog-compact worker --task-queue ${idle} --address ${h.address} --namespace ${h.namespace}\\)`));
      // Given --task-queue, status lists that queue's compactions only.
      assert.doesNotMatch((await cli(['status'])).stdout, new RegExp(workflowId), "not another queue's run");
      assert.match((await run(process.execPath, onIdleQueue(['status']), { cwd: REPO_ROOT })).stdout, new RegExp(`^${workflowId} RUNNING`, 'm'));
      // `cancel` without an id stops the one running compaction of the task queue it is given, not another queue's.
      await assert.rejects(cli(['cancel']), (err: { stderr?: string; code?: number }) => {
        assert.equal(err.code, 1, err.stderr);
        assert.match(err.stderr ?? '', new RegExp(`no compaction is running on task queue ${taskQueue}`));
        return true;
      });
      assert.equal((await h.client.workflow.getHandle(workflowId).describe()).status.name, 'RUNNING');
      // A resume beside running compactions of the same warehouse would only wait for them: refused,
      // naming both runs started here (with and without --json; either may have started first), then,
      // once one is gone, the other.
      await assert.rejects(cli(['resume', '--warehouse', fx.warehouse, '--catalog', fx.catalog]), (err: { stderr?: string; code?: number }) => {
        assert.equal(err.code, 1);
        assert.match(
          err.stderr ?? '',
          new RegExp(
            `2 compactions of ${fx.warehouse} are still running \\((${workflowId}, ${jsonId}|${jsonId}, ${workflowId}); at most one compacts, the others wait for its lock\\): ` +
              `a resume has nothing to finish while they run \\(see them: earthcatalog-compact status --address ${h.address} --namespace ${h.namespace}; to go on with other flags, cancel them, then resume\\)`,
          ),
        );
        return true;
      });
      // SIGTERM, as a scheduler stops a task, detaches like Ctrl-C (exit 143), and names the run, also with --json.
      jsonChild.kill('SIGTERM');
      assert.equal(await jsonExited, 143);
      assert.match(jsonStderr, new RegExp(`^started ${jsonId} on `, 'm'));
      assert.match(jsonStderr, new RegExp(`detached; the compaction continues as workflow ${jsonId}`));
      await h.client.workflow.getHandle(jsonId).terminate('test: one of the two gone');
      await waitFor('the terminated run no longer listed as running', async () => {
        for await (const _ of h.client.workflow.list({ query: `WorkflowId = '${jsonId}' AND ExecutionStatus = 'Running'` })) return undefined;
        return true;
      });
      await assert.rejects(cli(['resume', '--warehouse', fx.warehouse, '--catalog', fx.catalog]), (err: { stderr?: string; code?: number }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr ?? '', new RegExp(`${workflowId} is still compacting ${fx.warehouse}: a resume has nothing to finish while it runs .*status --watch --workflow-id ${workflowId} --address ${h.address} --namespace ${h.namespace};`));
        return true;
      });
      // Ctrl-C detaches; the commands it prints reach the same server and namespace.
      child.kill('SIGINT');
      assert.equal(await exited, 130);
      const connection = `--address ${h.address} --namespace ${h.namespace}`;
      assert.match(stderr, new RegExp(`status --watch --workflow-id ${workflowId} ${connection}; stop it: earthcatalog-compact cancel --workflow-id ${workflowId} ${connection}\\)`));

      // `cancel` of a run nobody serves waits for it, and says why it waits.
      const canceller = spawn(process.execPath, cliArgv(['cancel', '--workflow-id', workflowId]), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let cancelStderr = '';
      // When each line came: the notice is due 15 s after the request, not once a query started then has waited its 10 s too.
      const seen = new Map<string, number>();
      canceller.stderr.on('data', (d: Buffer) => {
        cancelStderr += d.toString();
        for (const l of cancelStderr.split('\n')) if (!seen.has(l)) seen.set(l, Date.now());
      });
      const cancelExited = new Promise<number | null>((resolve) => canceller.on('exit', (code) => resolve(code)));
      try {
        const notice = await waitFor('cancel telling why the run does not stop', async () => cancelStderr.split('\n').find((l) => l.includes('has not stopped') && l.endsWith('still waiting')));
        const requested = [...seen].find(([l]) => l.startsWith(`cancellation of ${workflowId} requested`))?.[1];
        assert.ok(requested !== undefined, cancelStderr);
        const after = seen.get(notice)! - requested;
        // Before, the notice could not come before 25 s (a query started at 15 s, waited for 10): the bound leaves a loaded machine room.
        assert.ok(after >= 15_000 && after < 23_000, `the notice came ${after} ms after the request`);
        assert.match(notice, new RegExp(`${workflowId} has not stopped 15 s after the request \\(no progress answer within 10 s: is a worker running on task queue ${idle}\\?`));
        // No worker ever ran it: terminating it is safe, and the only way to end it without one.
        assert.ok(
          notice.endsWith(`; no worker has run it yet, so it holds no lock and made no plan: a worker on ${idle} ends it at once, or end it now with ` +
            `temporal workflow terminate --workflow-id ${workflowId} --address ${h.address} --namespace ${h.namespace} (nothing is left to finish); still waiting`),
          notice,
        );
      } finally {
        canceller.kill('SIGINT');
        await cancelExited;
      }
      // --no-wait --json: one object saying the request went in; the run, which nobody serves, still runs.
      const noWait = await cli(['cancel', '--workflow-id', workflowId, '--no-wait', '--json']);
      assert.deepEqual(JSON.parse(noWait.stdout), { workflowId, status: 'RUNNING', cancelRequested: true });
    } finally {
      child.kill('SIGINT');
      jsonChild.kill('SIGINT');
      await Promise.all([exited, jsonExited]);
      for (const id of [workflowId, jsonId]) {
        const handle = h.client.workflow.getHandle(id);
        if ((await handle.describe()).status.name === 'RUNNING') await handle.terminate('test: nobody serves it');
      }
    }
  });
});

describe('the CLI when the run cannot be replayed', () => {
  it("a run whose workflow task fails on its worker (one of another version): status says so instead of asking for a worker", async () => {
    const queue = uniqueTaskQueue('task-fails');
    const workflowId = `cli-task-fails-${Date.now()}`;
    const handle = await h.client.workflow.start('compactWarehouse', { taskQueue: queue, workflowId, args: [{ warehouse: '/nowhere', catalog: '/nowhere/catalog.db' }] });
    const workflowBundle = await bundleWorkflowCode({ workflowsPath: path.join(__dirname, 'workflows', 'failing-task.ts'), logger: new DefaultLogger('WARN') });
    const worker = await Worker.create({ connection: h.server.env.nativeConnection, namespace: h.namespace, taskQueue: queue, workflowBundle });
    const running = worker.run();
    try {
      await waitFor('a workflow task failed', async () => (((await handle.describe()).raw.pendingWorkflowTask?.attempt ?? 0) >= 2 ? true : undefined));
      const { stdout } = await cli(['status', '--workflow-id', workflowId]);
      assert.match(
        stdout,
        new RegExp(
          `^${workflowId} RUNNING \\(no progress answer within 10 s: its workflow task has failed or timed out \\d+ time\\(s\\) on a worker of task queue ${queue}: ` +
            `.*temporal workflow show --workflow-id ${workflowId} --address ${h.address} --namespace ${h.namespace} names the error\\)`,
        ),
      );
    } finally {
      worker.shutdown();
      await running;
      await handle.terminate('test: its worker cannot run it');
    }
  });
});

/**
 * Cancels the run of `handle` through the CLI once a bucket is done. Its worker `first` is stopped first, so
 * that the run is still going when the request lands (tiny buckets outrun the CLI's start); a second worker
 * on `queue`, returned for the caller to stop, then lets it end.
 */
async function cancelAfterFirstBucket(handle: WorkflowHandle, first: RunningWorker, queue: string): Promise<{ planId: string; stdout: string; second: RunningWorker }> {
  const { planId } = await waitFor('a bucket done', async () => {
    const p = await handle.query<CompactionProgress>('progress');
    return p.bucketsDone >= 1 && p.planId ? p : undefined;
  });
  await first.stop();
  const cancelling = cli(['cancel', '--workflow-id', handle.workflowId]);
  await waitFor('the cancel request in the history', async () =>
    ((await handle.fetchHistory()).events ?? []).some((e) => e.workflowExecutionCancelRequestedEventAttributes) ? true : undefined,
  );
  const second = await startWorker(h, queue);
  try {
    return { planId: planId!, stdout: (await cancelling).stdout, second };
  } catch (err) {
    await second.stop();
    throw err;
  }
}

describe('cancel through the CLI', () => {
  it('prints the whole resume command of the cancelled run (its parallelism and lock timeout too), which finishes it; a second cancel says there is nothing to cancel', async () => {
    const fx = await makeFixture('cli-cancel-hint', TWELVE_BUCKETS);
    const workflowId = `cli-cancel-hint-${Date.now()}`;
    // A queue of its own whose worker stops after the first bucket, so the run is still going when the
    // CLI's cancel arrives (tiny buckets outrun the CLI's start), and the hint names that queue.
    const queue = uniqueTaskQueue('cancel-hint');
    const first = await startWorker(h, queue);
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue: queue,
      workflowId,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1, lockTimeoutSeconds: 600 }],
    });
    let second: RunningWorker | undefined;
    try {
      const cancelled = await cancelAfterFirstBucket(handle, first, queue);
      second = cancelled.second;
      const { planId, stdout } = cancelled;
      const [, done, hint] = /^\S+ CANCELLED: (\d+) of 12 buckets done; finish it with earthcatalog-compact (.*)$/m.exec(stdout) ?? [];
      assert.equal(hint, `resume --warehouse ${fx.warehouse} --catalog ${fx.catalog} --plan ${planId} --max-parallel 1 --lock-timeout 600 --address ${h.address} --namespace ${h.namespace} --task-queue ${queue}`, stdout);
      // A second cancel has nothing to stop and says what finishes the run, as the first did (a probe found it saying nothing more, its --json without error, plan or command).
      const already = await cli(['cancel', '--workflow-id', workflowId]);
      assert.equal(already.stdout.trim(), `${workflowId} already CANCELLED: nothing to cancel; ${done} of 12 buckets done; finish it with earthcatalog-compact ${hint}`);
      const alreadyJson = JSON.parse((await cli(['cancel', '--workflow-id', workflowId, '--json'])).stdout) as Record<string, unknown>;
      assert.deepEqual({ ...alreadyJson, error: undefined }, { workflowId, status: 'CANCELLED', alreadyEnded: true, planId, command: `earthcatalog-compact ${hint}`, error: undefined });
      assert.equal(alreadyJson.error, `workflow was cancelled; ${done} of 12 buckets done; finish it with earthcatalog-compact ${hint}`);
      // Run exactly as printed (cli() would add this file's task queue).
      const resumed = JSON.parse((await run(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), ...hint!.split(' '), '--json'], { cwd: REPO_ROOT })).stdout) as CompactionSummary;
      assert.equal(resumed.planId, planId);
      assert.equal(resumed.bucketsCompacted, 12, 'every bucket of the plan compacted');
      assert.ok(resumed.bucketsAlreadyCompacted >= 1, 'the buckets done before the cancel were recognised');
      // Watched afterwards, the cancelled run no longer asks for a resume that would be refused.
      const watched = await cli(['status', '--watch', '--workflow-id', workflowId]).then(
        () => assert.fail('status --watch of a cancelled run exits non-zero'),
        (err: { stdout?: string }) => err.stdout ?? '',
      );
      assert.match(watched, new RegExp(`^${workflowId} CANCELLED: workflow was cancelled; \\d+ of 12 buckets done; a later run, \\S+, finished its plan at \\S+: there is nothing to resume$`, 'm'));
      const again = await cli(['cancel', '--workflow-id', workflowId]);
      assert.match(again.stdout.trim(), new RegExp(`^${workflowId} already CANCELLED: nothing to cancel; ${done} of 12 buckets done; a later run, \\S+, finished its plan at \\S+: there is nothing to resume$`));
      const againJson = JSON.parse((await cli(['cancel', '--workflow-id', workflowId, '--json'])).stdout) as Record<string, unknown>;
      assert.deepEqual({ ...againJson, error: undefined }, { workflowId, status: 'CANCELLED', alreadyEnded: true, planId, error: undefined });
      assert.match(String(againJson.error), /^workflow was cancelled; \d+ of 12 buckets done; a later run, \S+, finished its plan at \S+: there is nothing to resume$/);
    } finally {
      await first.stop().catch(() => undefined);
      await second?.stop();
    }
  });

  it('a cancelled run while another run of the warehouse is running says that run compacts what is left, not only that a resume finishes it; a resume of its plan finishes it; a dry run changes nothing', async () => {
    const fx = await makeFixture('cli-cancel-beside', TWELVE_BUCKETS);
    const workflowId = `cli-cancel-beside-${Date.now()}`;
    const queue = uniqueTaskQueue('cancel-beside');
    const first = await startWorker(h, queue);
    const handle = await h.client.workflow.start('compactWarehouse', { taskQueue: queue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }] });
    // The other runs stay running without a worker: to the cancel they are runs of the same warehouse, as one waiting for the lock is.
    const nobody = uniqueTaskQueue('cancel-beside-nobody');
    const beside = (name: string, extra: object) =>
      h.client.workflow.start('compactWarehouse', { taskQueue: nobody, workflowId: `cli-cancel-beside-${name}-${Date.now()}`, args: [{ warehouse: fx.warehouse, catalog: fx.catalog, ...extra }] });
    const other = await beside('other', {});
    const later: { terminate(reason: string): Promise<unknown> }[] = [];
    let second: RunningWorker | undefined;
    try {
      const cancelled = await cancelAfterFirstBucket(handle, first, queue);
      second = cancelled.second;
      const { planId, stdout } = cancelled;
      assert.match(
        stdout,
        new RegExp(
          `^${workflowId} CANCELLED: \\d+ of 12 buckets done; ${other.workflowId} is running on the same warehouse \\(waiting for its lock, or compacting\\): it plans anew and compacts what is left, ` +
            `after which this plan can no longer be resumed; only if it is cancelled before it plans, finish this one with earthcatalog-compact resume .* --plan ${planId} `,
          'm',
        ),
      );
      await other.terminate('test: replaced');
      const watched = () =>
        cli(['status', '--watch', '--workflow-id', workflowId]).then(
          () => assert.fail('status --watch of a cancelled run exits non-zero'),
          (err: { stdout?: string }) => err.stdout ?? '',
        );
      later.push(await beside('dry', { dryRun: true }));
      assert.match(await watched(), new RegExp(`^${workflowId} CANCELLED: workflow was cancelled; \\d+ of 12 buckets done; finish it with earthcatalog-compact resume .* --plan ${planId} `, 'm'));
      const resumer = await beside('resume', { resumePlanId: planId });
      later.push(resumer);
      assert.match(
        await watched(),
        new RegExp(`^${workflowId} CANCELLED: workflow was cancelled; \\d+ of 12 buckets done; ${resumer.workflowId}, a resume of this plan, is running and finishes it \\(follow it: earthcatalog-compact status --watch `, 'm'),
      );
    } finally {
      for (const run of [other, ...later]) await run.terminate('test over').catch(() => undefined);
      await first.stop().catch(() => undefined);
      await second?.stop();
    }
  });

  it('a compact whose run is terminated says so, with the reason, what it did and the resume command that finishes it', async () => {
    const fx = await makeFixture('cli-terminated', TWELVE_BUCKETS);
    const workflowId = `cli-terminated-${Date.now()}`;
    // A queue of its own whose worker compacts the first bucket and holds every later one until it is
    // stopped, so the run is still going when the terminate arrives (tiny buckets would all be done first).
    let compacted = 0;
    const { queue, stop: stopFirst } = await startWorkerWithFaults('terminated-cli', (activities) => ({
      compactBucket: async (req) => {
        if (compacted++ === 0) return activities.compactBucket(req);
        await Context.current().sleep(600_000);
        throw new Error('unreachable: held until the worker stops');
      },
    }));
    const first = { stop: stopFirst };
    const bin = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
    const compacting = run(process.execPath, [bin, '--warehouse', fx.warehouse, '--catalog', fx.catalog, '--max-parallel', '1', '--workflow-id', workflowId, '--json', '--address', h.address, '--namespace', h.namespace, '--task-queue', queue], { cwd: REPO_ROOT }).then(
      () => assert.fail('the terminated run printed a summary'),
      (err: { stdout?: string; stderr?: string; code?: number }) => err,
    );
    let second: Awaited<ReturnType<typeof startWorker>> | undefined;
    try {
      const handle = h.client.workflow.getHandle(workflowId);
      const { planId } = await waitFor('a bucket done', async () => {
        const p = await handle.query<CompactionProgress>('progress').catch(() => undefined);
        return p && p.bucketsDone >= 1 && p.planId ? p : undefined;
      });
      await handle.terminate('operator: wrong warehouse');
      await first.stop();
      // The CLI asks the closed run for its progress, which a worker answers by replaying it.
      second = await startWorker(h, queue);
      const failed = await compacting;
      assert.equal(failed.code, 1);
      const line = /workflow was terminated: operator: wrong warehouse; (\d+) of 12 buckets done; finish it with earthcatalog-compact (.*)$/m.exec(failed.stderr ?? '');
      assert.ok(line, failed.stderr);
      assert.equal(line[2], `resume --warehouse ${fx.warehouse} --catalog ${fx.catalog} --plan ${planId} --max-parallel 1 --address ${h.address} --namespace ${h.namespace} --task-queue ${queue}`);
      assert.match(failed.stderr ?? '', new RegExp(`^earthcatalog-compact: ${workflowId}: workflow was terminated`, 'm'), 'the message names the run');
      // --json: stdout has what a script needs to go on, as one JSON object.
      const ended = JSON.parse(failed.stdout ?? '') as Record<string, unknown>;
      assert.deepEqual(
        { workflowId: ended.workflowId, status: ended.status, planId: ended.planId, command: ended.command },
        { workflowId, status: 'TERMINATED', planId, command: `earthcatalog-compact ${line[2]}` },
      );
      assert.match(String(ended.error), /workflow was terminated: operator: wrong warehouse; \d+ of 12 buckets done/);
      // A cancel of the terminated run has nothing to stop, and says what finishes it; exit 1, as it did not end cleanly.
      await assert.rejects(cli(['cancel', '--workflow-id', workflowId]), (err: { stdout?: string; code?: number }) => {
        assert.equal(err.code, 1);
        assert.equal(err.stdout?.trim(), `${workflowId} already TERMINATED: nothing to cancel; ${line[1]} of 12 buckets done; finish it with earthcatalog-compact ${line[2]}`);
        return true;
      });
      await assert.rejects(cli(['cancel', '--workflow-id', workflowId, '--json']), (err: { stdout?: string; code?: number }) => {
        assert.equal(err.code, 1);
        const ended = JSON.parse(err.stdout ?? '') as Record<string, unknown>;
        assert.deepEqual({ ...ended, error: undefined }, { workflowId, status: 'TERMINATED', alreadyEnded: true, planId, command: `earthcatalog-compact ${line[2]}`, error: undefined });
        assert.match(String(ended.error), /^workflow was terminated: operator: wrong warehouse; \d+ of 12 buckets done; finish it with earthcatalog-compact resume /);
        return true;
      });
    } finally {
      await first.stop().catch(() => undefined);
      await second?.stop();
    }
  });

  it('a run cancelled before it planned says there is nothing to resume (compact, status --watch, status), status notes a lock workflow terminated under a waiter, and a run terminated before it planned is not named by status', async () => {
    const fx = await makeFixture('cancel-unplanned', TWELVE_BUCKETS);
    // The holder runs on a queue of its own whose worker stops once it compacts: it keeps the warehouse
    // lock, so the CLI's run waits for it, with no plan, until it is cancelled.
    const queue = uniqueTaskQueue('cancel-unplanned-holder');
    const holderWorker = await startWorker(h, queue);
    const holder = await h.client.workflow.start('compactWarehouse', {
      taskQueue: queue,
      workflowId: `cancel-unplanned-holder-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
    });
    try {
      await waitFor('the holder compacting', async () => ((await holder.query<CompactionProgress>('progress')).bucketsDone >= 1 ? true : undefined));
      await holderWorker.stop();
      const waiterId = `cancel-unplanned-${Date.now()}`;
      const compacting = cli(['--warehouse', fx.warehouse, '--catalog', fx.catalog, '--workflow-id', waiterId, '--json']).then(
        () => assert.fail('the cancelled run printed a summary'),
        (err: { stderr?: string; code?: number }) => err,
      );
      const waiter = h.client.workflow.getHandle(waiterId);
      await waitFor('the CLI run waiting for the lock', async () =>
        (await waiter.query<CompactionProgress>('progress').catch(() => undefined))?.phase === 'waiting-for-lock' ? true : undefined,
      );
      // The lock workflow terminated, taken for a stuck lock: the waiter's request went with it, which status says.
      // (Asked, not queued: the lock workflow runs on the holder's queue, whose worker is stopped.)
      const queued = await waitFor('the waiter asking', async () => (await waiter.query<CompactionProgress>('progress')).locks.find((l) => l.status === 'requested' || l.status === 'queued'));
      await h.client.workflow.getHandle(queued.lockId).terminate('test: taken for a stuck lock');
      const { stdout: lockNote } = await cli(['status', '--workflow-id', waiterId]);
      const lockName = queued.lockId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      assert.match(lockNote, new RegExp(`^${waiterId} RUNNING .*waiting-for-lock.* · the lock workflow ${lockName} it waits in is TERMINATED \\(taken for a stuck lock\\?\\), and its request with it: the run asks again within 5 minutes`, 'm'));
      const watching = cli(['status', '--watch', '--workflow-id', waiterId]).then(
        () => assert.fail('status --watch of a cancelled run exits non-zero'),
        (err: { stdout?: string; code?: number }) => err,
      );
      await waiter.cancel();
      const failed = await compacting;
      assert.equal(failed.code, 1);
      assert.match(failed.stderr ?? '', /workflow was cancelled; it stopped before it made or loaded a plan, so it compacted nothing: there is nothing to resume/);
      assert.doesNotMatch(failed.stderr ?? '', /finish it with/);
      const watched = await watching;
      assert.match(watched.stdout ?? '', new RegExp(`${waiterId} CANCELLED: workflow was cancelled; it stopped before it made or loaded a plan, so it compacted nothing: there is nothing to resume`));
      const { stdout } = await cli(['status', '--workflow-id', waiterId]);
      assert.match(stdout, new RegExp(`^${waiterId} CANCELLED .* · last phase waiting-for-lock$`, 'm'));
    } finally {
      await holder.terminate('test: done with the lock holder');
    }

    // Terminated while it waited for a queue nobody polls: it never planned, so status names no table.
    const idle = await makeFixture('terminated-unplanned');
    const never = await h.client.workflow.start('compactWarehouse', {
      taskQueue: uniqueTaskQueue('nobody-polls'),
      workflowId: `terminated-unplanned-${Date.now()}`,
      args: [{ warehouse: idle.warehouse, catalog: idle.catalog }],
    });
    await never.terminate('test: started on the wrong queue');
    const { warning } = await statusWarning(idle.warehouse);
    assert.equal(warning, '', 'a run that never planned left nothing to finish');
    // The holder above did plan and compact: its table is named.
    assert.match((await statusWarning(fx.warehouse)).warning, /was TERMINATED/);
  });
});

describe('a run refused for a second input', () => {
  it('is passed over by status like other runs that stopped before a plan, not offered a resume (a probe found `temporal workflow start --input … --input …` warned of)', async () => {
    const fx = await makeFixture('second-input');
    // What `temporal workflow start` with two --input flags starts: the second stands where a continuation carries its plan.
    const refused = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `second-input-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog }, { x: 1 }],
    });
    await assert.rejects(refused.result(), (err: Error) => err instanceof WorkflowFailedError && err.cause instanceof ApplicationFailure && err.cause.type === FailureTypes.invalidInput);
    assert.equal((await statusWarning(fx.warehouse)).warning, '', 'a run refused at its input compacted nothing');
  });
});

describe('progress', () => {
  it('the progress query, the UI details and the activity summaries follow the run', async () => {
    const fx = await makeFixture('progress');
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `progress-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 2 }],
      staticSummary: 'progress test',
    });
    const seen = await waitFor('buckets in flight', async () => {
      const p = await handle.query<CompactionProgress>('progress');
      return p.phase === 'compacting' && p.currentBuckets.length > 0 ? p : undefined;
    });
    assert.ok(seen.bucketsTotal > 0);
    assert.match(seen.currentBuckets[0]!, /^grid_partition=[^/]+\/year=\d{4}$/);
    const meta = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    assert.match(meta.currentDetails ?? '', /compacting/);

    const summary = (await handle.result()) as CompactionSummary;
    const final = await handle.query<CompactionProgress>('progress');
    assert.equal(final.phase, 'done');
    assert.equal(final.bucketsDone, summary.bucketsCompacted);
    assert.deepEqual(final.currentBuckets, []);

    // Each bucket is one activity, named by its bucket in the UI.
    const history = await handle.fetchHistory();
    const summaries = (history.events ?? [])
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'compactBucket')
      .map((e) => e.userMetadata?.summary?.data)
      .filter((d): d is Uint8Array => !!d)
      .map((d) => JSON.parse(Buffer.from(d).toString('utf8')) as string);
    assert.equal(summaries.length, summary.bucketsCompacted);
    assert.ok(summaries.every((s) => /^grid_partition=.+\/year=\d{4} \(\d+ files\)$/.test(s)), summaries[0]);

    const { stdout } = await cli(['status', '--workflow-id', handle.workflowId, '--json']);
    const status = JSON.parse(stdout) as { status: string; progress: CompactionProgress; summary?: CompactionSummary }[];
    assert.equal(status[0]!.status, 'COMPLETED');
    assert.equal(status[0]!.progress.phase, 'done');
    // A completed run named by its id has its summary, in text as `compact` printed it.
    assert.deepEqual(status[0]!.summary, summary);
    const { stdout: text } = await cli(['status', '--workflow-id', handle.workflowId]);
    assert.ok(text.includes(formatSummary(summary)), text);
  });
});

describe('status --watch', () => {
  it('follows a run that has no worker yet to its end and exits 0', async () => {
    const fx = await makeFixture('watch');
    // A task queue without a worker: the run cannot finish before the watcher has started.
    const idleQueue = uniqueTaskQueue('watch');
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue: idleQueue,
      workflowId: `watch-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
    });
    const watching = cli(['status', '--workflow-id', handle.workflowId, '--watch']);
    const watchingJson = cli(['status', '--workflow-id', handle.workflowId, '--watch', '--json']);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal((await handle.describe()).status.name, 'RUNNING', 'nothing ran before the worker came');
    const late = await startWorker(h, idleQueue);
    try {
      const { stdout } = await watching;
      const lines = stdout.trim().split('\n');
      assert.equal(lines[lines.length - 1], `${handle.workflowId} COMPLETED`);
      assert.ok(lines.some((l) => /\d+\/\d+ buckets · rows \d+→\d+ · failed 0 · done$/.test(l)), stdout);
      // With --json: one JSON object per line, each change of the progress, then the end.
      const json = (await watchingJson).stdout.trim().split('\n').map((l) => JSON.parse(l) as { workflowId: string; status: string; progress?: CompactionProgress });
      assert.deepEqual(json[json.length - 1], { workflowId: handle.workflowId, status: 'COMPLETED' });
      // The run finishes within a few polls once its worker is there: at least one progress line, each a change.
      const running = json.slice(0, -1);
      assert.ok(running.length >= 1 && running.every((j) => j.status === 'RUNNING' && j.progress), `progress lines before the end: ${JSON.stringify(json)}`);
      for (let i = 1; i < running.length; i++) assert.notDeepEqual(running[i], running[i - 1], 'a line only when the progress changed');
    } finally {
      await late.stop();
    }
  });

  it('a run that failed: its status line says why, and the exit code is 1', async () => {
    const missing = path.join(await makeTempDir('ec-watch-failed'), 'no-warehouse');
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `watch-failed-${Date.now()}`,
      args: [{ warehouse: missing, catalog: `${missing}.db` }],
    });
    await assert.rejects(handle.result());
    const why = `workflow failed: warehouse ${missing} does not exist or is not a directory`;
    for (const json of [false, true]) {
      await assert.rejects(cli(['status', '--workflow-id', handle.workflowId, '--watch', ...(json ? ['--json'] : [])]), (err: { stdout?: string; code?: number }) => {
        assert.equal(err.code, 1);
        const last = err.stdout!.trim().split('\n').pop()!;
        // Failed in its pre-flight: nothing to finish.
        const error = `${why}; it stopped before it made or loaded a plan, so it compacted nothing: there is nothing to resume`;
        if (json) assert.deepEqual(JSON.parse(last), { workflowId: handle.workflowId, status: 'FAILED', error });
        else assert.equal(last, `${handle.workflowId} FAILED: ${error}`);
        return true;
      });
    }
    // One refused at its input ends before it answers a query: no 'if it had made a plan' (no worker answered).
    const refused = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `watch-refused-${Date.now()}`,
      args: [{ warehouse: missing, catalog: `${missing}.db`, cells: ['a/b'] }],
    });
    await assert.rejects(refused.result());
    await assert.rejects(cli(['status', '--workflow-id', refused.workflowId, '--watch']), (err: { stdout?: string; code?: number }) => {
      assert.equal(err.code, 1);
      assert.match(err.stdout!.trim().split('\n').pop()!, /^watch-refused-\d+ FAILED: workflow failed: invalid compaction input: .*; it stopped before it made or loaded a plan, so it compacted nothing: there is nothing to resume$/);
      return true;
    });
    // Without --watch too: the ended run's line and its JSON say why it failed.
    const { stdout: text } = await cli(['status', '--workflow-id', handle.workflowId]);
    assert.match(text, new RegExp(`^${handle.workflowId} FAILED .* · ${why.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));
    const { stdout: json } = await cli(['status', '--workflow-id', handle.workflowId, '--json']);
    assert.equal((JSON.parse(json) as { error?: string }[])[0]!.error, why);
    assert.equal((await statusWarning(missing)).warning, '', 'status advises no resume of a run that planned nothing');
  });
});

describe('selected buckets', () => {
  it('compacts only the chosen years and cells; the catalog still lists every file', async () => {
    const fx = await makeFixture('select', { years: [2020, 2021, 2022] });
    const before = byBucket(await listFiles(fx.warehouse));
    const summary = (await h.client.workflow.execute('compactWarehouse', {
      taskQueue,
      workflowId: `select-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, years: [2022], cells: ['81283ffffffffff', '8128bffffffffff'] }],
    })) as CompactionSummary;
    const after = byBucket(await listFiles(fx.warehouse));
    let compacted = 0;
    for (const [b, keys] of after) {
      const chosen = b.endsWith('year=2022') && (b.includes('81283ffffffffff') || b.includes('8128bffffffffff'));
      if (chosen) {
        compacted++;
        assert.equal(keys.length, 1, `${b} was compacted`);
      } else {
        assert.deepEqual(keys, before.get(b), `${b} was left alone`);
      }
    }
    assert.equal(summary.bucketsCompacted, compacted);
    assert.equal(compacted, 2);
    const files = [...after.values()].reduce((n, k) => n + k.length, 0);
    const scan = await pyicebergScan(fx.catalog, []);
    assert.equal(scan.file_count, files, 'the rebuild registers every data file, not only the selected ones');
    assert.equal(scan.snapshot_count, 1);
  });

  it('a selection that matches no bucket is said so by status --workflow-id of the run, as compact says it, not as a wrong warehouse', async () => {
    const fx = await makeFixture('select-none', { cells: ['81283ffffffffff'], years: [2020] });
    const workflowId = `select-none-${Date.now()}`;
    // The folder is named in NFC; the cell given in NFD does not match it, byte for byte.
    const summary = (await h.client.workflow.execute('compactWarehouse', {
      taskQueue,
      workflowId,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, cells: ['zu\u0308rich'], years: [2020] }],
    })) as CompactionSummary;
    assert.equal(summary.bucketsScanned, 0);
    const { stdout } = await cli(['status', '--workflow-id', workflowId]);
    assert.match(stdout, new RegExp(`^no bucket of ${fx.warehouse.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is in the selection \\(--cells zu\u0308rich --years 2020\\): a cell matches only the folder`, 'm'));
    assert.doesNotMatch(stdout, /check --warehouse/);
  });
});

describe('--lock-timeout 0', () => {
  it('runs on a free warehouse (the timeout counts from the lock\'s answer)', async () => {
    const fx = await makeFixture('lock-timeout-0');
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `lock-timeout-0-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, lockTimeoutSeconds: 0 }],
    });
    const summary = (await handle.result()) as CompactionSummary;
    await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-lock-timeout-0');
    assert.ok(summary.bucketsCompacted > 0);
    assert.equal(summary.failedBucketsTotal, 0);
  });
});

describe('the warehouse lock through a symbolic link', () => {
  it('a run naming the warehouse through a link waits for the lock of the real path, so two runs never share a warehouse', async () => {
    const fx = await makeFixture('lock-alias');
    const alias = `${fx.warehouse}-alias`;
    await fs.symlink(fx.warehouse, alias);
    const holder = await holdLock('warehouse', fx.warehouse, 'alias');
    try {
      const filesBefore = await listFiles(fx.warehouse);
      // Another catalog, so the table pre-flight (which refuses a path outside the table's) does not stop it first.
      const workflowId = `lock-alias-${Date.now()}`;
      const run = h.client.workflow.execute('compactWarehouse', {
        taskQueue,
        workflowId,
        args: [{ warehouse: alias, catalog: path.join(path.dirname(fx.catalog), 'other-catalog.db'), lockTimeoutSeconds: 0 }],
      });
      await assert.rejects(run, (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError, String(err));
        const cause = err.cause as ApplicationFailure;
        assert.equal(cause.type, FailureTypes.lockTimeout, cause.message);
        assert.match(cause.message, new RegExp(holder.holderId));
        return true;
      });
      assert.deepEqual(await listFiles(fx.warehouse), filesBefore, 'nothing compacted beside the holder');
      await maybeRecordHistory(h.address, workflowId, 'compactWarehouse-lock-by-real-path');
    } finally {
      await holder.stop();
      await fs.rm(alias);
    }
  });
});

describe('a warehouse whose real path is too long for a lock id', () => {
  it('a run naming it through a short symbolic link fails as InvalidInput naming the lock, instead of retrying a lock request Temporal refuses for ever', async () => {
    const fx = await makeFixture('lock-long-real-path');
    // Five folders of 80 × 日 (240 bytes each): a real path of over 1,200 bytes, each name within the filesystem's 255.
    const deep = path.join(path.dirname(fx.warehouse), ...Array.from({ length: 5 }, () => '日'.repeat(80)));
    await fs.mkdir(path.dirname(deep), { recursive: true });
    await fs.rename(fx.warehouse, deep);
    await fs.symlink(deep, fx.warehouse);
    const filesBefore = await listFiles(deep);
    const workflowId = `lock-long-real-path-${Date.now()}`;
    await assert.rejects(
      h.client.workflow.execute('compactWarehouse', { taskQueue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] }),
      (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError, String(err));
        const cause = err.cause as ApplicationFailure;
        assert.equal(cause.type, FailureTypes.invalidInput, cause.message);
        assert.match(cause.message, /^the warehouse lock of \/\S+ would be a workflow id of \d+ bytes, over Temporal's 1000: name the warehouse by a shorter path/);
        return true;
      },
    );
    assert.deepEqual(await listFiles(deep), filesBefore, 'nothing compacted');
    await maybeRecordHistory(h.address, workflowId, 'compactWarehouse-lock-id-too-long');
  });
});

/** The table's current metadata location in a local catalog.db. */
function tablePointer(catalogDb: string): string {
  const db = new Database(catalogDb, { readonly: true, fileMustExist: true });
  try {
    return (db.prepare('SELECT metadata_location FROM iceberg_tables').get() as { metadata_location: string }).metadata_location;
  } finally {
    db.close();
  }
}

type HistoryEvent = NonNullable<NonNullable<Awaited<ReturnType<TemporalHarness['client']['workflowService']['getWorkflowExecutionHistory']>>['history']>['events']>[number];

/**
 * `temporal workflow reset` of a run's first execution to the first workflow task completed after the
 * event `after` picks (by index in the history); returns that task's event id and the new run's id.
 */
async function resetAfter(
  workflowId: string,
  firstRunId: string,
  after: (events: HistoryEvent[]) => number,
  reason: string,
): Promise<{ taskDone: number; runId: string }> {
  const { history } = await h.client.workflowService.getWorkflowExecutionHistory({ namespace: h.namespace, execution: { workflowId, runId: firstRunId } });
  const events = history!.events!;
  const from = after(events);
  assert.ok(from > 0, `found the event to reset after (${reason})`);
  const taskDone = events.slice(from).find((e) => e.workflowTaskCompletedEventAttributes)!;
  const { runId } = await h.client.workflowService.resetWorkflowExecution({
    namespace: h.namespace,
    workflowExecution: { workflowId, runId: firstRunId },
    workflowTaskFinishEventId: taskDone.eventId,
    requestId: `reset-${Date.now()}`,
    reason: `test: ${reason}`,
  });
  return { taskDone: taskDone.eventId!.toNumber(), runId: runId! };
}

/** The run `runId` of `workflowId` fails as LockLost, naming `holderId` as the lock's holder. */
async function assertLockLostTo(workflowId: string, runId: string, holderId: string): Promise<void> {
  await assert.rejects(h.client.workflow.getHandle(workflowId, runId).result(), (err: unknown) => {
    assert.ok(err instanceof WorkflowFailedError, String(err));
    const cause = err.cause as ApplicationFailure;
    assert.equal(cause.type, FailureTypes.lockLost);
    assert.match(cause.message, new RegExp(`no longer held by this run \\(it is held by workflow ${holderId}\\)`));
    return true;
  });
}

describe('a run reset past its lock grant', () => {
  it('fails as LockLost naming the holder instead of writing beside it; nothing rebuilt', async () => {
    const fx = await makeFixture('reset-past-grant', { cells: ['8128bffffffffff'], years: [2021, 2022] });
    const workflowId = `reset-past-grant-${Date.now()}`;
    const first = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
    const summary = (await first.result()) as CompactionSummary;
    assert.equal(summary.bucketsCompacted, 2);
    const filesAfter = await listFiles(fx.warehouse);
    const pointerAfter = tablePointer(fx.catalog);
    const plansDir = path.join(fx.warehouse, '_earthcatalog_compaction', 'plans');
    const plansAfter = await fs.readdir(plansDir);

    // Another workflow holds the warehouse lock now, as the next scheduled run would.
    const holder = await holdLock('warehouse', fx.warehouse, 'reset');
    try {
      // `temporal workflow reset` to the workflow task right after the warehouse lock's grant.
      const { runId } = await resetAfter(
        workflowId,
        first.firstExecutionRunId,
        (events) => events.findIndex((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'earthcatalog.lock.granted'),
        'reset past the lock grant',
      );
      await assertLockLostTo(workflowId, runId, holder.holderId);
      await maybeRecordHistory(h.address, workflowId, 'compactWarehouse-reset-lock-lost');
      assert.deepEqual(await listFiles(fx.warehouse), filesAfter, 'the reset run wrote nothing');
      // Not even a plan: one written beside the holder made the holder's own resume refuse its plan as older.
      assert.deepEqual(await fs.readdir(plansDir), plansAfter, 'the reset run made no plan');

      assert.equal(tablePointer(fx.catalog), pointerAfter, 'and rebuilt nothing');
      const lock = await h.client.workflow.getHandle(lockWorkflowId('warehouse', fx.warehouse)).query(lockStateQuery);
      assert.equal(lock.holder?.workflowId, holder.holderId, "the real holder keeps the lock (the reset run's release names a stale request)");
    } finally {
      await holder.stop();
    }
  });
});

describe('a run reset to the grant of its catalog lock', () => {
  it('asks again for both locks before rebuilding and fails as LockLost naming the holder: nothing rebuilt beside it', async () => {
    const fx = await makeFixture('reset-catalog-grant', { cells: ['8128bffffffffff'], years: [2021] });
    const workflowId = `reset-catalog-grant-${Date.now()}`;
    const first = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
    assert.equal(((await first.result()) as CompactionSummary).bucketsCompacted, 1);
    const pointerAfter = tablePointer(fx.catalog);

    // The next run holds the warehouse lock (and would delete inputs the reset run's table would list).
    const holder = await holdLock('warehouse', fx.warehouse, 'reset-catalog-grant');
    try {
      // Past the warehouse lock check before the rebuild: the catalog lock's grant, the last grant of the run.
      const { runId } = await resetAfter(
        workflowId,
        first.firstExecutionRunId,
        (events) => events.reduce((last, e, i) => (e.workflowExecutionSignaledEventAttributes?.signalName === 'earthcatalog.lock.granted' ? i : last), -1),
        'reset to the catalog lock grant',
      );
      await assertLockLostTo(workflowId, runId, holder.holderId);
      await maybeRecordHistory(h.address, workflowId, 'compactWarehouse-reset-catalog-grant-lock-lost');
      const events = (await h.client.workflow.getHandle(workflowId, runId).fetchHistory()).events ?? [];
      const rebuilds = events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'rebuildCatalog');
      assert.equal(rebuilds.length, 0, 'the reset run scheduled no rebuild');
      assert.equal(tablePointer(fx.catalog), pointerAfter, 'and the table was not rebuilt');
    } finally {
      await holder.stop();
    }
  });
});

describe('a run terminated while a bucket was silent', () => {
  it('status names no bucket as to be retried: an ended run retries nothing, though the server still lists what it had pending', async () => {
    const fx = await makeFixture('terminated-silent', { cells: ['8128bffffffffff'], years: [2021] });
    const { queue, stop } = await startWorkerWithFaults('terminated-silent', () => ({
      // Stands in for a worker lost mid-bucket (this fixture's buckets take milliseconds): no heartbeat, no end until the worker stops.
      compactBucket: () => new Promise((_resolve, reject) => Context.current().cancellationSignal.addEventListener('abort', () => reject(new Error('worker stopped')))),
    }));
    const workflowId = `terminated-silent-${Date.now()}`;
    try {
      const handle = await h.client.workflow.start('compactWarehouse', { taskQueue: queue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
      await waitFor('a bucket silent for over 20 s', async () => (silentBucketCount((await handle.describe()).raw.pendingActivities ?? [], Date.now()) > 0 ? true : undefined), 60_000);
      await handle.terminate('test: operator stopped it');
      const { stdout } = await run(process.execPath, [...cliArgv(['status', '--workflow-id', workflowId]).slice(0, -1), queue], { cwd: REPO_ROOT });
      assert.match(stdout, new RegExp(`^${workflowId} TERMINATED`), stdout);
      assert.doesNotMatch(stdout, /without a heartbeat|retried on another/, stdout);
    } finally {
      await stop();
    }
  });
});

describe('a run with a paused bucket', () => {
  it('status names the paused bucket and the unpause command, which the run then goes on with (a probe found it standing still without a word)', async () => {
    const fx = await makeFixture('paused-bucket', { cells: ['8128bffffffffff'], years: [2021] });
    let calls = 0;
    const { queue, stop } = await startWorkerWithFaults('paused-bucket', (activities) => ({
      // The first attempt heartbeats until the pause stops it (this fixture's bucket takes milliseconds); the next one compacts.
      compactBucket: async (req) => {
        if (calls++ > 0) return activities.compactBucket(req);
        const ctx = Context.current();
        const beat = setInterval(() => ctx.heartbeat({ phase: 'held' }), 500);
        try {
          await new Promise((_resolve, reject) => ctx.cancellationSignal.addEventListener('abort', () => reject(new Error('stopped by the pause'))));
        } finally {
          clearInterval(beat);
        }
        throw new Error('unreachable');
      },
    }));
    const workflowId = `paused-bucket-${Date.now()}`;
    const onQueue = (args: string[]) => run(process.execPath, [...cliArgv(args).slice(0, -1), queue], { cwd: REPO_ROOT });
    try {
      const handle = await h.client.workflow.start('compactWarehouse', { taskQueue: queue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
      const bucket = await waitFor('the bucket attempt started', async () =>
        ((await handle.describe()).raw.pendingActivities ?? []).find((a) => a.activityType?.name === 'compactBucket' && calls > 0),
      );
      const activityId = bucket.activityId!;
      await h.client.workflowService.pauseActivity({ namespace: h.namespace, execution: { workflowId }, id: activityId, identity: 'test', reason: 'test: an operator holds it' });
      // Paused for good once its attempt has stopped (at its next heartbeat): then nothing runs it.
      await waitFor(
        'the attempt stopped by the pause',
        async () => ((await handle.describe()).raw.pendingActivities ?? []).find((a) => a.activityId === activityId && a.paused && a.state === 4),
        60_000,
      );
      const { stdout } = await onQueue(['status', '--workflow-id', workflowId]);
      const command = new RegExp(
        `^${workflowId} RUNNING .* · 1 bucket\\(s\\) paused: the run waits, holding its locks, until it is unpaused: (temporal activity unpause --workflow-id ${workflowId} --address ${h.address} --namespace ${h.namespace} --activity-id ${activityId})$`,
        'm',
      ).exec(stdout)?.[1];
      assert.ok(command, stdout);
      const [entry] = JSON.parse((await onQueue(['status', '--workflow-id', workflowId, '--json'])).stdout) as Record<string, unknown>[];
      assert.deepEqual(entry?.pausedActivities, [{ activityId, activityType: 'compactBucket' }]);
      // The command as printed, through the temporal CLI: the run goes on with the bucket and completes.
      const temporal = findTemporalCli();
      assert.ok(temporal, 'the temporal CLI is installed');
      await run(temporal, command.split(' ').slice(1));
      const summary = (await handle.result()) as CompactionSummary;
      assert.equal(summary.bucketsCompacted, 1);
      assert.equal(calls, 2, 'one attempt paused, the next one compacted');
    } finally {
      await h.client.workflow.getHandle(workflowId).terminate('test over').catch(() => undefined);
      await stop();
    }
  });
});

describe('a run whose worker hangs', () => {
  it('status says that workers polled its queue lately, and that they may have stopped since', async () => {
    const fx = await makeFixture('hung-worker', { cells: ['8128bffffffffff'], years: [2021] });
    const queue = uniqueTaskQueue('hung-worker');
    const workflowId = `hung-worker-${Date.now()}`;
    // The run waits for the warehouse lock: it stays running, answering queries while its worker does.
    const holder = await holdLock('warehouse', fx.warehouse, 'hung-worker');
    const worker = spawnWorkerProcess(h, queue);
    try {
      const handle = await h.client.workflow.start('compactWarehouse', { taskQueue: queue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
      await waitFor('the run answers its progress query', async () => handle.query<CompactionProgress>('progress').catch(() => undefined));
      worker.child.kill('SIGSTOP');
      const { stdout } = await run(process.execPath, [...cliArgv(['status', '--workflow-id', workflowId]).slice(0, -1), queue], { cwd: REPO_ROOT });
      assert.match(stdout, new RegExp(`^${workflowId} RUNNING \\(no progress answer within 10 s, though 1 worker\\(s\\) polled task queue ${queue} in the last 90 s: the worker that holds the run may be gone or hung`));
      // The ones counted may have stopped since (the server keeps a cleanly stopped worker's last poll).
      assert.match(stdout, new RegExp(`or they have all stopped since: is a worker still running\\? earthcatalog-compact worker --task-queue ${queue}`));
    } finally {
      worker.child.kill('SIGCONT');
      await h.client.workflow.getHandle(workflowId).terminate('test over').catch(() => undefined);
      await worker.stop();
      await holder.stop();
    }
  });
});

describe('a finished run reset past its plan', () => {
  /** Compacts `fx` under `workflowId`; then `between` runs; then the run is reset past its plan and fails as LockLost. */
  async function resetFinishedRun(fx: { warehouse: string; catalog: string }, workflowId: string, between: () => Promise<void> = async () => {}) {
    const first = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
    const summary = (await first.result()) as CompactionSummary;
    await between();
    const filesBefore = await listFiles(fx.warehouse);
    const { runId } = await resetAfter(
      workflowId,
      first.firstExecutionRunId,
      (events) => {
        const planned = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'planCompaction')!.eventId!.toString();
        return events.findIndex((e) => e.activityTaskCompletedEventAttributes?.scheduledEventId?.toString() === planned);
      },
      'reset past the plan',
    );
    await assert.rejects(h.client.workflow.getHandle(workflowId, runId).result(), (err: unknown) => {
      assert.equal(((err as WorkflowFailedError).cause as ApplicationFailure).type, FailureTypes.lockLost, String(err));
      return true;
    });
    assert.deepEqual(await listFiles(fx.warehouse), filesBefore, 'the reset run wrote nothing');
    return { summary, runId };
  }

  it('fails as LockLost, and status neither calls the table stale for it nor offers to resume the plan it replayed, which had finished', async () => {
    const fx = await makeFixture('reset-finished', { cells: ['8128bffffffffff'], years: [2021, 2022] });
    const workflowId = `reset-finished-${Date.now()}`;
    const { summary, runId } = await resetFinishedRun(fx, workflowId);
    assert.equal((await statusWarning(fx.warehouse)).warning, '', 'status does not call the table stale');
    assert.match(
      (await stoppedRunOutcome(h.client, { workflowId, runId, taskQueue }, [])).text,
      new RegExp(`; an earlier run, ${workflowId}, finished its plan at \\S+: there is nothing to resume$`),
      `the plan ${summary.planId} is not offered for resume`,
    );
  });

  it('is passed over, not a run before it that did leave the table stale (terminated while it waited to rebuild)', async () => {
    const fx = await makeFixture('reset-finished-stale', { cells: ['8128bffffffffff'], years: [2021] });
    const workflowId = `reset-finished-first-${Date.now()}`;
    const staleId = `reset-finished-stale-${Date.now()}`;
    await resetFinishedRun(fx, workflowId, async () => {
      // New ingest, compacted by a run terminated while it waited for the catalog lock to rebuild.
      const [compacted] = await listFiles(fx.warehouse);
      await fs.copyFile(path.join(fx.warehouse, compacted!), path.join(fx.warehouse, path.dirname(compacted!), 'part_99999_late.parquet'));
      const holder = await holdLock('catalog', fx.catalog, 'reset-finished-stale');
      try {
        const staleRun = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId: staleId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
        await waitFor('the bucket compacted, the run waiting for the catalog lock', async () => {
          const p = await staleRun.query<CompactionProgress>('progress');
          return p.phase === 'waiting-for-catalog-lock' ? p : undefined;
        });
        await staleRun.terminate('test: stopped before its rebuild');
      } finally {
        await holder.stop();
      }
    });
    const { warning, hint } = await statusWarning(fx.warehouse);
    assert.match(warning, new RegExp(`the latest compaction of ${fx.warehouse}, ${staleId}, was TERMINATED`));
    assert.match(hint ?? '', /^resume --warehouse /);
  });
});

describe('a run reset to a point within a page', () => {
  it('asks for the lock before its next bucket (its last confirmation is over 10 s old) and fails as LockLost, starting no bucket', async () => {
    const fx = await makeFixture('reset-in-page', { cells: ['8128bffffffffff', '8129bffffffffff'], years: [2021, 2022] });
    const workflowId = `reset-in-page-${Date.now()}`;
    const first = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
    });
    const summary = (await first.result()) as CompactionSummary;
    assert.equal(summary.bucketsCompacted, 4);
    const holder = await holdLock('warehouse', fx.warehouse, 'reset-in-page');
    try {
      // Past the 10 s for which a confirmation counts, as any reset by hand is.
      await new Promise((r) => setTimeout(r, 10_500));
      const { taskDone, runId } = await resetAfter(
        workflowId,
        first.firstExecutionRunId,
        (events) =>
          events.findIndex(
            (e) =>
              e.activityTaskCompletedEventAttributes &&
              events.find((x) => x.eventId?.equals(e.activityTaskCompletedEventAttributes!.scheduledEventId!))?.activityTaskScheduledEventAttributes?.activityType?.name === 'compactBucket',
          ),
        'reset within a page, after its first bucket',
      );
      await assert.rejects(h.client.workflow.getHandle(workflowId, runId).result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError, String(err));
        assert.equal((err.cause as ApplicationFailure).type, FailureTypes.lockLost);
        return true;
      });
      await maybeRecordHistory(h.address, workflowId, 'compactWarehouse-reset-in-page');
      const reset = await h.client.workflowService.getWorkflowExecutionHistory({ namespace: h.namespace, execution: { workflowId, runId } });
      const scheduledAfter = reset.history!.events!
        .filter((e) => e.eventId!.toNumber() > taskDone)
        .map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name)
        .filter((name): name is string => name !== undefined);
      assert.ok(!scheduledAfter.includes('compactBucket'), `no bucket started after the reset point: ${scheduledAfter.join(', ')}`);
      assert.equal(scheduledAfter[0], 'lockHolder', 'the lock was asked first');
    } finally {
      await holder.stop();
    }
  });
});

describe('--use-lock', () => {
  it("waits for the Python pipeline's lock object where --pipeline-lock names it, holds it while running, releases it", async () => {
    const fx = await makeFixture('pylock');
    // Where the pipeline's store_config puts it, outside the warehouse (its store and lock key).
    const { lockFile } = await holdPythonLock(fx.warehouse, path.join(await makeTempDir('ec-pylock-store'), 'catalog', '.lock'));
    const filesBefore = await listFiles(fx.warehouse);

    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `pylock-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, useLock: true, pipelineLock: lockFile }],
    });
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(await listFiles(fx.warehouse), filesBefore, 'nothing happens while the Python pipeline holds its lock');
    await fs.rm(lockFile);

    const held = await waitFor('our lock object', async () => {
      const body = await fs.readFile(lockFile, 'utf8');
      return (JSON.parse(body) as { owner: string }).owner;
    });
    assert.equal(held, handle.workflowId);
    const summary = (await handle.result()) as CompactionSummary;
    assert.ok(summary.bucketsCompacted > 0);
    await assert.rejects(fs.access(lockFile), 'released at the end');
    await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-use-lock-renewed');
    // Taken once, then renewed after each page of the plan (a run longer than the object's 24 h keeps it).
    const events = (await handle.fetchHistory()).events ?? [];
    const takes = events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'acquirePipelineLock').length;
    const manifest = JSON.parse(await fs.readFile(path.join(fx.warehouse, '_earthcatalog_compaction', 'plans', summary.planId, 'manifest.json'), 'utf8')) as { summary: { pages: number } };
    assert.equal(takes, 1 + manifest.summary.pages);
  });
});

describe('--use-lock in a dry run', () => {
  it("looks at the Python pipeline's lock object without taking it, and says a run would wait for it", async () => {
    const fx = await makeFixture('pylock-dry');
    const { lockFile, body } = await holdPythonLock(fx.warehouse);
    const filesBefore = await listFiles(fx.warehouse);
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `pylock-dry-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, useLock: true, dryRun: true }],
    });
    const summary = (await handle.result()) as CompactionSummary;
    assert.ok(summary.dryRun && summary.bucketsCompacted > 0);
    assert.match(summary.pipelineLock ?? '', new RegExp(`^pipeline lock ${lockFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is held by incremental on py-host until \\S+: a run would wait for it \\(about 5 minutes\\), then fail$`));
    assert.equal(await fs.readFile(lockFile, 'utf8'), body, 'the object untouched');
    assert.deepEqual(await listFiles(fx.warehouse), filesBefore, 'nothing written');
    await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-dry-run-pipeline-lock');
    // Free, the run would take it at once: nothing to say.
    await fs.rm(lockFile);
    const free = (await h.client.workflow.execute('compactWarehouse', {
      taskQueue,
      workflowId: `pylock-dry-free-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, useLock: true, dryRun: true }],
    })) as CompactionSummary;
    assert.equal(free.pipelineLock, undefined);
    await assert.rejects(fs.access(lockFile), 'not taken');
  });
});

describe('--use-lock when a cancel lands while an attempt to take the object runs', () => {
  it('the run ends Cancelled, not Failed with the held lock as its reason, and the Python lock stays', async () => {
    // Each attempt is held 4 s before it looks at the object, so the cancel lands while one runs: a
    // matter of timing this test cannot cause otherwise (an attempt takes milliseconds).
    const { queue, stop } = await startWorkerWithFaults('pylock-cancel-mid-attempt', (activities) => ({
      acquirePipelineLock: async (req) => {
        await new Promise((r) => setTimeout(r, 4000));
        return activities.acquirePipelineLock(req);
      },
    }));
    try {
      const fx = await makeFixture('pylock-cancel-mid-attempt');
      const { lockFile, body } = await holdPythonLock(fx.warehouse);
      const handle = await h.client.workflow.start('compactWarehouse', {
        taskQueue: queue,
        workflowId: `pylock-cancel-mid-attempt-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog, useLock: true }],
      });
      await waitFor('the run waits for the Python lock', async () =>
        (await handle.query<CompactionProgress>('progress')).phase === 'waiting-for-pipeline-lock' ? true : undefined,
      );
      await handle.cancel();
      await assert.rejects(handle.result(), (err: Error) => {
        assert.ok(err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure, `cause: ${String((err as WorkflowFailedError).cause)}`);
        return true;
      });
      assert.equal((await handle.describe()).status.name, 'CANCELLED');
      assert.equal(await fs.readFile(lockFile, 'utf8'), body, "the Python pipeline's lock object is not ours to remove");
      await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-cancelled-taking-pipeline-lock');
    } finally {
      await stop();
    }
  });
});

describe('--use-lock when releasing the lock object fails', () => {
  it('the run still completes with its summary, and the object stays for its expiry or the next run', async () => {
    // A fault that cannot be caused for real here (the tests run as root, and moto does not enforce
    // policies): the release activity is replaced by one that is denied, as a role without DeleteObject is.
    const { queue, stop } = await startWorkerWithFaults('ops-release-denied', () => ({
      releasePipelineLock: async () => {
        throw ApplicationFailure.nonRetryable('access denied deleting .lock', FailureTypes.storageDenied);
      },
    }));
    try {
      const fx = await makeFixture('release-denied');
      const handle = await h.client.workflow.start('compactWarehouse', {
        taskQueue: queue,
        workflowId: `release-denied-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog, useLock: true }],
      });
      const summary = (await handle.result()) as CompactionSummary;
      await maybeRecordHistory(h.address, handle.workflowId, 'compactWarehouse-use-lock-release-denied');
      assert.ok(summary.bucketsCompacted > 0);
      assert.equal(summary.failedBucketsTotal, 0);
      const lock = JSON.parse(await fs.readFile(pythonLockFile(fx.warehouse), 'utf8')) as { owner: string };
      assert.equal(lock.owner, handle.workflowId, 'the object stays, naming the run');
    } finally {
      await stop();
    }
  });
});

describe('--use-lock after a terminated run', () => {
  it("resume takes over the lock object of the terminated run, which could not release it", async () => {
    const fx = await makeFixture('pylock-terminated', { cells: ['81283ffffffffff', '8128bffffffffff'], years: [2020, 2021, 2022] });
    const lockFile = pythonLockFile(fx.warehouse);
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue,
      workflowId: `pylock-terminated-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1, useLock: true }],
    });
    const progress = await waitFor('a bucket done', async () => {
      const p = await handle.query<CompactionProgress>('progress');
      return p.bucketsDone >= 1 ? p : undefined;
    });
    await handle.terminate('test: operator killed it');
    const left = JSON.parse(await fs.readFile(lockFile, 'utf8')) as { owner: string };
    assert.equal(left.owner, handle.workflowId, 'a terminated run leaves its lock object behind');

    const { warning, hint } = await waitFor('status naming the terminated run', async () => {
      const seen = await statusWarning(fx.warehouse);
      return seen.warning ? seen : undefined;
    });
    assert.match(warning, /the Python pipeline waits for its lock object/);
    assert.equal(hint, `resume --warehouse ${fx.warehouse} --catalog ${fx.catalog} --use-lock --max-parallel 1 --address ${h.address} --namespace ${h.namespace} --task-queue ${taskQueue}`);

    const { stdout } = await cli([...hint.split(' '), '--json']);
    const summary = JSON.parse(stdout) as CompactionSummary;
    assert.equal(summary.planId, progress.planId);
    assert.equal(summary.failedBucketsTotal, 0);
    await assert.rejects(fs.access(lockFile), 'the resumed run released the lock object it took over');
    assert.deepEqual((await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog })).violations, []);
  });
});

describe('worker shutdown', () => {
  /** A run of the fixture's one bucket, once the bucket's first attempt runs on the worker of `queue`. */
  async function startedBucket(queue: string, fx: { warehouse: string; catalog: string }, name: string) {
    const handle = await h.client.workflow.start('compactWarehouse', {
      taskQueue: queue,
      workflowId: `${name}-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
    });
    // The worker process bundles the workflows first: more than the default minute on two busy cores.
    await waitFor(
      'the bucket activity running',
      async () => {
        const pending = (await handle.describe()).raw.pendingActivities ?? [];
        return pending.some((a) => a.activityType?.name === 'compactBucket' && a.attempt === 1 && a.lastStartedTime) ? true : undefined;
      },
      180_000,
    );
    return handle;
  }

  it('a cancelled run says so in the worker log, with its buckets done (the SDK logs failed runs only)', async () => {
    const fx = await makeFixture('cancel-logged', { cells: ['8128bffffffffff'], years: [2021] });
    const queue = uniqueTaskQueue('cancel-logged');
    const worker = spawnWorkerProcess(h, queue);
    const holder = await holdLock('warehouse', fx.warehouse, 'cancel-logged');
    try {
      const handle = await h.client.workflow.start('compactWarehouse', { taskQueue: queue, workflowId: `cancel-logged-${Date.now()}`, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }] });
      await waitFor('the run waiting for the lock', async () => ((await handle.query<CompactionProgress>('progress')).phase === 'waiting-for-lock' ? true : undefined), 180_000);
      await handle.cancel();
      await assert.rejects(handle.result());
      const line = await waitFor('the line of the cancelled run', async () => worker.output().split('\n').find((l) => l.includes(' cancelled: ')), 10_000);
      assert.match(line, /^\S+ \[INFO\] compaction of \S+ cancelled: 0 of 0 buckets done \{.*planId: 'none'.*\}$/);
      assert.ok(line.includes(fx.warehouse), line);
    } finally {
      await holder.stop();
      await worker.stop();
    }
  });

  it("the SDK core's own warnings reach the worker's log as its other lines do: one line each, without colour codes", async () => {
    const queue = uniqueTaskQueue('core-warning');
    const worker = spawnWorkerProcess(h, queue);
    const workflowId = `core-warning-${Date.now()}`;
    try {
      // A workflow type the worker does not have: the core fails its workflow task and warns about it.
      await h.client.workflow.start('noSuchWorkflowType', { taskQueue: queue, workflowId, args: [] });
      const line = await waitFor('the core warning in the worker log', async () => worker.output().split('\n').find((l) => l.includes('Failing workflow task')), 180_000);
      assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[WARN\] Failing workflow task/, line);
      assert.doesNotMatch(worker.output(), /\x1b\[/, 'no colour codes anywhere in the log');
    } finally {
      await h.client.workflow.getHandle(workflowId).terminate('test over').catch(() => undefined);
      await worker.stop();
    }
  });

  it('a SIGTERM delivered twice while the worker starts (it bundles for seconds) ends it cleanly: exit 0, its scratch directory removed', async () => {
    const scratchRoot = await makeTempDir('ec-stop-at-start');
    const starting = spawnWorkerProcess(h, uniqueTaskQueue('stop-at-start'), {}, ['--scratch-dir', scratchRoot]);
    try {
      // The worker's own directory is made before it connects and bundles: the signals land during start-up.
      const own = await waitFor('the worker scratch directory', async () => (await fs.readdir(scratchRoot)).find((d) => d.startsWith('worker-')));
      starting.child.kill('SIGTERM');
      // Within the 1 s that counts as one stop, but apart: two signals that land while the bundler blocks the event loop reach Node as one.
      await new Promise((resolve) => setTimeout(resolve, 600));
      starting.child.kill('SIGTERM');
      const exit = await starting.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, starting.output());
      assert.deepEqual(await fs.readdir(scratchRoot), [], `${own} removed by the worker itself`);
    } finally {
      await starting.stop();
    }
  });

  it('with --shutdown-grace, a SIGTERM (delivered twice, as `timeout` does) lets the bucket in flight finish on its first attempt before the worker exits', async () => {
    // One bucket of wide rows that takes a few seconds on one thread, so the signal lands mid-way; the
    // compaction reports progress every range it sorts, where a cancellation would stop it.
    const fx = await makeFixture('shutdown-grace', { cells: ['81283ffffffffff'], years: [2020], partsPerBucket: [4, 4], rowsPerPart: 60_000, wideColumns: true });
    const queue = uniqueTaskQueue('grace');
    // 1 GB: the generator writes each part as one row group whose `assets` page alone needs ~128 MB to read.
    const leaving = spawnWorkerProcess(h, queue, {}, ['--shutdown-grace', '300', '--memory-budget-mb', '1024']);
    try {
      const handle = await startedBucket(queue, fx, 'shutdown-grace');
      const killedAt = Date.now();
      leaving.child.kill('SIGTERM');
      // coreutils `timeout` signals the worker, then its process group: the same stop, after the SDK's handler has run.
      await new Promise((resolve) => setTimeout(resolve, 200));
      leaving.child.kill('SIGTERM');
      const exit = await leaving.exited;
      assert.equal(exit.code, 0, leaving.output());

      const events = (await handle.fetchHistory()).events ?? [];
      const bucketScheduled = events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'compactBucket').map((e) => String(e.eventId));
      assert.equal(bucketScheduled.length, 1);
      const started = events.find((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId) === bucketScheduled[0]);
      const completed = events.find((e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === bucketScheduled[0]);
      assert.ok(completed, 'the bucket completed before the worker exited');
      const completedAt = Number(completed.eventTime?.seconds ?? 0) * 1000 + (completed.eventTime?.nanos ?? 0) / 1e6;
      assert.ok(completedAt >= killedAt - 100, 'the bucket was still running when the signal came (else this test proves nothing)');
      assert.equal(started?.activityTaskStartedEventAttributes?.attempt, 1, 'on its first attempt: it was not cancelled and retried');

      // The rest of the run (the catalog rebuild) waits for a worker.
      const next = await startWorker(h, queue);
      try {
        const summary = (await handle.result()) as CompactionSummary;
        assert.equal(summary.bucketsCompacted, 1);
        assert.equal(summary.failedBucketsTotal, 0);
      } finally {
        await next.stop();
      }
      assert.deepEqual((await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog })).violations, []);
    } finally {
      await leaving.stop();
    }
  });

  it('without a grace, a SIGTERM stops the bucket in flight, the worker log names it and its phase, and another worker finishes it on its next attempt', async () => {
    const fx = await makeFixture('shutdown-no-grace', { cells: ['81283ffffffffff'], years: [2020], partsPerBucket: [4, 4], rowsPerPart: 60_000, wideColumns: true });
    // The rows and ids the bucket holds before, counted apart from the engine's own figures.
    const inputs = [...byBucket(await listFiles(fx.warehouse)).values()].flat().map((k) => path.join(fx.warehouse, k));
    const session = await openDuckSession({ tempDir: await makeTempDir('ec-no-grace-duck'), threads: 1 });
    const [before] = await session
      .rows(`SELECT count(*)::INTEGER AS n, count(DISTINCT id)::INTEGER AS ids FROM read_parquet([${inputs.map(sqlString).join(', ')}], union_by_name = true, hive_partitioning = false)`)
      .finally(() => session.close());
    const queue = uniqueTaskQueue('no-grace');
    const leaving = spawnWorkerProcess(h, queue, {}, ['--memory-budget-mb', '1024']);
    try {
      const handle = await startedBucket(queue, fx, 'shutdown-no-grace');
      leaving.child.kill('SIGTERM');
      const exit = await leaving.exited;
      assert.equal(exit.code, 0, leaving.output());
      assert.match(
        leaving.output(),
        /bucket grid_partition=81283ffffffffff\/year=2020 stopped by this worker's shutdown in phase \S+ before it finished \(a longer --shutdown-grace lets a bucket finish\)/,
        leaving.output(),
      );

      // As much memory as the first had: these rows need it (see above).
      const next = await startWorker(h, queue, { memoryBudgetMb: 1024, maxConcurrentBuckets: 1 });
      try {
        const summary = (await handle.result()) as CompactionSummary;
        assert.deepEqual([summary.bucketsCompacted, summary.failedBucketsTotal, summary.rowsBefore, summary.rowsAfter], [1, 0, before?.n, before?.ids]);
      } finally {
        await next.stop();
      }
      assert.equal((await pyicebergScan(fx.catalog, [])).row_count, before?.ids, 'every id in the table once');
      const events = (await handle.fetchHistory()).events ?? [];
      const attempts = events.flatMap((e) => (e.activityTaskStartedEventAttributes && events.some((s) => String(s.eventId) === String(e.activityTaskStartedEventAttributes?.scheduledEventId) && s.activityTaskScheduledEventAttributes?.activityType?.name === 'compactBucket') ? [e.activityTaskStartedEventAttributes.attempt] : []));
      assert.ok(attempts.every((a) => (a ?? 0) >= 2), `the bucket completed on a later attempt than the one stopped: ${attempts.join(',')}`);
      assert.deepEqual((await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog })).violations, []);
    } finally {
      await leaving.stop();
    }
  });
});

describe('scheduled and ad-hoc runs on one warehouse', () => {
  it('never overlap: the second waits for the lock and finds the work done', async () => {
    const fx = await makeFixture('sched-vs-adhoc');
    const input = { warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 };
    const schedule = await createCompactionSchedule(h.client, {
      input,
      taskQueue,
      scheduleId: `ops-schedule-${Date.now()}`,
      spec: { intervals: [{ every: '1 hour' }] },
      paused: true,
    });
    try {
      const adhoc = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId: `adhoc-${Date.now()}`, args: [input] });
      await waitFor('ad-hoc run holds the lock', async () =>
        (await h.client.workflow.getHandle(lockWorkflowId('warehouse', fx.warehouse)).query(lockStateQuery)).holder?.workflowId === adhoc.workflowId ? true : undefined,
      );
      await schedule.trigger();
      const scheduledId = await waitFor('the scheduled run started', async () => {
        const d = await schedule.describe();
        return d.info.recentActions[0]?.action.workflow.workflowId;
      });
      // While the ad-hoc run holds the lock, the scheduled run is queued behind it.
      const queued = await waitFor('scheduled run queued', async () => {
        const s = await h.client.workflow.getHandle(lockWorkflowId('warehouse', fx.warehouse)).query(lockStateQuery);
        return s.queue.some((q) => q.workflowId === scheduledId) ? s : undefined;
      });
      assert.equal(queued.holder?.workflowId, adhoc.workflowId);
      const a = (await adhoc.result()) as CompactionSummary;
      const s = (await h.client.workflow.getHandle(scheduledId).result()) as CompactionSummary;
      assert.ok(a.bucketsCompacted > 0);
      assert.equal(s.bucketsCompacted, 0, 'the scheduled run planned after the ad-hoc run had finished');
    } finally {
      await schedule.delete();
    }
  });
});

describe('TypeScript API', () => {
  it('compactWarehouse({ warehouse, catalog, threshold, dryRun, useLock }) returns the summary', async () => {
    const fx = await makeFixture('api');
    const seen: CompactionProgress[] = [];
    const summary = await compactWarehouse(
      { warehouse: fx.warehouse, catalog: fx.catalog, threshold: 2, dryRun: false, useLock: false },
      { address: h.address, namespace: h.namespace, taskQueue, onProgress: (p) => seen.push(p) },
    );
    assert.equal(summary.bucketsCompacted, summary.bucketsScanned);
    assert.equal(summary.filesAfter, summary.bucketsScanned);
    assert.ok(seen.length > 0, 'progress was reported');
    assert.equal(seen.at(-1)?.phase, 'done', 'the last report is the end');
    assert.deepEqual(seen.at(-1)?.locks, [], 'with the locks released, whatever the last answer before it saw');
  });

  it('a run that fails reaches the caller as CompactionEndedError with its failure type', async () => {
    const missing = path.join(await makeTempDir('ec-api-missing'), 'no-such-warehouse');
    await assert.rejects(
      compactWarehouse({ warehouse: missing, catalog: path.join(path.dirname(missing), 'catalog.db') }, { address: h.address, namespace: h.namespace, taskQueue }),
      (err: unknown) => {
        assert.ok(err instanceof CompactionEndedError, String(err));
        assert.equal(err.failureType, FailureTypes.storageMissing);
        assert.match(err.message, /^workflow failed: .*no-such-warehouse/);
        return true;
      },
    );
  });
});

/**
 * The compaction as a Temporal Schedule, on a real dev server with an in-process worker: a scheduled run
 * compacts a generated warehouse; the CLI's describe/pause/unpause/trigger/update/delete change the
 * schedule as the server reports it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createCompactionSchedule, describeCompactionSchedule, type CompactionScheduleReport } from '../client/commands/schedule';
import { verifyWarehouse } from '../activities/verification/verify-warehouse';
import { groupByBucket, listPhysicalDataFiles } from '../activities/verification/warehouse-files';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import type { CompactionSummary } from '../workflows/contract';
import { makeFixture } from './helpers/warehouse-fixtures';
import { REPO_ROOT, startTemporal, startWorker, uniqueTaskQueue, type RunningWorker, type TemporalHarness } from './helpers/temporal';

const execFileP = promisify(execFile);
const SCHEDULE_ID = `ec-schedule-test-${process.pid}`;

let h: TemporalHarness;
let worker: RunningWorker;
let taskQueue: string;
let warehouse: string;
let catalog: string;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(...args: string[]): Promise<CliResult> {
  const argv = [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'schedule', ...args, '--address', h.address, '--namespace', h.namespace];
  try {
    const { stdout, stderr } = await execFileP(process.execPath, argv, { cwd: REPO_ROOT });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

async function cliOk(...args: string[]): Promise<string> {
  const r = await cli(...args);
  assert.equal(r.code, 0, `schedule ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

const describeNow = () => describeCompactionSchedule(h.client, SCHEDULE_ID);

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Waits until no run of the schedule is running and returns the settled description. */
const settled = () => waitFor('the schedule to have no running action', async () => {
  const d = await describeNow();
  return d.runningWorkflowIds.length === 0 && d.recentActions.every((a) => a.status !== 'RUNNING') ? d : undefined;
});

describe('schedule', () => {
  before(async () => {
    ({ warehouse, catalog } = await makeFixture('schedule', { cells: ['8128bffffffffff', '8129bffffffffff'], years: [2022], seed: 21, partsPerBucket: [3, 3], rowsPerPart: 30 }));
    h = await startTemporal();
    taskQueue = uniqueTaskQueue('schedule');
    worker = await startWorker(h, taskQueue);
  });

  after(async () => {
    await worker?.stop();
    await h?.stop();
  });

  test('createCompactionSchedule defaults to weekly, Sunday 03:00 UTC, overlap SKIP, catch-up 1 day', async () => {
    const id = `${SCHEDULE_ID}-defaults`;
    const handle = await createCompactionSchedule(h.client, { scheduleId: id, input: { warehouse, catalog }, taskQueue, paused: true, note: 'test' });
    try {
      const d = await describeCompactionSchedule(h.client, id);
      assert.deepEqual(d.spec, ['cron 0 3 * * SUNDAY (UTC)']);
      assert.equal(d.overlap, 'SKIP');
      assert.equal(d.catchupWindowMs, 24 * 3600 * 1000);
      assert.equal(d.paused, true);
      assert.equal(d.note, 'test');
      assert.equal(d.workflowType, 'compactWarehouse');
      assert.equal(d.workflowIdPrefix, id);
      assert.deepEqual(d.input, { warehouse, catalog });
      const next = new Date(d.nextActionTimes[0]!);
      assert.equal(next.getUTCDay(), 0);
      assert.equal(next.toISOString().slice(11), '03:00:00.000Z');
      await assert.rejects(createCompactionSchedule(h.client, { scheduleId: id, input: { warehouse, catalog } }), /already exists/);
      await assert.rejects(createCompactionSchedule(h.client, { scheduleId: `${id}-bad`, input: { warehouse: 'relative/path', catalog } }), /warehouse must be an absolute path/);
    } finally {
      await handle.delete();
    }
  });

  test('a scheduled run compacts every bucket to one file and the warehouse verifies clean', async () => {
    const created = JSON.parse(
      await cliOk('create', '--schedule-id', SCHEDULE_ID, '--warehouse', warehouse, '--catalog', catalog, '--every', '5s', '--task-queue', taskQueue, '--json'),
    ) as CompactionScheduleReport;
    assert.deepEqual(created.spec, ['every 5s']);
    assert.equal(created.overlap, 'SKIP');
    assert.equal(created.taskQueue, taskQueue);
    assert.equal(created.paused, false);

    const run = await waitFor('a completed scheduled run', async () => {
      const d = await describeNow();
      return d.recentActions.find((a) => a.status === 'COMPLETED');
    });
    assert.ok(run.workflowId.startsWith(`${SCHEDULE_ID}-`), `workflow id ${run.workflowId} names the schedule`);
    const summary = (await h.client.workflow.getHandle(run.workflowId).result()) as CompactionSummary;
    // The first run does the work; later ones (every 5 s) find nothing left to compact.
    const first = (await h.client.workflow.getHandle((await describeNow()).recentActions[0]!.workflowId).result()) as CompactionSummary;
    assert.equal(first.bucketsCompacted, 2);
    assert.equal(first.filesBefore, 6);
    assert.equal(first.filesAfter, 2);
    assert.equal(summary.failedBucketsTotal, 0);

    await cliOk('pause', '--schedule-id', SCHEDULE_ID, '--note', 'checking the warehouse');
    await settled();
    const files = await listPhysicalDataFiles(new LocalWarehouseStore(warehouse));
    const perBucket = [...groupByBucket(files).values()].map((g) => g.length);
    assert.deepEqual(perBucket, [1, 1]);
    const report = await verifyWarehouse({ warehouse, catalog });
    assert.deepEqual(report.violations, []);
  });

  test('describe, pause, unpause, trigger, update and delete change what the server reports', async () => {
    const paused = await settled();
    assert.equal(paused.paused, true);
    assert.equal(paused.note, 'checking the warehouse');
    const text = await cliOk('describe', '--schedule-id', SCHEDULE_ID);
    assert.match(text, /PAUSED — checking the warehouse/);
    assert.match(text, /overlap SKIP, catch-up window 1d/);

    // A manual trigger runs even while paused, under the schedule's own overlap policy.
    const before = paused.numActionsTaken;
    const said = await cliOk('trigger', '--schedule-id', SCHEDULE_ID);
    const triggered = await waitFor('the triggered run', async () => {
      const d = await describeNow();
      return d.numActionsTaken > before ? d : undefined;
    });
    assert.equal(triggered.numActionsTaken, before + 1);
    const last = triggered.recentActions[triggered.recentActions.length - 1]!;
    assert.equal(said.trim(), `schedule ${SCHEDULE_ID} triggered: started ${last.workflowId}`);
    const rerun = (await h.client.workflow.getHandle(last.workflowId).result()) as CompactionSummary;
    assert.equal(rerun.bucketsCompacted, 0, 'nothing is left to compact');

    // Overlap SKIP: while a run of the schedule is still running, the next one is skipped. Without a
    // worker the first run stays running for sure, so the outcome does not depend on timing.
    const quiet = await settled();
    await worker.stop();
    // --json: for a script that follows the run it started (status --watch --workflow-id).
    const startedJson = JSON.parse(await cliOk('trigger', '--schedule-id', SCHEDULE_ID, '--json')) as Record<string, unknown>;
    const running = await waitFor('the run to be running', async () => {
      const d = await describeNow();
      return d.runningWorkflowIds.length === 1 ? d : undefined;
    });
    assert.deepEqual(startedJson, { scheduleId: SCHEDULE_ID, outcome: 'started', overlap: 'SKIP', workflowId: running.runningWorkflowIds[0] });
    // The CLI waits for the server's answer, so by its exit the skip is counted.
    assert.equal(
      (await cliOk('trigger', '--schedule-id', SCHEDULE_ID)).trim(),
      `schedule ${SCHEDULE_ID} trigger skipped: overlap SKIP and ${running.runningWorkflowIds[0]} is still running; nothing was started`,
    );
    assert.deepEqual(JSON.parse(await cliOk('trigger', '--schedule-id', SCHEDULE_ID, '--json')), {
      scheduleId: SCHEDULE_ID,
      outcome: 'skipped',
      overlap: 'SKIP',
      runningWorkflowId: running.runningWorkflowIds[0],
    });
    const skipped = await waitFor('the second trigger to be skipped', async () => {
      const d = await describeNow();
      return d.numActionsSkippedOverlap > quiet.numActionsSkippedOverlap ? d : undefined;
    });
    assert.equal(skipped.numActionsSkippedOverlap, quiet.numActionsSkippedOverlap + 2);
    assert.equal(skipped.numActionsTaken, quiet.numActionsTaken + 1);
    assert.deepEqual(skipped.runningWorkflowIds, running.runningWorkflowIds);
    worker = await startWorker(h, taskQueue);
    const drained = await settled();
    assert.equal(drained.numActionsTaken, quiet.numActionsTaken + 1, 'the skipped run is not started later');

    assert.deepEqual(JSON.parse(await cliOk('unpause', '--schedule-id', SCHEDULE_ID, '--note', 'back to weekly', '--json')), { scheduleId: SCHEDULE_ID, paused: false, note: 'back to weekly' });
    const unpaused = await describeNow();
    assert.equal(unpaused.paused, false);
    assert.equal(unpaused.note, 'back to weekly');

    const updated = JSON.parse(
      await cliOk('update', '--schedule-id', SCHEDULE_ID, '--cron', '30 4 * * 1', '--threshold', '3', '--catchup-window', '2h', '--json'),
    ) as CompactionScheduleReport;
    assert.deepEqual(updated.spec, ['cron 30 4 * * MONDAY (UTC)']);
    assert.deepEqual(updated.input, { warehouse, catalog, threshold: 3 });
    assert.equal(updated.catchupWindowMs, 2 * 3600 * 1000);
    assert.equal(updated.overlap, 'SKIP');
    assert.equal(updated.taskQueue, taskQueue, 'update keeps the task queue');
    // --pipeline-lock alone on a schedule that takes the lock changes its object; --no-use-lock drops both.
    await cliOk('update', '--schedule-id', SCHEDULE_ID, '--use-lock');
    const moved = JSON.parse(await cliOk('update', '--schedule-id', SCHEDULE_ID, '--pipeline-lock', 's3://lock-bucket/catalog/.lock', '--json')) as CompactionScheduleReport;
    assert.deepEqual(moved.input, { warehouse, catalog, threshold: 3, useLock: true, pipelineLock: 's3://lock-bucket/catalog/.lock' });
    const unlocked = JSON.parse(await cliOk('update', '--schedule-id', SCHEDULE_ID, '--no-use-lock', '--json')) as CompactionScheduleReport;
    assert.deepEqual(unlocked.input, { warehouse, catalog, threshold: 3, useLock: false });
    // Flags once stored stay until --replace-input: the input then is what the flags say, the rest defaults.
    const narrowed = JSON.parse(
      await cliOk('update', '--schedule-id', SCHEDULE_ID, '--years', '2026', '--max-parallel', '2', '--use-lock', '--iceberg-namespace', 'prod', '--table', 'items_v2', '--json'),
    ) as CompactionScheduleReport;
    assert.deepEqual(narrowed.input, { warehouse, catalog, threshold: 3, useLock: true, years: [2026], maxParallelBuckets: 2, namespace: 'prod', table: 'items_v2' });
    const replaced = JSON.parse(await cliOk('update', '--schedule-id', SCHEDULE_ID, '--replace-input', '--threshold', '4', '--json')) as CompactionScheduleReport;
    assert.deepEqual(
      replaced.input,
      { warehouse, catalog, threshold: 4, namespace: 'prod', table: 'items_v2' },
      'all years again, the default parallelism, no pipeline lock; the same table',
    );
    assert.equal(replaced.spec[0], updated.spec[0], 'the times are kept');

    // An existing id and a missing one exit 4, not 1 (an outage): a deploy script can go on to update or skip.
    const twice = await cli('create', '--schedule-id', SCHEDULE_ID, '--warehouse', warehouse, '--catalog', catalog, '--task-queue', taskQueue);
    assert.equal(twice.code, 4, twice.stderr);
    assert.match(twice.stderr, new RegExp(`schedule ${SCHEDULE_ID} already exists in namespace ${h.namespace}; use \`schedule update\``));
    assert.deepEqual((await describeNow()).input, replaced.input, 'the refused create changed nothing');
    assert.deepEqual(JSON.parse(await cliOk('delete', '--schedule-id', SCHEDULE_ID, '--json')), { scheduleId: SCHEDULE_ID, deleted: true });
    for (const args of [['describe'], ['delete'], ['pause'], ['unpause'], ['trigger'], ['update', '--threshold', '4']]) {
      const [verb] = args;
      const gone = await cli(...args, '--schedule-id', SCHEDULE_ID);
      assert.equal(gone.code, 4, `${verb}: ${gone.stderr}`);
      assert.match(gone.stderr, new RegExp(`schedule ${SCHEDULE_ID} does not exist in namespace ${h.namespace}`));
    }
  });

  test('a paused schedule lists only next times still ahead (the server keeps the ones it computed at pause)', async () => {
    const id = `${SCHEDULE_ID}-paused-next`;
    await cliOk('create', '--schedule-id', id, '--warehouse', warehouse, '--catalog', catalog, '--every', '1s', '--paused', '--task-queue', taskQueue);
    try {
      await new Promise((r) => setTimeout(r, 2_500));
      const asked = Date.now();
      const d = await describeCompactionSchedule(h.client, id);
      assert.equal(d.paused, true);
      for (const t of d.nextActionTimes) assert.ok(Date.parse(t) > asked - 1_000, `next time ${t} is ahead of ${new Date(asked).toISOString()}`);
      const text = await cliOk('describe', '--schedule-id', id);
      assert.match(text, /\n {2}next {6}\(paused\) /);
    } finally {
      await cliOk('delete', '--schedule-id', id);
    }
  });

  test('update changes what its flags name and keeps the rest: timezone, jitter, timeouts, retry policy and memo set elsewhere', async () => {
    const id = `${SCHEDULE_ID}-keeps`;
    await cliOk('create', '--schedule-id', id, '--warehouse', warehouse, '--catalog', catalog, '--cron', '0 3 * * 0', '--timezone', 'Europe/Berlin', '--paused', '--task-queue', taskQueue);
    const handle = h.client.schedule.getHandle(id);
    try {
      // What an operator might add through the SDK or the temporal CLI.
      await handle.update((prev) => ({
        ...prev,
        spec: { ...prev.spec, jitter: '10 minutes' },
        action: { ...prev.action, workflowExecutionTimeout: '12 hours', retry: { maximumAttempts: 2 }, memo: { team: 'geo' } },
      }));
      const updated = JSON.parse(
        await cliOk('update', '--schedule-id', id, '--cron', '0 4 * * 6', '--threshold', '3', '--task-queue', `${taskQueue}-moved`, '--json'),
      ) as CompactionScheduleReport;
      assert.deepEqual(updated.spec, ['cron 0 4 * * SATURDAY (Europe/Berlin)']);
      assert.deepEqual(updated.input, { warehouse, catalog, threshold: 3 });
      assert.equal(updated.taskQueue, `${taskQueue}-moved`);
      const d = await handle.describe();
      assert.equal(d.spec.jitter, 10 * 60 * 1000);
      assert.equal(d.action.type, 'startWorkflow');
      if (d.action.type !== 'startWorkflow') return;
      assert.equal(d.action.workflowExecutionTimeout, 12 * 3600 * 1000);
      assert.equal(d.action.retry?.maximumAttempts, 2);
      assert.deepEqual(d.action.memo, { team: 'geo' });
      assert.equal(d.state.paused, true);

      const everyDay = JSON.parse(await cliOk('update', '--schedule-id', id, '--every', '1d', '--json')) as CompactionScheduleReport;
      assert.deepEqual(everyDay.spec, ['every 1d'], 'a new spec replaces the old times');
      assert.equal(everyDay.taskQueue, `${taskQueue}-moved`);
      assert.equal((await handle.describe()).spec.timezone, 'Europe/Berlin');
    } finally {
      await handle.delete();
    }
  });

  test('status warns of a compaction schedule whose latest run failed, with why (a run failing before it plans compacted nothing, yet fails every week)', async () => {
    const id = `${SCHEDULE_ID}-failing`;
    const missing = path.join(path.dirname(warehouse), 'moved-away');
    const itsCatalog = path.join(path.dirname(catalog), 'moved-away-catalog.db');
    await cliOk('create', '--schedule-id', id, '--warehouse', missing, '--catalog', itsCatalog, '--paused', '--task-queue', taskQueue);
    const handle = h.client.schedule.getHandle(id);
    try {
      await cliOk('trigger', '--schedule-id', id);
      const run = await waitFor('the triggered run to fail', async () => {
        const last = (await describeCompactionSchedule(h.client, id)).recentActions.at(-1);
        return last?.status === 'FAILED' ? last : undefined;
      });
      const { stderr } = await execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'status', '--address', h.address, '--namespace', h.namespace], { cwd: REPO_ROOT });
      const warning = stderr.split('\n').find((l) => l.includes(`schedule ${id},`));
      assert.ok(warning, stderr);
      assert.match(
        warning,
        new RegExp(
          `^warning: the latest run of schedule ${id}, ${run.workflowId}, FAILED at \\S+: .*${missing}.*; the schedule is paused ` +
            `\\(details: earthcatalog-compact status --workflow-id ${run.workflowId} --address ${h.address} --namespace ${h.namespace}\\)$`,
        ),
      );
      await handle.unpause('test: running weekly again');
      const unpaused = await execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'status', '--address', h.address, '--namespace', h.namespace], { cwd: REPO_ROOT });
      assert.match(unpaused.stderr, new RegExp(`schedule ${id}, ${run.workflowId}, FAILED .*; the schedule starts its next run as planned \\(details`));
      // The cause fixed and a run of the same warehouse and catalog completed since: no more warning, the next scheduled run tells.
      await fs.mkdir(missing);
      const bin = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
      const connection = ['--address', h.address, '--namespace', h.namespace];
      await execFileP(process.execPath, [bin, '--warehouse', missing, '--catalog', path.join(path.dirname(catalog), 'elsewhere.db'), '--task-queue', taskQueue, ...connection], { cwd: REPO_ROOT });
      const otherCatalog = await execFileP(process.execPath, [bin, 'status', ...connection], { cwd: REPO_ROOT });
      assert.match(otherCatalog.stderr, new RegExp(`schedule ${id}, ${run.workflowId}, FAILED`), 'a run with another catalog says nothing of the schedule');
      await execFileP(process.execPath, [bin, '--warehouse', missing, '--catalog', itsCatalog, '--table', 'other_items', '--task-queue', taskQueue, ...connection], { cwd: REPO_ROOT });
      const otherTable = await execFileP(process.execPath, [bin, 'status', ...connection], { cwd: REPO_ROOT });
      assert.match(otherTable.stderr, new RegExp(`schedule ${id}, ${run.workflowId}, FAILED`), 'nor one of another table in its catalog');
      await execFileP(process.execPath, [bin, '--warehouse', missing, '--catalog', itsCatalog, '--task-queue', taskQueue, ...connection], { cwd: REPO_ROOT });
      const fixed = await execFileP(process.execPath, [bin, 'status', ...connection], { cwd: REPO_ROOT });
      assert.doesNotMatch(fixed.stderr, new RegExp(`schedule ${id},`));
    } finally {
      await handle.delete();
    }
  });

  test('--timezone alone applies to the default cron (Sundays 03:00 there)', async () => {
    const id = `${SCHEDULE_ID}-tz`;
    const created = JSON.parse(
      await cliOk('create', '--schedule-id', id, '--warehouse', warehouse, '--catalog', catalog, '--timezone', 'Europe/Berlin', '--paused', '--task-queue', taskQueue, '--json'),
    ) as CompactionScheduleReport;
    try {
      assert.deepEqual(created.spec, ['cron 0 3 * * SUNDAY (Europe/Berlin)']);
      assert.equal((await h.client.schedule.getHandle(id).describe()).spec.timezone, 'Europe/Berlin');
    } finally {
      await h.client.schedule.getHandle(id).delete();
    }
  });

  test('create refuses workflow ids of a lock\'s form or a prefix another schedule uses; update refuses a schedule of another workflow', async () => {
    const lockShaped = await cli('create', '--schedule-id', 'earthcatalog-lock:x', '--warehouse', warehouse, '--catalog', catalog, '--paused', '--task-queue', taskQueue);
    assert.equal(lockShaped.code, 64, lockShaped.stderr);
    assert.match(lockShaped.stderr, /--workflow-id-prefix \(default: the schedule id\) earthcatalog-lock:x: the workflow id earthcatalog-lock:x- is of the form of a lock workflow's/);

    const first = `${SCHEDULE_ID}-prefix-a`;
    await cliOk('create', '--schedule-id', first, '--workflow-id-prefix', 'shared-prefix', '--warehouse', warehouse, '--catalog', catalog, '--paused', '--task-queue', taskQueue);
    const byHand = `${SCHEDULE_ID}-ingest`;
    const ingest = await h.client.schedule.create({
      scheduleId: byHand,
      spec: { intervals: [{ every: '1d' }] },
      action: { type: 'startWorkflow', workflowType: 'ingestWorkflow', taskQueue, args: [{}] },
      state: { paused: true },
    });
    try {
      // The list is eventually consistent: the new schedule shows up within moments.
      await waitFor('the schedule listed', async () => {
        for await (const s of h.client.schedule.list()) if (s.scheduleId === first) return true;
        return undefined;
      });
      const clash = await cli('create', '--schedule-id', `${SCHEDULE_ID}-prefix-b`, '--workflow-id-prefix', 'shared-prefix', '--warehouse', warehouse, '--catalog', catalog, '--paused', '--task-queue', taskQueue);
      assert.equal(clash.code, 64, clash.stderr);
      assert.match(clash.stderr, new RegExp(`schedule ${first} already starts its runs as shared-prefix-<time>`));
      await assert.rejects(h.client.schedule.getHandle(`${SCHEDULE_ID}-prefix-b`).describe(), 'nothing was created');

      const other = await cli('update', '--schedule-id', byHand, '--warehouse', warehouse, '--catalog', catalog);
      assert.equal(other.code, 64, other.stderr);
      assert.match(other.stderr, new RegExp(`schedule ${byHand} starts ingestWorkflow, not a compaction \\(compactWarehouse\\)`));
      const kept = await ingest.describe();
      assert.ok(kept.action.type === 'startWorkflow' && kept.action.workflowType === 'ingestWorkflow', 'its action is unchanged');
    } finally {
      await h.client.schedule.getHandle(first).delete();
      await ingest.delete();
    }
  });

  test('usage errors exit 64 before contacting the server', async () => {
    const r = await cli('create', '--warehouse', warehouse, '--catalog', catalog, '--cron', '0 3 * * 0', '--every', '7d');
    assert.equal(r.code, 64);
    assert.match(r.stderr, /either --cron or --every/);
    const bad = await cli('create', '--warehouse', warehouse, '--catalog', catalog, '--every', 'weekly');
    assert.equal(bad.code, 64);
    assert.match(bad.stderr, /--every must be a duration/);
    for (const flag of ['dry-run', 'use-lock']) {
      const both = await cli('update', `--${flag}`, `--no-${flag}`);
      assert.equal(both.code, 64, both.stderr);
      assert.match(both.stderr, new RegExp(`--${flag} and --no-${flag} contradict each other: give one of them`));
    }
  });
});

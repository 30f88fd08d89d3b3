/**
 * Crash safety with real processes: a worker process is SIGKILLed inside a bucket (after the output is
 * published and before any input is deleted; and after half the inputs are deleted). A new worker
 * process finishes the run, and the warehouse and the catalog equal those of an uninterrupted run.
 * On each backend of testBackends(): a local directory with a local catalog.db, and S3 on moto with
 * catalog.db in S3 (the worker processes get moto's endpoint and credentials in their environment).
 */
import { after, before, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_NAMESPACE, DEFAULT_TABLE, type CompactionSummary } from '../workflows/contract';
import { spawnWorkerProcess, startTemporal, startWorker, uniqueTaskQueue, type TemporalHarness } from './helpers/temporal';
import { byBucket } from './helpers/warehouse-fixtures';
import { assertSameRows } from './helpers/bucket-oracle';
import { testBackends, type TestWarehouse, type WarehouseBackend } from './helpers/backends';
import type { CrashPointName } from '../activities/compaction/crash-points';
import { verifyWarehouse } from '../activities/verification/verify-warehouse';
import { makeTempDir } from './helpers/temp-dirs';
import { waitFor } from './helpers/wait';
import { runStatusCommand, waitingRebuild } from '../client/commands/status';

let h: TemporalHarness;
const backends = testBackends();

before(async () => {
  // Backends first: moto points process.env at itself, and workers read the SDK's default chain.
  for (const backend of backends) await backend.start();
  h = await startTemporal();
});

after(async () => {
  await h?.stop();
  for (const backend of backends) await backend.stop();
});

/** Starts a compaction of `fx` served by one worker that SIGKILLs itself at `point`, once, and waits for it to die. */
async function runUntilCrash(backend: WarehouseBackend, fx: TestWarehouse, point: CrashPointName, name: string) {
  const taskQueue = uniqueTaskQueue(`${name}-${backend.name}`);
  const marker = path.join(await makeTempDir('ec-crash-marker'), 'crashed-once');
  const doomed = spawnWorkerProcess(h, taskQueue, { ...backend.workerEnv(), EARTHCATALOG_CRASH_AT: point, EARTHCATALOG_CRASH_ONCE_FILE: marker });
  const handle = await h.client.workflow.start('compactWarehouse', {
    taskQueue,
    workflowId: `${name}-${backend.name}-${Date.now()}`,
    args: [{ warehouse: fx.warehouse, catalog: fx.catalog }],
  });
  const exit = await doomed.exited;
  assert.equal(exit.signal, 'SIGKILL', `the worker died at the crash point (output: ${doomed.output().slice(-500)})`);
  return { taskQueue, handle };
}

/** An uninterrupted run over an identical warehouse, to compare with. */
async function referenceRun(backend: WarehouseBackend, seed: number) {
  const fx = await backend.makeWarehouse(`ref-${seed}`, { seed });
  const taskQueue = uniqueTaskQueue(`reference-${backend.name}`);
  const worker = await startWorker(h, taskQueue);
  try {
    const summary = (await h.client.workflow.execute('compactWarehouse', {
      taskQueue,
      workflowId: `reference-${backend.name}-${seed}-${Date.now()}`,
      args: [{ warehouse: fx.warehouse, catalog: fx.catalog }],
    })) as CompactionSummary;
    return { fx, summary };
  } finally {
    await worker.stop();
  }
}

for (const backend of backends) {
  for (const point of ['after-publish', 'after-partial-delete'] as const) {
    describe(`SIGKILL of the worker ${point} (${backend.name})`, () => {
      it('a new worker finishes the run; nothing lost, nothing duplicated', async () => {
        const seed = point === 'after-publish' ? 11 : 12;
        const reference = await referenceRun(backend, seed);
        const fx = await backend.makeWarehouse(`crash-${point}`, { seed });
        const buckets = [...byBucket(await backend.listFiles(fx.warehouse)).keys()].sort();
        const victim = buckets[1]!;
        const taskQueue = uniqueTaskQueue(`crash-${backend.name}-${point}`);
        const marker = path.join(await makeTempDir('ec-crash-marker'), 'crashed-once');
        // Both workers share one scratch root, as two workers on one machine would.
        const scratchRoot = await makeTempDir(`ec-crash-scratch-${backend.name}`);
        const workerEnv = { ...backend.workerEnv(), EARTHCATALOG_SCRATCH_DIR: scratchRoot };

        const doomed = spawnWorkerProcess(
          h,
          taskQueue,
          { ...workerEnv, EARTHCATALOG_CRASH_AT: `${point}@${victim}`, EARTHCATALOG_CRASH_ONCE_FILE: marker },
          ['--max-concurrent-buckets', '1'],
        );
        const handle = await h.client.workflow.start('compactWarehouse', {
          taskQueue,
          workflowId: `crash-${backend.name}-${point}-${Date.now()}`,
          args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 1 }],
        });
        const exit = await doomed.exited;
        assert.equal(exit.signal, 'SIGKILL', `the worker died at the crash point (output: ${doomed.output().slice(-500)})`);

        // The state the crash left: the victim bucket has the output and (some of) its inputs.
        const mid = byBucket(await backend.listFiles(fx.warehouse)).get(victim)!;
        assert.ok(mid.some((k) => k.includes('compacted_')), 'the output was published before the crash');
        assert.ok(mid.some((k) => k.includes('part_')), 'inputs were still there at the crash');

        // The dead worker's scratch (its attempt directory with the victim's files) is still there.
        const [abandoned, ...others] = await fs.readdir(scratchRoot);
        assert.equal(others.length, 0, 'one worker claimed scratch space');
        assert.match(abandoned!, /^worker-/);
        assert.ok((await fs.readdir(path.join(scratchRoot, abandoned!))).some((n) => n !== 'owner.json' && n !== 'duckdb'), 'the killed attempt left its directory');

        const rescuer = spawnWorkerProcess(h, taskQueue, workerEnv);
        try {
          const summary = (await handle.result()) as CompactionSummary;
          assert.equal(summary.failedBucketsTotal, 0);
          assert.equal(summary.bucketsCompacted, reference.summary.bucketsCompacted);
          assert.equal(summary.rowsAfter, reference.summary.rowsAfter);
          assert.equal(summary.filesAfter, reference.summary.filesAfter);
          assert.match(rescuer.output(), new RegExp(`removed \\S*${abandoned} \\(.*\\) left by a worker that is gone \\(owner exited\\)`));
          assert.equal(await fs.stat(path.join(scratchRoot, abandoned!)).catch(() => undefined), undefined, 'the next worker swept it');
        } finally {
          await rescuer.stop();
        }
        assert.deepEqual(await fs.readdir(scratchRoot), [], 'a worker that stops cleanly leaves no scratch behind');

        const got = byBucket(await backend.listFiles(fx.warehouse));
        const want = byBucket(await backend.listFiles(reference.fx.warehouse));
        assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
        for (const [bucket, keys] of got) {
          assert.equal(keys.length, 1, `${bucket} has one file`);
          const rows = await backend.readOutputRows(fx.warehouse, keys[0]!);
          const refRows = await backend.readOutputRows(reference.fx.warehouse, want.get(bucket)![0]!);
          assertSameRows(rows, refRows, bucket);
        }
        const [scan, refScan] = await Promise.all([backend.pyicebergScan(fx.catalog), backend.pyicebergScan(reference.fx.catalog)]);
        assert.equal(scan.snapshot_count, 1);
        assert.equal(scan.file_count, refScan.file_count);
        assert.deepEqual(scan.ids, refScan.ids);
        const report = await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog });
        assert.deepEqual(report.violations, []);
      });
    });
  }

  describe(`SIGKILL of the worker before the catalog commit (${backend.name})`, () => {
    it("the retried rebuild commits and removes what the killed attempt wrote, by its commit's UUID", async () => {
      const fx = await backend.makeWarehouse('crash-rebuild', { seed: 13 });
      const metadataPrefix = `${DEFAULT_NAMESPACE}/${DEFAULT_TABLE}/metadata/`;
      const before = new Set(await backend.listKeys(fx.warehouse, metadataPrefix));
      const { taskQueue, handle } = await runUntilCrash(backend, fx, 'before-catalog-commit', 'crash-rebuild');

      // What the killed attempt wrote: manifests, a manifest list and a metadata file, all named by one UUID.
      const left = (await backend.listKeys(fx.warehouse, metadataPrefix)).filter((k) => !before.has(k));
      const uuid = /\/\d+-([0-9a-f-]{36})\.metadata\.json$/.exec(left.find((k) => k.endsWith('.metadata.json')) ?? '')?.[1];
      assert.ok(uuid, `the killed attempt wrote its metadata file: ${left.join(', ')}`);
      assert.ok(left.length >= 3 && left.every((k) => k.includes(uuid)), left.join(', '));

      // The retry waits out the rebuild's heartbeat timeout (the dead worker cannot say it died).
      const rescuer = spawnWorkerProcess(h, taskQueue, backend.workerEnv());
      try {
        const summary = (await handle.result()) as CompactionSummary;
        assert.equal(summary.failedBucketsTotal, 0);
      } finally {
        await rescuer.stop();
      }
      const after = await backend.listKeys(fx.warehouse, metadataPrefix);
      assert.deepEqual(after.filter((k) => k.includes(uuid)), [], 'nothing of the killed attempt is left');
      assert.ok(after.some((k) => k.endsWith('.metadata.json') && !before.has(k)), 'the retry committed a metadata file of its own');
      const scan = await backend.pyicebergScan(fx.catalog);
      assert.equal(scan.snapshot_count, 1);
      const report = await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual(report.violations, []);
    });
  });

  // One backend: the summary is the workflow's, whatever the catalog (and each case waits out a heartbeat timeout).
  if (backend.name === 'local') {
    describe(`SIGKILL of the worker after the catalog commit that created the table (${backend.name})`, () => {
      it('status names the rebuild waiting for a worker; the retried rebuild commits again, still one snapshot, and the run says it created the table', async () => {
        const fx = await backend.makeWarehouse('crash-created', { seed: 14 });
        const { taskQueue, handle } = await runUntilCrash(backend, fx, 'after-catalog-commit', 'crash-created');
        // No worker left: after the heartbeat timeout the retried rebuild waits on the server, which status tells.
        await waitFor('the retried rebuild waiting for a worker', async () => waitingRebuild((await handle.describe()).raw.pendingActivities ?? [], Date.now()), 90_000);
        const printed: string[] = [];
        const log = mock.method(console, 'log', (...args: unknown[]) => void printed.push(args.join(' ')));
        try {
          await runStatusCommand(['--workflow-id', handle.workflowId, '--address', h.address, '--namespace', h.namespace]);
        } finally {
          log.mock.restore();
        }
        assert.match(
          printed.join('\n'),
          new RegExp(`^${handle.workflowId} RUNNING .* · the catalog rebuild \\(attempt 2: the one before lost its worker, or failed\\) has waited \\d+ s for a worker: is a worker running on task queue ${taskQueue}\\?`, 'm'),
        );
        const rescuer = spawnWorkerProcess(h, taskQueue, backend.workerEnv());
        try {
          const summary = (await handle.result()) as CompactionSummary;
          assert.equal(summary.failedBucketsTotal, 0);
          assert.equal(summary.catalogTableCreated, true, 'the table did not exist before this run');
        } finally {
          await rescuer.stop();
        }
        const scan = await backend.pyicebergScan(fx.catalog);
        assert.equal(scan.snapshot_count, 1);
        assert.deepEqual((await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog })).violations, []);
      });
    });
  }
}

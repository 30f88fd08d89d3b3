/**
 * What a worker takes on: at most its bucket concurrency at once (a bucket task that lands in one of
 * the worker's extra activity slots waits for a bucket slot, and can be cancelled while it waits), the
 * concurrency derived from a container's memory limit, and a plugin that fits a worker with a tuner;
 * a bucket task cancelled once its deletes have begun finishes and reports the bucket compacted.
 * The compactBucket activity runs for real on a real warehouse; only its activity context is the SDK's
 * MockActivityEnvironment (no server needed to hold a slot).
 */
import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { noopMetricMeter, type MetricMeter } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createActivities, defaultActivityResources, WorkerLocalResources, type ActivityResources } from '../activities';
import { HEARTBEAT_THROTTLE_MS } from '../activities/heartbeats';
import { BucketSlots } from '../activities/compaction/bucket-slots';
import { availableMemoryBytes, EarthcatalogCompactionPlugin, workflowsPath } from '../worker/plugin';
import { handleRepeatedStops } from '../worker/worker';
import { bucketTaskQueue, type BucketResult } from '../workflows/contract';
import { bucketRequest, listFiles, makeTinyWarehouse } from './helpers/warehouse-fixtures';
import { makeTempDir } from './helpers/temp-dirs';
import { waitFor } from './helpers/wait';
import { REPO_ROOT } from './helpers/temporal';

const execFileAsync = promisify(execFile);

test('bucket slots: at most their size at once, waiters served in arrival order, an aborted waiter leaves the queue', async () => {
  const slots = new BucketSlots(2);
  const a = await slots.acquire();
  const b = await slots.acquire();
  const order: string[] = [];
  const c = slots.acquire().then((release) => (order.push('c'), release));
  const abort = new AbortController();
  const d = slots.acquire(abort.signal);
  const e = slots.acquire().then((release) => (order.push('e'), release));
  await sleep(5);
  assert.deepEqual([slots.busy, slots.queued, order], [2, 3, []]);
  abort.abort(new Error('cancelled'));
  await assert.rejects(d, /cancelled/);
  assert.equal(slots.queued, 2);
  a();
  a(); // a second release of the same slot frees nothing more
  const releaseC = await c;
  assert.deepEqual([slots.busy, slots.queued, order], [2, 1, ['c']]);
  b();
  const releaseE = await e;
  assert.deepEqual(order, ['c', 'e']);
  releaseC();
  releaseE();
  assert.deepEqual([slots.busy, slots.queued], [0, 0]);
  assert.throws(() => new BucketSlots(0), /positive integer, got 0/);
  assert.throws(() => new BucketSlots(Number.NaN), /positive integer, got NaN/);
});

test('a bucket task beyond the worker’s concurrency waits without touching the bucket, then compacts; cancelled while waiting, it leaves the bucket as it was', async () => {
  const fx = await makeTinyWarehouse('worker-slots', 2);
  const resources: ActivityResources = { scratchDir: await makeTempDir('ec-worker-slots-scratch'), memoryBudgetMb: 256, duckdbThreads: 1, concurrentBuckets: 1 };
  const local = new WorkerLocalResources(resources);
  const activities = createActivities(resources, local);
  const slots = local.bucketSlots!;
  const request = (cell: string, year: number) => bucketRequest(fx.warehouse, cell, year, '20261202T000000-0000slot');
  try {
    const before = await listFiles(fx.warehouse);
    assert.equal(before.length, 4);

    const otherBucket = await slots.acquire();
    // The waiting gauge's values as the worker's Prometheus endpoint would get them (worker-metrics.test.ts scrapes a real one).
    const waiting: number[] = [];
    const meter: MetricMeter = {
      createCounter: (...args) => noopMetricMeter.createCounter(...args),
      createHistogram: (...args) => noopMetricMeter.createHistogram(...args),
      createGauge: (name, valueType, unit, description) => ({
        ...noopMetricMeter.createGauge(name, valueType, unit, description),
        set: (value: number) => void (name === 'earthcatalog_bucket_tasks_waiting' && waiting.push(value)),
      }),
      withTags: () => meter,
    };
    const running: Promise<BucketResult> = new MockActivityEnvironment({}, { metricMeter: meter }).run(activities.compactBucket, await request('cell00000', 2015));
    await waitFor('the task to wait for a slot', async () => (slots.queued === 1 ? true : undefined));
    await sleep(200);
    assert.deepEqual(await listFiles(fx.warehouse), before, 'nothing read, written or deleted while waiting');
    assert.deepEqual(waiting, [1], 'the gauge counts the waiting task');
    otherBucket();
    const result = await running;
    assert.deepEqual([result.outcome, result.filesIn, result.rowsOut], ['compacted', 2, 5]);
    assert.deepEqual([slots.busy, slots.queued], [0, 0]);
    assert.deepEqual(waiting, [1, 0], 'and drops it once the task has its slot');

    const afterFirst = await listFiles(fx.warehouse);
    const hold = await slots.acquire();
    const env = new MockActivityEnvironment();
    const cancelled = env.run(activities.compactBucket, await request('cell00000', 2016));
    await waitFor('the second task to wait for a slot', async () => (slots.queued === 1 ? true : undefined));
    env.cancel();
    await assert.rejects(cancelled);
    assert.deepEqual([slots.busy, slots.queued], [1, 0]);
    hold();
    assert.deepEqual(await listFiles(fx.warehouse), afterFirst, 'the cancelled task left its bucket alone');
    assert.ok(afterFirst.some((k) => k.startsWith('grid_partition=cell00000/year=2016/part_00000_a')));
  } finally {
    await local.close();
  }
});

test('a bucket task cancelled after its deletes began finishes the bucket and reports it compacted (the run counts it and rebuilds the table)', async () => {
  const fx = await makeTinyWarehouse('cancel-in-delete', 1);
  const resources: ActivityResources = { scratchDir: await makeTempDir('ec-cancel-delete-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 };
  const local = new WorkerLocalResources(resources);
  const activities = createActivities(resources, local);
  const req = await bucketRequest(fx.warehouse, 'cell00000', 2015, '20261202T000000-0000canc');
  try {
    const env = new MockActivityEnvironment();
    const phases: string[] = [];
    env.on('heartbeat', (d: { phase?: string }) => {
      if (d.phase && phases[phases.length - 1] !== d.phase) phases.push(d.phase);
      // The cancel lands while the inputs are being listed and deleted, after the check at the delete step.
      if (d.phase === 'delete') setImmediate(() => env.cancel());
    });
    const result: BucketResult = await env.run(activities.compactBucket, req);
    assert.ok(env.context.cancellationSignal.aborted, 'the cancel was delivered before the task ended');
    assert.deepEqual([result.outcome, result.filesIn, result.rowsOut], ['compacted', 2, 5]);
    assert.deepEqual(phases.slice(-2), ['delete', 'sweep']);
    const left = await listFiles(fx.warehouse);
    assert.equal(left.length, 1, `one output, no input left: ${left.join(', ')}`);
    assert.ok(!req.inputs.some((i) => left.includes(i.key)));
  } finally {
    await local.close();
  }
});

test('concurrency follows a container’s memory limit where it is below RAM', () => {
  const gb = 1024 ** 3;
  assert.equal(availableMemoryBytes(4 * gb, 64 * gb), 4 * gb);
  assert.equal(availableMemoryBytes(undefined, 64 * gb), 64 * gb);
  assert.equal(availableMemoryBytes(0, 64 * gb), 64 * gb);
  assert.equal(availableMemoryBytes(18446744073709552000, 64 * gb), 64 * gb, "cgroup v1's no-limit sentinel");
  assert.equal(availableMemoryBytes(128 * gb, 64 * gb), 64 * gb);
});

test('the plugin gives the activities its bucket concurrency, and leaves slot counts to a tuner when the worker has one', async () => {
  const plugin = new EarthcatalogCompactionPlugin({ memoryMb: 8192, memoryBudgetMb: 2048, scratchDir: await makeTempDir('ec-plugin-scratch'), registerWorkflows: false });
  try {
    assert.equal(plugin.concurrency, 4);
    assert.equal(plugin.resources.concurrentBuckets, 4);
    assert.equal(plugin.local.bucketSlots?.size, 4);
    const plain = plugin.configureWorker({ taskQueue: 'q' });
    assert.equal(plain.maxConcurrentActivityTaskExecutions, 8, 'four bucket slots and four for lock, plan and catalog activities');
    const buckets = plugin.bucketWorkerOptions('q');
    assert.deepEqual([buckets?.taskQueue, buckets?.maxConcurrentActivityTaskExecutions], [bucketTaskQueue('q'), 4]);
    // The SDK's default throttle (0.8 x the 30 s heartbeat timeout) would send one heartbeat in 24 s.
    assert.equal(buckets?.maxHeartbeatThrottleInterval, HEARTBEAT_THROTTLE_MS, 'every 10 s heartbeat of a bucket is sent: a cancel reaches it within ~10 s');
    assert.equal(HEARTBEAT_THROTTLE_MS, 5_000);
    assert.equal(plain.maxHeartbeatThrottleInterval, HEARTBEAT_THROTTLE_MS, "so is every one of the plan's and the rebuild's, within their 30 s heartbeat timeout");
    const tuner = { tunerOptions: { targetMemoryUsage: 0.8, targetCpuUsage: 0.9 } };
    const tuned = plugin.configureWorker({ taskQueue: 'q', tuner });
    assert.equal(tuned.maxConcurrentActivityTaskExecutions, undefined, 'the SDK refuses a tuner together with slot counts');
    assert.equal(tuned.tuner, tuner);
    assert.equal(tuned.maxHeartbeatThrottleInterval, HEARTBEAT_THROTTLE_MS);
    assert.equal(plugin.configureWorker({ taskQueue: 'q2', maxHeartbeatThrottleInterval: '2 seconds' }).maxHeartbeatThrottleInterval, '2 seconds', "the worker's own setting is kept");
  } finally {
    await plugin.local.close();
  }
});

test("a plugin that registers our workflows refuses a worker with workflows of its own (they would be replaced); with registerWorkflows: false it keeps them", async () => {
  const own = new EarthcatalogCompactionPlugin({ memoryBudgetMb: 256, memoryMb: 512, scratchDir: await makeTempDir('ec-plugin-own'), registerWorkflows: false });
  const ours = new EarthcatalogCompactionPlugin({ memoryBudgetMb: 256, memoryMb: 512, scratchDir: await makeTempDir('ec-plugin-ours') });
  try {
    assert.equal(own.configureWorker({ taskQueue: 'q', workflowsPath: '/srv/app/workflows.ts' }).workflowsPath, '/srv/app/workflows.ts');
    assert.equal(ours.configureWorker({ taskQueue: 'q', workflowsPath: workflowsPath() }).workflowsPath, workflowsPath());
    for (const [options, what] of [[{ workflowsPath: '/srv/app/workflows.ts' }, 'workflowsPath /srv/app/workflows.ts'], [{ workflowBundle: { code: '' } }, 'a workflowBundle']] as const) {
      assert.throws(
        () => ours.configureWorker({ taskQueue: 'q2', ...options }),
        (err: Error) => err.message.startsWith(`the worker has workflows of its own (${what}), which the plugin's would replace: re-export ours`) && err.message.endsWith('pass registerWorkflows: false to the plugin'),
      );
    }
  } finally {
    await own.local.close();
    await ours.local.close();
  }
});

test('a worker setting from the environment or the plugin options that is not a positive whole number is refused, naming it', async () => {
  const saved = { budget: process.env.EARTHCATALOG_MEMORY_BUDGET_MB, threads: process.env.EARTHCATALOG_DUCKDB_THREADS };
  try {
    for (const bad of ['2g', '0', '', '1.5', '-1']) {
      process.env.EARTHCATALOG_MEMORY_BUDGET_MB = bad;
      assert.throws(() => defaultActivityResources(), new RegExp(`^Error: EARTHCATALOG_MEMORY_BUDGET_MB must be a positive whole number, got ${JSON.stringify(JSON.stringify(bad)).slice(1, -1)}`));
    }
    process.env.EARTHCATALOG_MEMORY_BUDGET_MB = ' 2048 ';
    process.env.EARTHCATALOG_DUCKDB_THREADS = '2';
    assert.deepEqual([defaultActivityResources().memoryBudgetMb, defaultActivityResources().duckdbThreads], [2048, 2]);
    process.env.EARTHCATALOG_DUCKDB_THREADS = '0';
    assert.throws(() => defaultActivityResources(), /EARTHCATALOG_DUCKDB_THREADS must be a positive whole number, got "0"/);
  } finally {
    for (const [name, value] of [['EARTHCATALOG_MEMORY_BUDGET_MB', saved.budget], ['EARTHCATALOG_DUCKDB_THREADS', saved.threads]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
  assert.throws(() => new EarthcatalogCompactionPlugin({ memoryBudgetMb: Number.NaN }), /the plugin option memoryBudgetMb must be a positive whole number, got NaN/);
  assert.throws(() => new EarthcatalogCompactionPlugin({ maxConcurrentBuckets: 0 }), /the plugin option maxConcurrentBuckets must be a positive whole number, got 0/);
  // Settings that would break the memory promise: DuckDB's 32 MB floor, more buckets than the memory holds, a count no run reaches.
  assert.throws(() => new EarthcatalogCompactionPlugin({ memoryBudgetMb: 16 }), /^Error: the plugin option memoryBudgetMb 16 is below 64: DuckDB gets half of a bucket's budget and never less than 32 MB/);
  assert.throws(
    () => new EarthcatalogCompactionPlugin({ memoryBudgetMb: 512, memoryMb: 1024, maxConcurrentBuckets: 64 }),
    /^Error: the plugin option maxConcurrentBuckets 64 buckets of 512 MB need 32768 MB, more than the plugin option memoryMb 1024/,
  );
  assert.throws(() => new EarthcatalogCompactionPlugin({ maxConcurrentBuckets: 100_000 }), /maxConcurrentBuckets 100000 is more than 1000, the most buckets a run has in flight/);
  assert.throws(() => new EarthcatalogCompactionPlugin({ memoryBudgetMb: 2048, memoryMb: 1024 }), /memoryBudgetMb 2048 is more than the plugin option memoryMb 1024/);
  // Without a budget: the default 1 GB, or all of a smaller memory (told it may use 512 MB, the worker runs one bucket of 512 MB).
  for (const [memoryMb, budget, concurrency] of [[4096, 1024, 4], [1500, 1024, 1], [512, 512, 1]] as const) {
    const sized = new EarthcatalogCompactionPlugin({ memoryMb, scratchDir: await makeTempDir('ec-plugin-sized'), registerWorkflows: false });
    await sized.local.close();
    assert.deepEqual([sized.resources.memoryBudgetMb, sized.concurrency], [budget, concurrency], `memoryMb ${memoryMb}`);
  }
  assert.throws(() => new EarthcatalogCompactionPlugin({ memoryMb: 32 }), /^Error: the plugin option memoryMb 32 is below 64: not one bucket fits/);
});

test('installed as a copy under node_modules (a registry install), the plugin bundles its TypeScript workflows, which the SDK compiles only outside node_modules, also when loaded as an ES module (worker.mts)', async () => {
  // Under the checkout, so that the copy resolves its dependencies from the checkout's node_modules.
  await fs.mkdir(path.join(REPO_ROOT, '.tmp'), { recursive: true });
  const project = await fs.mkdtemp(path.join(REPO_ROOT, '.tmp', 'installed-'));
  try {
    const installed = path.join(project, 'node_modules', 'earthcatalog-compaction');
    for (const dir of ['activities', 'client', 'worker', 'workflows']) await fs.cp(path.join(REPO_ROOT, dir), path.join(installed, dir), { recursive: true });
    await fs.copyFile(path.join(REPO_ROOT, 'package.json'), path.join(installed, 'package.json'));
    const copy = (await import(path.join(installed, 'worker', 'plugin.ts'))) as typeof import('../worker/plugin');
    const bundle = (plugins: EarthcatalogCompactionPlugin[]) =>
      bundleWorkflowCode({ workflowsPath: path.join(installed, 'workflows', 'index.ts'), plugins, logger: new DefaultLogger('ERROR', () => undefined) });
    // The failure this guards against, as the SDK alone gives it.
    await assert.rejects(bundle([]), /Webpack finished with errors/);
    const { code } = await bundle([new copy.EarthcatalogCompactionPlugin({ memoryBudgetMb: 256, memoryMb: 512 })]);
    assert.match(code, /compactWarehouse/);
    assert.match(code, /resourceLock/);

    // The README's ES-module worker: through tsx's ES-module path the plugin's __dirname is not its folder.
    await fs.writeFile(
      path.join(project, 'check.mts'),
      [
        "import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';",
        "import { EarthcatalogCompactionPlugin, workflowsPath } from 'earthcatalog-compaction/worker/plugin';",
        'const plugin = new EarthcatalogCompactionPlugin({ memoryBudgetMb: 256, memoryMb: 512 });',
        'try {',
        "  const { code } = await bundleWorkflowCode({ workflowsPath: workflowsPath(), plugins: [plugin], logger: new DefaultLogger('ERROR', () => undefined) });",
        "  console.log(code.includes('compactWarehouse') ? 'bundled' : 'no workflows');",
        '} finally {',
        '  await plugin.local.close();',
        '}',
      ].join('\n'),
    );
    const esm = await execFileAsync(process.execPath, ['--import', 'tsx', 'check.mts'], { cwd: project }).catch((err: { stdout?: string; stderr?: string }) => err);
    assert.equal(esm.stdout?.trim(), 'bundled', esm.stderr?.slice(-2000));
  } finally {
    await fs.rm(project, { recursive: true, force: true });
  }
});

test('a stop signal repeated within a second is the same stop (`timeout` delivers one twice); a later one stops the worker at once', () => {
  const listening = { SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') };
  const exits: number[] = [];
  const said: string[] = [];
  mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  const write = mock.method(process.stderr, 'write', (chunk: string | Uint8Array) => said.push(String(chunk)) > 0);
  const stopListening = handleRepeatedStops((code) => void exits.push(code));
  try {
    process.emit('SIGTERM', 'SIGTERM');
    process.emit('SIGTERM', 'SIGTERM');
    mock.timers.tick(999);
    process.emit('SIGINT', 'SIGINT');
    assert.deepEqual(exits, [], 'the first stop, and its repeats within a second, leave the shutdown to the SDK');
    mock.timers.tick(1);
    process.emit('SIGINT', 'SIGINT');
    assert.deepEqual(exits, [130]);
    assert.match(said.join(''), /^\S+Z \[WARN\] worker: a second SIGINT: stopping at once, without the shutdown grace; the buckets in flight are retried by another worker after the 30 s heartbeat timeout/);
    process.emit('SIGTERM', 'SIGTERM');
    assert.deepEqual(exits, [130, 143]);
  } finally {
    stopListening();
    write.mock.restore();
    mock.timers.reset();
  }
  assert.deepEqual({ SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') }, listening, 'it stops listening with the worker');
});

/**
 * A worker process started with --metrics-bind serves Prometheus metrics: the SDK's own (activity
 * latency per activity type, task slots) and the buckets' rows, bytes and outcomes, which add up to
 * the run's summary. Real dev server, real worker process, real warehouse; the endpoint is scraped
 * over HTTP like Prometheus would.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { promises as fs } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import * as path from 'node:path';
import { bucketTaskQueue, type CompactionSummary } from '../workflows/contract';
import { REPO_ROOT, spawnWorkerProcess, startTemporal, uniqueTaskQueue, type TemporalHarness, type WorkerProcess } from './helpers/temporal';
import { freePort } from './helpers/moto-server';
import { makeFixture } from './helpers/warehouse-fixtures';
import { waitFor } from './helpers/wait';
import { makeTempDir } from './helpers/temp-dirs';

const execFileP = promisify(execFile);

/** Sum of the samples of `name` whose labels include every pair in `labels`. */
function sample(metrics: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let total: number | undefined;
  for (const line of metrics.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const set = m[2] ?? '';
    if (!Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) continue;
    total = (total ?? 0) + Number(m[3]);
  }
  return total;
}

describe('worker metrics', () => {
  let h: TemporalHarness;
  before(async () => {
    h = await startTemporal();
  });
  after(async () => {
    await h?.stop();
  });

  /** A worker process serving metrics on a free port compacts `fx` on a queue of its own; it is stopped by the caller. */
  async function compactWithMetrics(name: string, fx: { warehouse: string; catalog: string }) {
    const queue = uniqueTaskQueue(name);
    const bind = `127.0.0.1:${await freePort()}`;
    const worker = spawnWorkerProcess(h, queue, {}, ['--metrics-bind', bind]);
    try {
      await waitFor('the worker to start', async () => (worker.output().includes(`metrics on http://${bind}/metrics`) ? true : undefined));
      const summary = (await h.client.workflow.execute('compactWarehouse', {
        taskQueue: queue,
        workflowId: `${name}-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog }],
      })) as CompactionSummary;
      return { queue, bind, worker, summary };
    } catch (err) {
      await worker.stop();
      throw err;
    }
  }

  test('--metrics-bind serves the SDK metrics and bucket counters that add up to the summary', async () => {
    const fx = await makeFixture('metrics');
    let worker: WorkerProcess | undefined;
    try {
      const run = await compactWithMetrics('metrics', fx);
      ({ worker } = run);
      const { queue, bind, summary } = run;
      assert.equal(summary.bucketsCompacted, 6);
      // The exporter serves what the worker recorded; the last counts reach it within its export interval.
      const metrics = await waitFor('the bucket counters on the metrics endpoint', async () => {
        const text = await (await fetch(`http://${bind}/metrics`)).text();
        const exported = sample(text, 'earthcatalog_buckets_total', { outcome: 'compacted' }) === summary.bucketsCompacted && sample(text, 'earthcatalog_catalog_rebuilds_total') === 1;
        return exported ? text : undefined;
      });
      // The SDK tags the metrics of an activity's meter in camelCase, its own in snake_case.
      const bucketTags = { taskQueue: bucketTaskQueue(queue), activityType: 'compactBucket' };
      assert.equal(sample(metrics, 'earthcatalog_bucket_rows_in_total', bucketTags), summary.rowsBefore);
      assert.equal(sample(metrics, 'earthcatalog_bucket_rows_out_total', bucketTags), summary.rowsAfter);
      assert.ok(summary.rowsBefore > summary.rowsAfter, 'the fixture has duplicates');
      assert.equal(sample(metrics, 'earthcatalog_bucket_bytes_out_total', bucketTags), summary.bytesAfter);
      assert.equal(sample(metrics, 'earthcatalog_bucket_tasks_waiting', bucketTags), 0, 'no task waits once the run is done');
      assert.equal(sample(metrics, 'earthcatalog_bucket_out_of_memory_total'), undefined, 'no out-of-memory recorded');
      assert.equal(sample(metrics, 'temporal_activity_execution_latency_count', { activity_type: 'compactBucket', task_queue: bucketTaskQueue(queue) }), 6, 'the SDK metrics per activity type');
      // The bucket queue's own schedule-to-start latency: how long buckets waited for a worker (the SDK gives it no activity type).
      assert.equal(sample(metrics, 'temporal_activity_schedule_to_start_latency_count', { task_queue: bucketTaskQueue(queue) }), 6);
      assert.ok((sample(metrics, 'temporal_activity_execution_latency_count', { activity_type: 'rebuildCatalog' }) ?? 0) >= 1);
      // Every kind's series is there from the worker's start, at 0: increase() then sees the first problem too.
      for (const kind of ['unreadable', 'schema_mismatch', 'partition_mismatch', 'dropped_registration']) {
        assert.equal(sample(metrics, 'earthcatalog_catalog_problem_files_total', { kind, activityType: 'rebuildCatalog', taskQueue: queue }), 0, `a clean table has no ${kind} files`);
      }
      // The worker's log tells the run's story too: one INFO line when planned, one when done (the runtime's
      // log collector writes lines up to ~200 ms after they are logged, so the last may follow the result).
      const { output } = run.worker;
      const log = await waitFor('the run\'s last log line', async () => (/ compaction of \S+ done \{/.test(output()) ? output() : undefined), 10_000);
      assert.match(log, new RegExp(`\\[INFO\\] compaction of ${fx.warehouse.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: 6 of 6 buckets to compact`));
      // One line per entry, its attributes included, so a log shipper takes it as one event.
      assert.match(log, /^\S+ \[INFO\] compaction of \S+ done \{.*bucketsCompacted: 6,.*failedBuckets: 0.*\}$/m);
      assert.match(log, /^\S+ \[INFO\] compaction of \S+: 6 of 6 buckets to compact \{.*workflowType: 'compactWarehouse'.*planId: '[^']+'.*\}$/m);
    } finally {
      await worker?.stop();
    }
  });

  test('a malformed --metrics-bind or EARTHCATALOG_METRICS_BIND is refused, naming it, before the worker connects', async () => {
    const bin = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
    const run = (args: string[], env: Record<string, string> = {}) =>
      execFileP(process.execPath, [bin, 'worker', '--address', '127.0.0.1:1', ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: 60_000 }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
      );
    const flag = await run(['--metrics-bind', '9464']);
    assert.equal(flag.code, 64);
    assert.match(flag.stderr, /--metrics-bind must be host:port with a port from 1 to 65535 \(e\.g\. 0\.0\.0\.0:9464\), got "9464"/);
    const variable = await run([], { EARTHCATALOG_METRICS_BIND: 'http://0.0.0.0:9464' });
    assert.equal(variable.code, 64);
    assert.match(variable.stderr, /EARTHCATALOG_METRICS_BIND must be host:port/);
    const port = await run(['--metrics-bind', 'localhost:99999']);
    assert.equal(port.code, 64);
    assert.match(port.stderr, /--metrics-bind must be host:port with a port from 1 to 65535 .*got "localhost:99999"/);
    // A host name is resolved (the exporter takes an IP address): the worker gets as far as connecting.
    const named = await run(['--metrics-bind', `localhost:${await freePort()}`, '--scratch-dir', await makeTempDir('ec-metrics-named')]);
    assert.equal(named.code, 1, named.stderr);
    assert.match(named.stderr, /^earthcatalog-compact: cannot reach Temporal at 127\.0\.0\.1:1\//m);
  });

  test('a port already in use is named with the setting, not only in the core\'s words', async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const bind = `127.0.0.1:${(busy.address() as AddressInfo).port}`;
    try {
      const r = await execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'worker', '--address', '127.0.0.1:1', '--metrics-bind', bind], { cwd: REPO_ROOT, timeout: 60_000 }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
      );
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^earthcatalog-compact: cannot serve metrics on ${bind} \\(--metrics-bind, EARTHCATALOG_METRICS_BIND\\): .*Address already in use`, 'm'));
    } finally {
      busy.close();
    }
  });

  test('a bucket that fails for good is counted by failure type, as not retried', async () => {
    const fx = await makeFixture('metrics-failed', { cells: ['8128bffffffffff'], years: [2021, 2022] });
    // One bucket gains a file that is not Parquet: the bucket fails as BadBucketData, the other compacts.
    const bad = path.join(fx.warehouse, 'grid_partition=8128bffffffffff', 'year=2021', 'part_99999_bad.parquet');
    await fs.writeFile(bad, 'not parquet');
    let worker: WorkerProcess | undefined;
    try {
      const run = await compactWithMetrics('metrics-failed', fx);
      ({ worker } = run);
      const { bind, summary } = run;
      assert.deepEqual([summary.bucketsCompacted, summary.failedBucketsTotal], [1, 1]);
      const metrics = await waitFor('the failure on the metrics endpoint', async () => {
        const text = await (await fetch(`http://${bind}/metrics`)).text();
        return sample(text, 'earthcatalog_bucket_failures_total') !== undefined ? text : undefined;
      });
      assert.equal(sample(metrics, 'earthcatalog_bucket_failures_total', { type: 'BadBucketData', retryable: 'false' }), 1);
      assert.equal(sample(metrics, 'earthcatalog_bucket_failures_total', { retryable: 'true' }), undefined, 'no attempt was retried');
      // The file stays, and the rebuild leaves it out of the table: an alert on a scheduled run has this counter to watch.
      assert.equal(summary.unreadableFilesTotal, 1);
      const rebuilt = await waitFor('the rebuild on the metrics endpoint', async () => {
        const text = await (await fetch(`http://${bind}/metrics`)).text();
        return sample(text, 'earthcatalog_catalog_rebuilds_total') === 1 ? text : undefined;
      });
      assert.equal(sample(rebuilt, 'earthcatalog_catalog_problem_files_total', { kind: 'unreadable' }), 1);
      assert.equal(sample(rebuilt, 'earthcatalog_catalog_problem_files_total', { kind: 'schema_mismatch' }), 0);
      // One series per kind: the rebuild's counts went to the series the worker started at 0.
      assert.equal(rebuilt.split('\n').filter((l) => l.startsWith('earthcatalog_catalog_problem_files_total{') && l.includes('kind="unreadable"')).length, 1, rebuilt);
    } finally {
      await worker?.stop();
    }
  });
});

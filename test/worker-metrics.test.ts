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
import * as path from 'node:path';
import { bucketTaskQueue, type CompactionSummary } from '../workflows/contract';
import { REPO_ROOT, spawnWorkerProcess, startTemporal, uniqueTaskQueue, type TemporalHarness } from './helpers/temporal';
import { freePort } from './helpers/moto-server';
import { makeFixture } from './helpers/warehouse-fixtures';
import { waitFor } from './helpers/wait';

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

  test('--metrics-bind serves the SDK metrics and bucket counters that add up to the summary', async () => {
    const fx = await makeFixture('metrics');
    const queue = uniqueTaskQueue('metrics');
    const bind = `127.0.0.1:${await freePort()}`;
    const worker = spawnWorkerProcess(h, queue, {}, ['--metrics-bind', bind]);
    try {
      await waitFor('the worker to start', async () => (worker.output().includes(`metrics on http://${bind}/metrics`) ? true : undefined));
      const summary = (await h.client.workflow.execute('compactWarehouse', {
        taskQueue: queue,
        workflowId: `metrics-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog }],
      })) as CompactionSummary;
      assert.equal(summary.bucketsCompacted, 6);
      // The exporter serves what the worker recorded; the last counts reach it within its export interval.
      const metrics = await waitFor('the bucket counters on the metrics endpoint', async () => {
        const text = await (await fetch(`http://${bind}/metrics`)).text();
        return sample(text, 'earthcatalog_buckets_total', { outcome: 'compacted' }) === summary.bucketsCompacted ? text : undefined;
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
    } finally {
      await worker.stop();
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
    assert.match(flag.stderr, /--metrics-bind must be host:port \(e\.g\. 0\.0\.0\.0:9464\), got "9464"/);
    const variable = await run([], { EARTHCATALOG_METRICS_BIND: 'http://0.0.0.0:9464' });
    assert.equal(variable.code, 64);
    assert.match(variable.stderr, /EARTHCATALOG_METRICS_BIND must be host:port/);
  });
});

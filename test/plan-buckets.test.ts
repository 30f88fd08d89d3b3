/**
 * The plan: which buckets a run compacts, with exactly which inputs, in which order. The warehouse is a
 * real directory listed through the product's store; planning reads names and sizes (and the footers of
 * files delivered into buckets below the threshold), so most files hold plain bytes of chosen lengths. One test runs the planning activity in the SDK's
 * MockActivityEnvironment, for its cancellation signal.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createActivities } from '../activities';
import { openDuckSession, sqlString } from '../activities/compaction/duckdb-session';
import { planBuckets } from '../activities/compaction/plan-buckets';
import {
  BUCKET_TASK_MAX_BYTES,
  PLAN_PAGE_MAX_BYTES,
  PLAN_PAGE_SIZE,
  PlanNotFoundError,
  findResumablePlan,
  markPlanFinished,
  readPlanManifest,
  readPlanPage,
  resumablePlanById,
  writePlan,
} from '../activities/compaction/plan-store';
import { CONTROL_PREFIX } from '../activities/storage/warehouse-layout';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { StorageError } from '../activities/storage/warehouse-store';
import { bucketPrefix, type BucketTask, type CompactionSummary } from '../workflows/contract';
import { makeTempDir } from './helpers/temp-dirs';
import { makeColumnNullTyped } from './helpers/pyarrow-rewrites';

/** Writes `grid_partition=<cell>/year=<year>/<name>` of `size` bytes for each entry. */
async function warehouseOf(files: readonly [cell: string, year: number | string, name: string, size: number][]): Promise<string> {
  const root = await makeTempDir('ec-plan');
  for (const [cell, year, name, size] of files) {
    const file = path.join(root, `grid_partition=${cell}`, `year=${year}`, name);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, Buffer.alloc(size, 1));
  }
  return root;
}

async function allTasks(store: LocalWarehouseStore, planId: string): Promise<BucketTask[]> {
  const manifest = await readPlanManifest(store, planId);
  assert.ok(manifest, 'the plan was written');
  const tasks: BucketTask[] = [];
  for (let page = 0; page < manifest.summary.pages; page++) tasks.push(...(await readPlanPage(store, planId, page)));
  return tasks;
}

describe('planBuckets', () => {
  it('leaves alone keys DuckDB would read as a glob, keys with a control character or a backslash and years with a leading zero, counting them', async () => {
    const root = await warehouseOf([
      ['a1', 2020, 'part_1.parquet', 100],
      ['a1', 2020, 'part_2.parquet', 100],
      // Read as the glob `a1`, these would compact a1's files in their place.
      ['a[1]', 2020, 'part_1.parquet', 100],
      ['a[1]', 2020, 'part_2.parquet', 100],
      ['b', 2020, 'part_1.parquet', 100],
      ['b', 2020, 'part_2.parquet', 100],
      ['b', 2020, 'part_*.parquet', 100],
      // Never compacted, nor registered (pyiceberg drops a tab from a location): named with the files no reader sees.
      ['b', 2020, 'part_\t1.parquet', 100],
      // S3's DeleteObjects (XML) cannot carry it: the inputs would stay beside the output, run after run.
      ['b', 2020, 'part_\u001besc.parquet', 100],
      // No store method addresses it (a path and an S3 key would name different objects): its bucket was refused as input.
      ['b', 2020, 'part_\\x.parquet', 100],
      ['b', '0999', 'part_1.parquet', 100],
      ['b', '0999', 'part_2.parquet', 100],
    ]);
    const store = new LocalWarehouseStore(root);
    const summary = await planBuckets(store, { warehouse: root, planId: 'p-glob', threshold: 2, dryRun: false }, () => {});
    const tasks = await allTasks(store, 'p-glob');
    assert.deepEqual(
      tasks.map((t) => t.inputs.map((i) => i.key)),
      [
        ['grid_partition=a1/year=2020/part_1.parquet', 'grid_partition=a1/year=2020/part_2.parquet'],
        ['grid_partition=b/year=2020/part_1.parquet', 'grid_partition=b/year=2020/part_2.parquet'],
      ],
    );
    assert.equal(summary.ignoredObjects, 8);
    // The glob and control-character data files are registered by the rebuild: not among the files no reader
    // sees. The year with a leading zero and the backslash are not.
    assert.deepEqual(summary.ignoredParquetLike, [
      'grid_partition=b/year=0999/part_1.parquet',
      'grid_partition=b/year=0999/part_2.parquet',
      'grid_partition=b/year=2020/part_\t1.parquet',
      'grid_partition=b/year=2020/part_\\x.parquet',
    ]);
  });

  it('names the objects it leaves alone that look like Parquet data (their rows reach no table), not the hidden or control ones', async () => {
    const root = await warehouseOf([
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
      ['a', 2020, 'part_3.PARQUET', 100],
      ['a', 2020, 'part_4.parq', 100],
      ['a', 2020, 'sub/part_5.parquet', 100],
      ['a', 2020, 'spark.parquet/part-0.parquet', 100],
      ['a', '20x6', 'part_1.parquet', 100],
      ['a', 2020, 'README.txt', 10],
      ['a', 2020, '_SUCCESS', 0],
      ['a', 2020, '_temporary/0/part-0.parquet', 100],
      ['a', 2020, '.part_1.parquet.crc', 10],
    ]);
    const store = new LocalWarehouseStore(root);
    const summary = await planBuckets(store, { warehouse: root, planId: 'p-stray', threshold: 2, dryRun: true }, () => {});
    assert.deepEqual(summary.ignoredParquetLike, [
      'grid_partition=a/year=2020/part_3.PARQUET',
      'grid_partition=a/year=2020/part_4.parq',
      'grid_partition=a/year=2020/spark.parquet/part-0.parquet',
      'grid_partition=a/year=2020/sub/part_5.parquet',
      'grid_partition=a/year=20x6/part_1.parquet',
    ]);
    assert.equal(summary.ignoredParquetLikeTotal, 5);
    assert.ok(summary.ignoredObjects >= 8, `every object left alone is counted: ${summary.ignoredObjects}`);
  });

  it('refuses a symbolic link to a data folder or file, naming it, instead of leaving its files out of the table; other links are passed over', async () => {
    const root = await warehouseOf([
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
    ]);
    // A second volume linked in as a cell, and a part file linked into a bucket.
    const volume = await warehouseOf([['b', 2020, 'part_1.parquet', 100]]);
    for (const [target, link] of [
      [path.join(volume, 'grid_partition=b'), path.join(root, 'grid_partition=b')],
      [path.join(volume, 'grid_partition=b', 'year=2020', 'part_1.parquet'), path.join(root, 'grid_partition=a', 'year=2020', 'part_3.parquet')],
    ] as const) {
      await fs.symlink(target, link);
      const store = new LocalWarehouseStore(root);
      await assert.rejects(planBuckets(store, { warehouse: root, planId: 'p-link', threshold: 2, dryRun: false }, () => {}), (err: Error) => {
        assert.equal(err.message, `${link} is a symbolic link: the warehouse's data folders and files are listed without following links, so its files would be left out of the table. Put the folder or file itself there (or mount the volume at that path)`);
        return true;
      });
      await fs.rm(link);
    }
    // Links that are neither a folder nor a data file (a marker, a dangling link) are passed over, as before.
    await fs.symlink(path.join(volume, 'grid_partition=b', 'year=2020', 'part_1.parquet'), path.join(root, 'grid_partition=a', 'year=2020', '_SUCCESS'));
    await fs.symlink(path.join(volume, 'gone'), path.join(root, 'grid_partition=a', 'year=2020', 'part_9.parquet.tmp'));
    const summary = await planBuckets(new LocalWarehouseStore(root), { warehouse: root, planId: 'p-marker', threshold: 2, dryRun: false }, () => {});
    assert.equal(summary.bucketsToCompact, 1);
    assert.equal(summary.filesToCompact, 2);
  });

  it('lists the largest buckets first, equal sizes in (cell, year) order, new inputs in key order', async () => {
    const root = await warehouseOf([
      ['b', 2020, 'part_2.parquet', 300],
      ['b', 2020, 'part_1.parquet', 300],
      ['a', 2021, 'part_1.parquet', 100],
      ['a', 2021, 'part_2.parquet', 100],
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
      ['c', 2019, 'part_1.parquet', 5_000],
      ['c', 2019, 'part_2.parquet', 1],
      // One file: below the threshold, scanned but not compacted.
      ['d', 2022, 'part_1.parquet', 90_000],
    ]);
    const store = new LocalWarehouseStore(root);
    const summary = await planBuckets(store, { warehouse: root, planId: 'p1', threshold: 2, dryRun: false }, () => {});

    const tasks = await allTasks(store, 'p1');
    const order = tasks.map((t) => bucketPrefix(t.bucket));
    assert.deepEqual(order, ['grid_partition=c/year=2019', 'grid_partition=b/year=2020', 'grid_partition=a/year=2020', 'grid_partition=a/year=2021']);
    assert.deepEqual(tasks[1]!.inputs.map((i) => i.key), ['grid_partition=b/year=2020/part_1.parquet', 'grid_partition=b/year=2020/part_2.parquet']);
    assert.deepEqual(summary.sample, order);
    assert.equal(summary.bucketsScanned, 5);
    assert.equal(summary.bucketsToCompact, 4);
    assert.equal(summary.filesToCompact, 8);
    assert.equal(summary.bytesToCompact, 5_001 + 600 + 200 + 200);
  });

  it("puts a bucket's earlier outputs before the files delivered since (the later input wins a tie on updated), whatever their names", async () => {
    const bucket = 'grid_partition=e/year=2024';
    const names = ['0001_redeliver.parquet', 'Part_9.parquet', 'compacted_20260108T000000-bbbbbbbb.parquet', 'compacted_20260101T000000-aaaaaaaa.parquet', 'part_1.parquet', 'zz.parquet'];
    const root = await warehouseOf(names.map((n) => ['e', 2024, n, 10] as [string, number, string, number]));
    const store = new LocalWarehouseStore(root);
    await planBuckets(store, { warehouse: root, planId: 'p-order', threshold: 2, dryRun: false }, () => {});
    const [task] = await allTasks(store, 'p-order');
    assert.deepEqual(
      task!.inputs.map((i) => i.key.slice(bucket.length + 1)),
      ['compacted_20260101T000000-aaaaaaaa.parquet', 'compacted_20260108T000000-bbbbbbbb.parquet', '0001_redeliver.parquet', 'Part_9.parquet', 'part_1.parquet', 'zz.parquet'],
    );
  });

  it('keeps the order across pages and writes nothing on a dry run', async () => {
    const files: [string, number, string, number][] = [];
    const buckets = PLAN_PAGE_SIZE + 5;
    // Sizes rise with the bucket's number, so the plan order is the reverse of the listing's.
    for (let k = 0; k < buckets; k++) {
      const cell = `cell${String(k).padStart(4, '0')}`;
      files.push([cell, 2024, 'part_1.parquet', 10 + k], [cell, 2024, 'part_2.parquet', 10]);
    }
    const root = await warehouseOf(files);
    const store = new LocalWarehouseStore(root);

    const dry = await planBuckets(store, { warehouse: root, planId: 'dry', threshold: 2, dryRun: true }, () => {});
    assert.equal(dry.pages, 2);
    assert.equal(await readPlanManifest(store, 'dry'), undefined, 'a dry run writes no plan');

    await planBuckets(store, { warehouse: root, planId: 'p2', threshold: 2, dryRun: false }, () => {});
    const cells = (await allTasks(store, 'p2')).map((t) => t.bucket.cell);
    assert.equal(cells.length, buckets);
    assert.deepEqual(cells, [...cells].sort().reverse(), 'largest (highest-numbered) first, across both pages');
    assert.equal(dry.sample[0], 'grid_partition=cell0204/year=2024');
  });

  it('a planning attempt whose run is gone (its activity cancelled) writes no plan', async () => {
    const root = await warehouseOf([
      ['a1', 2024, 'part_1.parquet', 10],
      ['a1', 2024, 'part_2.parquet', 10],
    ]);
    // The SDK cancels an activity whose heartbeat finds its workflow gone; the mock environment supplies that signal.
    const env = new MockActivityEnvironment();
    env.cancel();
    const activities = createActivities({ scratchDir: await makeTempDir('ec-plan-cancel-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 });
    await assert.rejects(env.run(activities.planCompaction, { warehouse: root, planId: 'gone', threshold: 2, dryRun: false }));
    assert.equal(await readPlanManifest(new LocalWarehouseStore(root), 'gone'), undefined);
    await assert.rejects(fs.access(path.join(root, CONTROL_PREFIX, 'plans', 'gone')), 'not even its pages');
  });

  it('cuts pages by size as well as by count: a warehouse of many-file buckets gives pages far below the payload limit', async () => {
    // 60 buckets of 400 files with long names: ~3.5 MB of tasks, which would have been one page.
    const files: [string, number, string, number][] = [];
    const longName = (i: number) => `part_${String(i).padStart(5, '0')}_${'0123456789abcdef'.repeat(4)}.parquet`;
    for (let k = 0; k < 60; k++) for (let i = 0; i < 400; i++) files.push([`cell${String(k).padStart(3, '0')}`, 2024, longName(i), 1]);
    const root = await warehouseOf(files);
    const store = new LocalWarehouseStore(root);
    const summary = await planBuckets(store, { warehouse: root, planId: 'bytes', threshold: 2, dryRun: false }, () => {});
    assert.ok(summary.pages > 1, `split into ${summary.pages} pages`);
    for (let page = 0; page < summary.pages; page++) {
      const tasks = await readPlanPage(store, 'bytes', page);
      assert.ok(Buffer.byteLength(JSON.stringify(tasks)) <= PLAN_PAGE_MAX_BYTES, `page ${page} within ${PLAN_PAGE_MAX_BYTES} bytes`);
    }
    const tasks = await allTasks(store, 'bytes');
    assert.equal(tasks.length, 60);
    assert.equal(tasks.reduce((n, t) => n + t.inputs.length, 0), 60 * 400, 'every file planned once');
    assert.equal(summary.inputsDeferred, undefined);
  });

  it('a bucket with more files than one task holds takes the first ones in key order and leaves the rest for a later run', async () => {
    const files: [string, number, string, number][] = [];
    const names = Array.from({ length: 12_000 }, (_, i) => `part_${String(i).padStart(6, '0')}_${'0123456789abcdef'.repeat(3)}.parquet`);
    for (const name of names) files.push(['huge', 2024, name, 1]);
    files.push(['small', 2024, 'part_1.parquet', 1], ['small', 2024, 'part_2.parquet', 1]);
    const root = await warehouseOf(files);
    const store = new LocalWarehouseStore(root);
    const summary = await planBuckets(store, { warehouse: root, planId: 'cap', threshold: 2, dryRun: false }, () => {});
    const tasks = await allTasks(store, 'cap');
    const huge = tasks.find((t) => t.bucket.cell === 'huge')!;
    assert.ok(Buffer.byteLength(JSON.stringify(huge)) <= BUCKET_TASK_MAX_BYTES, 'the task (a compactBucket input) stays within its cap');
    assert.ok(huge.inputs.length > 1000 && huge.inputs.length < names.length, `${huge.inputs.length} of ${names.length} files planned`);
    assert.deepEqual(huge.inputs.map((i) => i.key), names.slice(0, huge.inputs.length).map((n) => `grid_partition=huge/year=2024/${n}`));
    assert.equal(summary.inputsDeferred, names.length - huge.inputs.length);
    assert.equal(summary.filesBefore, names.length + 2, 'deferred files still count as files before');
    assert.equal(summary.filesToCompact, huge.inputs.length + 2);
    assert.equal(tasks.find((t) => t.bucket.cell === 'small')!.inputs.length, 2);
  });
});

describe('buckets below the threshold', () => {
  it('plans one whose delivered file has a column of the Parquet Null type (a contract column too: compaction writes it as its type), not an output', async () => {
    const root = await makeTempDir('ec-plan-null');
    const session = await openDuckSession({ tempDir: path.join(root, '.duck'), threads: 1 });
    const write = async (cell: string, name: string, nulled?: string) => {
      const file = path.join(root, `grid_partition=${cell}`, 'year=2020', name);
      await fs.mkdir(path.dirname(file), { recursive: true });
      await session.exec(`COPY (SELECT 'a' AS id, 'sentinel-2a' AS platform, 'x' AS extra) TO ${sqlString(file)} (FORMAT parquet)`);
      if (nulled) await makeColumnNullTyped(file, nulled);
    };
    try {
      await write('extra', 'part_1.parquet', 'extra');
      await write('platform', 'part_1.parquet', 'platform');
      await write('output', 'compacted_20260101T000000-0000abcd.parquet', 'extra');
      await write('plain', 'part_1.parquet');
    } finally {
      session.close();
    }
    await fs.rm(path.join(root, '.duck'), { recursive: true, force: true });
    await fs.mkdir(path.join(root, 'grid_partition=bytes', 'year=2020'), { recursive: true });
    await fs.writeFile(path.join(root, 'grid_partition=bytes', 'year=2020', 'part_1.parquet'), 'not parquet');
    const store = new LocalWarehouseStore(root);
    const summary = await planBuckets(store, { warehouse: root, planId: 'p-null', threshold: 2, dryRun: false }, () => undefined);
    assert.deepEqual(
      [summary.bucketsScanned, summary.bucketsToCompact, summary.nullTypedBuckets?.slice().sort(), summary.nullTypedBucketsTotal],
      [5, 2, ['grid_partition=extra/year=2020', 'grid_partition=platform/year=2020'], 2],
    );
    assert.deepEqual((await allTasks(store, 'p-null')).map((t) => t.inputs.map((i) => i.key)).sort(), [['grid_partition=extra/year=2020/part_1.parquet'], ['grid_partition=platform/year=2020/part_1.parquet']]);

    // A file the store refuses to read (denied, archived) leaves its bucket to the threshold: one file must
    // not fail the whole run's planning. The refusal is injected: root reads every local file.
    const refusing = Object.assign(Object.create(store) as LocalWarehouseStore, {
      readRange: (key: string) => Promise.reject(new StorageError(`${key} is in an archive storage class`, 'denied')),
    });
    const refused = await planBuckets(refusing, { warehouse: root, planId: 'p-refused', threshold: 2, dryRun: true }, () => undefined);
    assert.deepEqual([refused.bucketsToCompact, refused.nullTypedBuckets], [0, undefined]);
  });

  it("plans one whose delivered file has a struct field of the Null type (at any depth), not one whose Null types compaction keeps (a list's element, a struct's only field)", async () => {
    const root = await makeTempDir('ec-plan-null-nested');
    const session = await openDuckSession({ tempDir: path.join(root, '.duck'), threads: 1 });
    const write = async (cell: string, column: string, nulled: string) => {
      const file = path.join(root, `grid_partition=${cell}`, 'year=2020', 'part_1.parquet');
      await fs.mkdir(path.dirname(file), { recursive: true });
      await session.exec(`COPY (SELECT 'a' AS id, 'sentinel-2a' AS platform, ${column}) TO ${sqlString(file)} (FORMAT parquet)`);
      await makeColumnNullTyped(file, nulled);
    };
    try {
      await write('field', `{'href': 'h', 'unit': 1} AS asset`, 'asset.unit');
      await write('band', `{'B01': {'href': 'h', 'bands': [{'name': 'b', 'unit': 'm'}]}} AS assets`, 'assets.B01.bands.element.unit');
      await write('element', `[1] AS links`, 'links.element');
      await write('only', `{'unit': 1} AS asset`, 'asset.unit');
    } finally {
      session.close();
    }
    const store = new LocalWarehouseStore(root);
    const summary = await planBuckets(store, { warehouse: root, planId: 'p-null-nested', threshold: 2, dryRun: true }, () => undefined);
    assert.deepEqual([summary.bucketsScanned, summary.nullTypedBuckets], [4, ['grid_partition=band/year=2020', 'grid_partition=field/year=2020']]);
  });

  it('plans one whose delivered file has a number column the table types otherwise (an integer in a double column, a float in a long one), and an output only for a type that changed since the last finished plan, and records the table types in the plan', async () => {
    const root = await makeTempDir('ec-plan-retyped');
    const session = await openDuckSession({ tempDir: path.join(root, '.duck'), threads: 1 });
    const write = async (cell: string, columns: string, name = 'part_1.parquet') => {
      const file = path.join(root, `grid_partition=${cell}`, 'year=2020', name);
      await fs.mkdir(path.dirname(file), { recursive: true });
      await session.exec(`COPY (SELECT 'a' AS id, 'sentinel-2a' AS platform, ${columns}) TO ${sqlString(file)} (FORMAT parquet)`);
      return file;
    };
    try {
      await write('intlat', '12::BIGINT AS latitude');
      await write('smallint', '12::SMALLINT AS latitude');
      await write('floatpix', '12.0::DOUBLE AS percent_valid_pixels');
      await write('matching', '12.5::DOUBLE AS latitude, 12::BIGINT AS percent_valid_pixels');
      await write('datelat', "DATE '2020-01-01' AS latitude");
      await write('decimallat', '12.5::DECIMAL(9,2) AS latitude');
      // An earlier output whose bucket had only integers of a column the table later typed double.
      await write('output', '12::BIGINT AS latitude, 7::BIGINT AS "new:count"', 'compacted_20260101T000000-0000abcd.parquet');
      await makeColumnNullTyped(await write('both', "12::BIGINT AS latitude, 'x' AS extra"), 'extra');
    } finally {
      session.close();
    }
    await fs.rm(path.join(root, '.duck'), { recursive: true, force: true });
    const store = new LocalWarehouseStore(root);
    const tableTypes = { latitude: 'double', percent_valid_pixels: 'long' } as const;
    const plan = (planId: string, types?: Record<string, 'long' | 'double'>) =>
      planBuckets(store, { warehouse: root, planId, threshold: 2, dryRun: planId !== 'p1' }, () => undefined, types);
    const delivered = ['grid_partition=floatpix/year=2020', 'grid_partition=intlat/year=2020', 'grid_partition=smallint/year=2020'];

    // No finished plan: nothing is known of what the outputs were written with, so they are read too.
    const first = await plan('p1', tableTypes);
    assert.deepEqual(
      [first.bucketsScanned, first.retypedBuckets, first.retypedBucketsTotal, first.nullTypedBuckets, first.bucketsToCompact],
      [8, [...delivered.slice(0, 2), 'grid_partition=output/year=2020', delivered[2]], 4, ['grid_partition=both/year=2020'], 5],
    );
    assert.deepEqual((await readPlanManifest(store, 'p1'))?.tableTypes, tableTypes, 'every bucket of the plan is written with these');
    await markPlanFinished(store, 'p1', { failedBucketsTotal: 0 } as CompactionSummary);
    // The same types as the last finished plan: outputs are not read again.
    assert.deepEqual((await plan('p2', tableTypes)).retypedBuckets, delivered);
    // A type new since then: outputs are read, for that column only (the output's long latitude is not its concern).
    // A finished run of some cells in between read only their outputs: it does not count.
    const withNew = { ...tableTypes, 'new:count': 'double' } as const;
    await planBuckets(store, { warehouse: root, planId: 'p2s', threshold: 2, dryRun: false, cells: ['intlat'] }, () => undefined, withNew);
    await markPlanFinished(store, 'p2s', {} as CompactionSummary);
    // So does a finished run of the whole warehouse whose summary does not name every bucket that failed.
    await planBuckets(store, { warehouse: root, planId: 'p2f', threshold: 2, dryRun: false }, () => undefined, withNew);
    await markPlanFinished(store, 'p2f', { failedBuckets: [], failedBucketsTotal: 1 } as unknown as CompactionSummary);
    assert.deepEqual((await plan('p3', withNew)).retypedBuckets, [...delivered.slice(0, 2), 'grid_partition=output/year=2020', delivered[2]]);
    assert.deepEqual((await plan('p4', { ...tableTypes, other: 'double' })).retypedBuckets, delivered);
    // A bucket that failed in the last run kept its output unchecked: read against every type.
    const failedIn = async (planId: string, bucket: string) => {
      await planBuckets(store, { warehouse: root, planId, threshold: 2, dryRun: false }, () => undefined, tableTypes);
      await markPlanFinished(store, planId, { failedBuckets: [{ bucket, type: 'Error', reason: 'r' }], failedBucketsTotal: 1 } as unknown as CompactionSummary);
    };
    await failedIn('p6', 'grid_partition=output/year=2020');
    assert.deepEqual((await plan('p7', tableTypes)).retypedBuckets, [...delivered.slice(0, 2), 'grid_partition=output/year=2020', delivered[2]]);
    await failedIn('p8', 'grid_partition=intlat/year=2020');
    assert.deepEqual((await plan('p9', tableTypes)).retypedBuckets, delivered);
    // An output the last run cannot say has the types (an earlier release's worker wrote it): read against every type.
    const untypedIn = async (planId: string, untyped: string[], total: number) => {
      await planBuckets(store, { warehouse: root, planId, threshold: 2, dryRun: false }, () => undefined, tableTypes);
      await markPlanFinished(store, planId, { failedBuckets: [], failedBucketsTotal: 0, untypedOutputs: untyped, untypedOutputsTotal: total } as unknown as CompactionSummary);
    };
    await untypedIn('p9a', ['grid_partition=output/year=2020'], 1);
    assert.deepEqual((await plan('p9b', tableTypes)).retypedBuckets, [...delivered.slice(0, 2), 'grid_partition=output/year=2020', delivered[2]]);
    await untypedIn('p9c', ['grid_partition=intlat/year=2020'], 1);
    assert.deepEqual((await plan('p9d', tableTypes)).retypedBuckets, delivered);
    // More than the summary names: every output is read against every type.
    await untypedIn('p9e', ['grid_partition=intlat/year=2020'], 201);
    assert.deepEqual((await plan('p9f', tableTypes)).retypedBuckets, [...delivered.slice(0, 2), 'grid_partition=output/year=2020', delivered[2]]);
    const without = await plan('p5');
    assert.deepEqual([without.bucketsToCompact, without.retypedBuckets], [1, undefined], 'without the table types only the Null type counts');
  });
});

describe('plan files', () => {
  it('a damaged plan file fails with an error naming it; a damaged older plan does not stop resuming the newest', async () => {
    const root = await warehouseOf([
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
    ]);
    const store = new LocalWarehouseStore(root);
    await assert.rejects(resumablePlanById(store, 'no-such-plan'), (err: unknown) =>
      err instanceof PlanNotFoundError && err.message === `no plan no-such-plan in ${root}: no compaction has made a plan there`);
    const [older, newer] = ['20260101T000000-aaaaaaaa', '20260108T000000-bbbbbbbb'];
    for (const planId of [older, newer]) await planBuckets(store, { warehouse: root, planId, threshold: 2, dryRun: false }, () => {});
    const manifestOf = (planId: string) => path.join(root, CONTROL_PREFIX, 'plans', planId, 'manifest.json');
    const cut = async (file: string) => fs.writeFile(file, (await fs.readFile(file)).subarray(0, 20));
    const page = path.join(root, CONTROL_PREFIX, 'plans', newer, (await readPlanManifest(store, newer))!.pagesDir!, 'page-000000.json');
    await cut(page);
    await assert.rejects(readPlanPage(store, newer, 0), (err: unknown) => err instanceof PlanNotFoundError && err.message.includes(`plan file ${page} is damaged`));

    await cut(manifestOf(older));
    assert.equal((await findResumablePlan(store)).planId, newer, 'the newest plan is resumed');

    await cut(manifestOf(newer));
    await assert.rejects(findResumablePlan(store), (err: unknown) => {
      assert.ok(err instanceof PlanNotFoundError, String(err));
      assert.match(err.message, new RegExp(`^plan file ${manifestOf(newer).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is damaged \\(.*\\); start a new compaction`));
      return true;
    });
  });

  it('a plan page edited into valid JSON that is no plan page, or that lists a bucket twice, is damaged: its buckets never run', async () => {
    const root = await warehouseOf([
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
      ['a', 2020, 'part_3.parquet', 100],
    ]);
    const store = new LocalWarehouseStore(root);
    const planId = '20260101T000000-dddddddd';
    await planBuckets(store, { warehouse: root, planId, threshold: 2, dryRun: false }, () => {});
    const page = path.join(root, CONTROL_PREFIX, 'plans', planId, (await readPlanManifest(store, planId))!.pagesDir!, 'page-000000.json');
    const [task] = JSON.parse(await fs.readFile(page, 'utf8')) as BucketTask[];
    const damaged = (why: string) => (err: unknown) => {
      assert.ok(err instanceof PlanNotFoundError, String(err));
      assert.equal(err.message, `plan file ${page} is damaged (${why}); start a new compaction instead of resuming this plan`);
      return true;
    };
    const twice = [
      { bucket: task!.bucket, inputs: task!.inputs.slice(0, 1) },
      { bucket: task!.bucket, inputs: task!.inputs.slice(1) },
    ];
    await fs.writeFile(page, JSON.stringify(twice));
    await assert.rejects(readPlanPage(store, planId, 0), damaged('it lists bucket grid_partition=a/year=2020 twice'));
    await fs.writeFile(page, JSON.stringify([{ bucket: task!.bucket, inputs: [] }]));
    await assert.rejects(readPlanPage(store, planId, 0), damaged('0.inputs: Too small: expected array to have >=1 items'));
    await fs.writeFile(page, JSON.stringify({ buckets: [task] }));
    await assert.rejects(readPlanPage(store, planId, 0), damaged('the page: Invalid input: expected array, received object'));
    await fs.writeFile(page, JSON.stringify([task]));
    assert.deepEqual(await readPlanPage(store, planId, 0), [task], 'the page as written reads back whole');
  });

  it('two attempts writing one plan: the first manifest is the plan, the later attempt removes its pages and returns that plan', async () => {
    const root = await makeTempDir('ec-plan-race');
    const store = new LocalWarehouseStore(root);
    const planId = '20260101T000000-cccccccc';
    const task = (cell: string): BucketTask => ({ bucket: { cell, year: 2020 }, inputs: [{ key: `grid_partition=${cell}/year=2020/p.parquet`, size: 1 }] });
    const manifest = (cells: string[], pages: number) => ({
      version: 1 as const,
      createdAt: new Date().toISOString(),
      threshold: 2,
      cells: null,
      years: null,
      summary: { planId, bucketsScanned: cells.length, filesBefore: cells.length, bucketsToCompact: cells.length, filesToCompact: cells.length, bytesToCompact: cells.length, pages, sample: cells, ignoredObjects: 0 },
    });
    const first = await writePlan(store, manifest(['a'], 1), [[task('a')]]);
    // The other attempt listed the warehouse later, after ingest added a bucket.
    const later = await writePlan(store, manifest(['a', 'b'], 2), [[task('b')], [task('a')]]);
    assert.deepEqual(later, first, 'the later attempt returns the plan that was committed');
    assert.deepEqual(await allTasks(store, planId), [task('a')]);
    const files = await fs.readdir(path.join(root, CONTROL_PREFIX, 'plans', planId), { recursive: true });
    const pageFiles = files.filter((f) => f.endsWith('.json') && f.includes('page-'));
    assert.deepEqual(pageFiles, [`${(await readPlanManifest(store, planId))!.pagesDir}/page-000000.json`], 'only the plan\'s own pages remain');
  });

  it('resume of the latest plan without an unfinished one says what the newest plan is', async () => {
    const root = await warehouseOf([
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
    ]);
    const store = new LocalWarehouseStore(root);
    await assert.rejects(findResumablePlan(store), (err: unknown) =>
      err instanceof PlanNotFoundError && err.message === `no unfinished compaction plan to resume in ${root}: no compaction has made a plan there`);
    const planId = '20260101T000000-aaaaaaaa';
    await planBuckets(store, { warehouse: root, planId, threshold: 2, dryRun: false }, () => {});
    assert.equal((await findResumablePlan(store)).planId, planId);
    await markPlanFinished(store, planId, {} as CompactionSummary);
    const { createdAt } = (await readPlanManifest(store, planId))!;
    await assert.rejects(findResumablePlan(store), (err: unknown) =>
      err instanceof PlanNotFoundError &&
      err.message === `no unfinished compaction plan to resume in ${root}: its newest plan, ${planId} (made ${createdAt}), has finished`);
  });

  it('resume --plan takes only the newest plan, and only while it is unfinished', async () => {
    const root = await warehouseOf([
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
    ]);
    const store = new LocalWarehouseStore(root);
    await assert.rejects(resumablePlanById(store, 'no-such-plan'), (err: unknown) =>
      err instanceof PlanNotFoundError && err.message === `no plan no-such-plan in ${root}: no compaction has made a plan there`);
    const [older, newer] = ['20260101T000000-aaaaaaaa', '20260108T000000-bbbbbbbb'];
    await planBuckets(store, { warehouse: root, planId: older, threshold: 2, dryRun: false }, () => {});
    assert.equal((await resumablePlanById(store, older)).planId, older, 'the newest unfinished plan');
    await planBuckets(store, { warehouse: root, planId: newer, threshold: 2, dryRun: false }, () => {});
    await assert.rejects(resumablePlanById(store, older), (err: unknown) =>
      err instanceof PlanNotFoundError && err.message === `plan ${older} in ${root} is older than plan ${newer}, which took its files as inputs; only the newest plan can be resumed`);
    const { createdAt } = (await readPlanManifest(store, newer))!;
    await assert.rejects(resumablePlanById(store, 'no-such-plan'), (err: unknown) =>
      err instanceof PlanNotFoundError &&
      err.message === `no plan no-such-plan in ${root}; its newest plan, ${newer} (made ${createdAt}), is unfinished: resume --plan ${newer} (or resume without --plan) finishes it`);
    await markPlanFinished(store, newer, {} as CompactionSummary);
    await assert.rejects(resumablePlanById(store, 'no-such-plan'), (err: unknown) =>
      err instanceof PlanNotFoundError && err.message === `no plan no-such-plan in ${root}; its newest plan, ${newer} (made ${createdAt}), has finished`);
    await assert.rejects(resumablePlanById(store, newer), (err: unknown) =>
      err instanceof PlanNotFoundError && err.message === `plan ${newer} in ${root} has finished`);
  });

  it('finishing a plan removes the pages of every finished plan (also pages beside an older manifest) and of older unfinished plans it superseded, with their emptied folders, and keeps manifests, finish records and a newer unfinished plan', async () => {
    const root = await warehouseOf([
      ['a', 2020, 'part_1.parquet', 100],
      ['a', 2020, 'part_2.parquet', 100],
    ]);
    const store = new LocalWarehouseStore(root);
    const [oldest, superseded, older, newest] = ['20260101T000000-aaaaaaaa', '20260104T000000-dddddddd', '20260108T000000-bbbbbbbb', '20260115T000000-cccccccc'];
    // `superseded`: a terminated run's plan, which the next run (`older`) planned anew instead of resuming.
    for (const planId of [oldest, superseded, older, newest]) await planBuckets(store, { warehouse: root, planId, threshold: 2, dryRun: false }, () => {});
    // The oldest as plans were written before pages had a folder of their own: beside the manifest.
    const oldestDir = path.join(root, CONTROL_PREFIX, 'plans', oldest);
    const { pagesDir } = (await readPlanManifest(store, oldest))!;
    await fs.rename(path.join(oldestDir, pagesDir!, 'page-000000.json'), path.join(oldestDir, 'page-000000.json'));
    await fs.rmdir(path.join(oldestDir, pagesDir!));
    const manifest = JSON.parse(await fs.readFile(path.join(oldestDir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    delete manifest.pagesDir;
    await fs.writeFile(path.join(oldestDir, 'manifest.json'), JSON.stringify(manifest));
    assert.equal((await readPlanPage(store, oldest, 0)).length, 1, 'an old-format plan reads its page beside the manifest');
    await markPlanFinished(store, oldest, {} as CompactionSummary);

    // The activity the workflow ends with, for the middle plan; the newest is still unfinished.
    const activities = createActivities({ scratchDir: await makeTempDir('ec-plan-finish-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 });
    await new MockActivityEnvironment().run(activities.finishPlan, { warehouse: root, planId: older, summary: {} as CompactionSummary });

    const files = (await fs.readdir(path.join(root, CONTROL_PREFIX, 'plans'), { recursive: true })).filter((f) => f.endsWith('.json')).sort();
    const newestPages = (await readPlanManifest(store, newest))!.pagesDir!;
    assert.deepEqual(files, [
      `${oldest}/finished.json`,
      `${oldest}/manifest.json`,
      `${superseded}/manifest.json`,
      `${older}/finished.json`,
      `${older}/manifest.json`,
      `${newest}/manifest.json`,
      `${newest}/${newestPages}/page-000000.json`,
    ].sort());
    const folders: string[] = [];
    for (const entry of await fs.readdir(path.join(root, CONTROL_PREFIX, 'plans'), { recursive: true, withFileTypes: true })) {
      if (entry.isDirectory()) folders.push(path.relative(path.join(root, CONTROL_PREFIX, 'plans'), path.join(entry.parentPath, entry.name)));
    }
    assert.deepEqual(folders.sort(), [oldest, superseded, older, newest, `${newest}/${newestPages}`].sort(), 'no empty pages folder is left behind');
    assert.equal((await readPlanPage(store, newest, 0)).length, 1, 'the unfinished plan can still be resumed');
    assert.equal((await findResumablePlan(store)).planId, newest);
  });
});

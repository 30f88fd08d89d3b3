/**
 * The catalog rebuild over an S3 warehouse, against a real S3 / S3 Tables API server (moto):
 * - catalog.db kept in S3: downloaded, rebuilt, uploaded with a conditional write; pyiceberg loads
 *   the table from it and scans exactly the warehouse's rows; a concurrent change is a conflict and
 *   is never overwritten; a corrupt catalog.db is refused and left alone.
 * - a local catalog.db over the S3 warehouse (metadata files in S3).
 * - S3 Tables: the pre-flight check and verify create nothing; a rebuild creates namespace and table
 *   when absent, metadata under the warehouse location,
 *   exactly one snapshot, a stale version token is a conflict, readers always find the table.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { CreateNamespaceCommand, CreateTableBucketCommand, CreateTableCommand, GetTableMetadataLocationCommand, ListNamespacesCommand, S3TablesClient } from '@aws-sdk/client-s3tables';
import { CancelledFailure, WorkflowFailedError } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { CatalogRequest, CatalogResult, CompactionInput, CompactionSummary } from '../workflows/contract';
import { lockWorkflowId } from '../workflows/lock';
import { openWarehouseStore } from '../activities/storage/open-store';
import type { WarehouseStore } from '../activities/storage/warehouse-store';
import { openCatalogBackend } from '../activities/catalog/open-catalog';
import { checkTable, rebuildCatalog } from '../activities/catalog/rebuild-catalog';
import { planBuckets } from '../activities/compaction/plan-buckets';
import { StorageError } from '../activities/storage/warehouse-store';
import { verifyWarehouse, ViolationKinds } from '../activities/verification/verify-warehouse';
import { CatalogConflictError, CatalogCorruptError, CatalogRequestError } from '../activities/catalog/catalog-backend';
import { createActivities, toActivityFailure } from '../activities';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { S3CatalogDbBackend } from '../activities/catalog/s3-catalog-db';
import { S3TablesCatalogBackend } from '../activities/catalog/s3tables-catalog';
import { generateSampleWarehouse } from '../client/demo/sample-warehouse';
import { startMoto, uploadDirectory, listKeys, type MotoServer } from './helpers/moto-server';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy';
import { REPO_ROOT, spawnWorkerProcess, startTemporal, uniqueTaskQueue, type TemporalHarness, type WorkerProcess } from './helpers/temporal';
import { byBucket, type IcebergScan } from './helpers/warehouse-fixtures';
import { expectedBucketRows, readOutputRows, assertSameRows } from './helpers/bucket-oracle';
import { pythonExecutable } from '../client/temporal-cli';
import { makeTempDir } from './helpers/temp-dirs';
import { waitFor } from './helpers/wait';

const run = promisify(execFile);
const BUCKET = 'ec-catalog-test';
const WAREHOUSE = `s3://${BUCKET}/warehouse`;

let moto: MotoServer;
let scratch: string;
let store: WarehouseStore;
let dataFiles: string[];
let totalRows: number;

const request = (catalog: string): CatalogRequest => ({
  warehouse: WAREHOUSE,
  catalog,
  namespace: 'earthcatalog',
  table: 'stac_items',
  catalogName: 'earthcatalog',
});

before(async () => {
  moto = await startMoto();
  await moto.createBucket(BUCKET);
  scratch = await makeTempDir('ec-s3-catalog');
  const local = path.join(scratch, 'generated');
  const stats = await generateSampleWarehouse(local, { cells: ['81283ffffffffff', '8128bffffffffff'], years: [2020, 2021], partsPerBucket: [2, 3], rowsPerPart: 20, seed: 5 });
  totalRows = stats.rows;
  dataFiles = await uploadDirectory(moto.client, BUCKET, 'warehouse', local);
  assert.equal(dataFiles.length, stats.files);
  store = await openWarehouseStore(WAREHOUSE);
});

after(async () => {
  await store?.close();
  await moto?.stop();
});

async function rebuildWith(catalog: string) {
  const backend = await openCatalogBackend(catalog, WAREHOUSE, 'earthcatalog');
  try {
    return await rebuildCatalog(store, backend, request(catalog));
  } finally {
    await backend.close();
  }
}

async function objectBytes(uri: string): Promise<Buffer | undefined> {
  const m = /^s3:\/\/([^/]+)\/(.*)$/.exec(uri)!;
  try {
    const res = await moto.client.send(new GetObjectCommand({ Bucket: m[1], Key: m[2] }));
    return Buffer.from(await res.Body!.transformToByteArray());
  } catch (err) {
    if ((err as Error).name === 'NoSuchKey') return undefined;
    throw err;
  }
}

async function etagOf(uri: string): Promise<string | undefined> {
  const m = /^s3:\/\/([^/]+)\/(.*)$/.exec(uri)!;
  return (await moto.client.send(new HeadObjectCommand({ Bucket: m[1], Key: m[2] }))).ETag;
}

/** pyiceberg over S3 (endpoint and credentials from the environment moto set up). */
async function pyiceberg(args: string[]): Promise<IcebergScan & { metadata_location?: string; metadata_log?: string[] }> {
  const python = pythonExecutable();
  try {
    const { stdout } = await run(python, [path.join(REPO_ROOT, 'test', 'py', 'iceberg_read_s3.py'), ...args], { maxBuffer: 64 * 1024 * 1024, env: process.env });
    return JSON.parse(stdout) as IcebergScan;
  } catch (err) {
    const stdout = (err as { stdout?: string }).stdout;
    if (stdout) return JSON.parse(stdout) as IcebergScan;
    throw err;
  }
}

/** Downloads catalog.db from S3 and scans the table with pyiceberg's SqlCatalog + S3 FileIO. */
async function scanS3CatalogDb(catalogUri: string): Promise<IcebergScan & { metadata_location?: string; metadata_log?: string[] }> {
  const local = path.join(scratch, `copy-${Date.now()}-${Math.random().toString(36).slice(2)}.db`);
  await fs.writeFile(local, (await objectBytes(catalogUri))!);
  return pyiceberg(['scan', '--catalog', local, '--ids']);
}

function assertWholeWarehouse(scan: IcebergScan): void {
  assert.equal(scan.error, undefined, scan.error);
  assert.equal(scan.snapshot_count, 1);
  assert.equal(scan.file_count, dataFiles.length);
  assert.equal(scan.row_count, totalRows);
  assert.deepEqual(scan.files.map((f) => f.path).sort(), dataFiles.map((k) => `${WAREHOUSE}/${k}`).sort());
}

describe('catalog.db kept in S3', () => {
  const catalog = `s3://${BUCKET}/catalogs/catalog.db`;

  it('verify reports a catalog.db that is not in S3 as missing, like a local one, and creates nothing', async () => {
    const report = await verifyWarehouse({ warehouse: WAREHOUSE, catalog, scratchDir: scratch });
    assert.deepEqual(
      report.violations.filter((v) => v.object === catalog).map((v) => [v.kind, v.detail]),
      [[ViolationKinds.catalogMissing, `the catalog ${catalog} does not exist`]],
    );
    assert.equal(await objectBytes(catalog), undefined);
  });

  it('a first rebuild creates catalog.db in S3 with the metadata in the S3 warehouse; pyiceberg scans every row', async () => {
    const result = await rebuildWith(catalog);
    assert.equal(result.createdTable, true);
    assert.equal(result.dataFiles, dataFiles.length);
    assert.equal(result.totalRows, totalRows);
    assert.match(result.metadataLocation, new RegExp(`^${WAREHOUSE}/earthcatalog/stac_items/metadata/.+\\.metadata\\.json$`));
    assert.ok(await objectBytes(result.metadataLocation), 'the metadata file is an S3 object');
    const scan = await scanS3CatalogDb(catalog);
    assertWholeWarehouse(scan);
    assert.equal(scan.metadata_location, result.metadataLocation);
  });

  it('a second rebuild keeps one snapshot and swaps the pointer (conditional write on the version read)', async () => {
    const before = await etagOf(catalog);
    const result = await rebuildWith(catalog);
    assert.equal(result.createdTable, false);
    assert.notEqual(await etagOf(catalog), before);
    const scan = await scanS3CatalogDb(catalog);
    assertWholeWarehouse(scan);
    assert.equal(scan.metadata_location, result.metadataLocation);
    assert.equal(scan.metadata_log?.length, 1, 'the previous metadata file is logged');
  });

  it("the worker's activities work on catalog.db inside the worker's scratch claim, not in the system's temporary directory", async () => {
    // The system's temporary directory made unusable (a file): the rebuild and the pre-flight must not need it,
    // so a killed worker's copy is swept with its claim.
    const workerScratch = await makeTempDir('ec-s3-catalog-worker');
    const activities = createActivities({ scratchDir: workerScratch, memoryBudgetMb: 256, duckdbThreads: 1 });
    const notADir = path.join(await makeTempDir('ec-s3-catalog-tmp'), 'file');
    await fs.writeFile(notADir, '');
    const tmpdir = process.env.TMPDIR;
    process.env.TMPDIR = notADir;
    try {
      const env = new MockActivityEnvironment();
      const result = (await env.run(activities.rebuildCatalog, request(catalog))) as CatalogResult;
      assert.equal(result.dataFiles, dataFiles.length);
      assert.deepEqual(await env.run(activities.checkCatalog, request(catalog)), { tableExists: true });
    } finally {
      if (tmpdir === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = tmpdir;
    }
    assertWholeWarehouse(await scanS3CatalogDb(catalog));
  });

  it('catalog.db changed by someone else after it was read: CatalogConflictError, their version is not overwritten', async () => {
    const slow = await S3CatalogDbBackend.open(catalog, WAREHOUSE, 'earthcatalog');
    try {
      // Someone else rebuilds (and uploads) while `slow` holds its copy.
      const theirs = await rebuildWith(catalog);
      const theirEtag = await etagOf(catalog);
      await assert.rejects(rebuildCatalog(store, slow, request(catalog)), (err: unknown) => {
        assert.ok(err instanceof CatalogConflictError, String(err));
        assert.match(err.message, new RegExp(`catalog\\.db at ${catalog.replace(/[.]/g, '\\.')} was changed by someone else since it was read; not overwritten`));
        return true;
      });
      assert.equal(await etagOf(catalog), theirEtag, 'catalog.db in S3 is still theirs');
      const scan = await scanS3CatalogDb(catalog);
      assert.equal(scan.metadata_location, theirs.metadataLocation);
    } finally {
      await slow.close();
    }
    // A retry (what the activity does after a conflict) succeeds.
    assertWholeWarehouse(await scanS3CatalogDb(catalog));
    const retried = await rebuildWith(catalog);
    assert.equal((await scanS3CatalogDb(catalog)).metadata_location, retried.metadataLocation);
  });

  it("a metadata file gone from under a copy of catalog.db another writer has replaced is a conflict (retried); gone while catalog.db is unchanged, CatalogCorrupt naming it", async () => {
    const own = `s3://${BUCKET}/catalogs/metadata-gone/catalog.db`;
    const first = await rebuildWith(own);
    const [, bucket, key] = /^s3:\/\/([^/]+)\/(.*)$/.exec(first.metadataLocation)!;
    // Another writer commits and cleans up the file after this copy of catalog.db was downloaded: the
    // copy still names it, but catalog.db in S3 has moved on, and a retry reads the new one.
    const slow = await S3CatalogDbBackend.open(own, WAREHOUSE, 'earthcatalog');
    try {
      const theirs = await rebuildWith(own);
      await moto.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      await assert.rejects(checkTable(slow, request(own), WAREHOUSE), (err: unknown) => err instanceof CatalogConflictError && err.message.includes(first.metadataLocation));
      assert.equal((await scanS3CatalogDb(own)).metadata_location, theirs.metadataLocation, 'their catalog.db untouched');
    } finally {
      await slow.close();
    }
    // The file the catalog points at now is gone, catalog.db unchanged: no retry helps.
    const current = (await scanS3CatalogDb(own)).metadata_location!;
    const [, curBucket, curKey] = /^s3:\/\/([^/]+)\/(.*)$/.exec(current)!;
    const etagBefore = await etagOf(own);
    await moto.client.send(new DeleteObjectCommand({ Bucket: curBucket, Key: curKey }));
    const backend = await S3CatalogDbBackend.open(own, WAREHOUSE, 'earthcatalog');
    try {
      await assert.rejects(checkTable(backend, request(own), WAREHOUSE), (err: unknown) => err instanceof CatalogCorruptError && err.message.includes(current));
    } finally {
      await backend.close();
    }
    assert.equal(await etagOf(own), etagBefore, 'catalog.db left as it was');
  });

  it('a catalog.db created by someone else while ours was being built (it did not exist when read) is a conflict too', async () => {
    const fresh = `s3://${BUCKET}/catalogs/race/catalog.db`;
    const slow = await S3CatalogDbBackend.open(fresh, WAREHOUSE, 'earthcatalog');
    try {
      await rebuildWith(fresh);
      const theirEtag = await etagOf(fresh);
      await assert.rejects(rebuildCatalog(store, slow, request(fresh)), CatalogConflictError);
      assert.equal(await etagOf(fresh), theirEtag);
    } finally {
      await slow.close();
    }
  });

  it('the pre-flight proves catalog.db may be written and leaves it as it was (same bytes, same ETag); the commit that follows still matches', async () => {
    const before = await objectBytes(catalog);
    const etag = await etagOf(catalog);
    assert.ok(before && etag, 'an earlier test created catalog.db');
    const backend = await S3CatalogDbBackend.open(catalog, WAREHOUSE, 'earthcatalog');
    try {
      await backend.assertWritable();
      assert.equal(await etagOf(catalog), etag);
      assert.deepEqual(await objectBytes(catalog), before);
      await rebuildCatalog(store, backend, request(catalog));
    } finally {
      await backend.close();
    }
    assert.notEqual(await etagOf(catalog), etag, 'the rebuild was not taken for a conflict with the proof');
    assertWholeWarehouse(await scanS3CatalogDb(catalog));
  });

  it('a policy without s3:PutObject on catalog.db fails the pre-flight as denied, naming it; nothing is written', async () => {
    const before = await objectBytes(catalog);
    const etag = await etagOf(catalog);
    let denied = 0;
    const proxy = await startFaultProxy(moto.endpoint, {
      deny: (r) => {
        const hit = r.method === 'PUT' && r.key === 'catalogs/catalog.db';
        if (hit) denied++;
        return hit;
      },
    });
    try {
      const backend = await S3CatalogDbBackend.open(catalog, WAREHOUSE, 'earthcatalog', { clientSettings: { endpoint: proxy.endpoint } });
      try {
        await assert.rejects(backend.assertWritable(), (err: unknown) => {
          assert.ok(err instanceof StorageError, String(err));
          assert.equal(err.kind, 'denied');
          assert.ok(err.message.startsWith(`catalog ${catalog} cannot be written`), err.message);
          assert.match(err.message, /nothing was changed/);
          return true;
        });
      } finally {
        await backend.close();
      }
      assert.ok(denied >= 1, 'the proof tried to write catalog.db');
      assert.equal(await etagOf(catalog), etag);
      assert.deepEqual(await objectBytes(catalog), before);
    } finally {
      await proxy.stop();
    }
  });

  it('a catalog.db that does not exist yet is not written by the pre-flight (no table can point at deleted files)', async () => {
    const absent = `s3://${BUCKET}/catalogs/not-yet/catalog.db`;
    const backend = await S3CatalogDbBackend.open(absent, WAREHOUSE, 'earthcatalog');
    try {
      await backend.assertWritable();
    } finally {
      await backend.close();
    }
    assert.equal(await objectBytes(absent), undefined);
  });

  it('a corrupt catalog.db in S3 is refused naming its URI and left untouched', async () => {
    const corrupt = `s3://${BUCKET}/catalogs/corrupt/catalog.db`;
    const garbage = Buffer.from('this is not an SQLite database, it is a text file of some length');
    await moto.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'catalogs/corrupt/catalog.db', Body: garbage }));
    await assert.rejects(openCatalogBackend(corrupt, WAREHOUSE, 'earthcatalog'), (err: unknown) => {
      assert.ok(err instanceof CatalogCorruptError, String(err));
      assert.ok(err.message.includes(corrupt), err.message);
      return true;
    });
    assert.deepEqual(await objectBytes(corrupt), garbage);
  });
});

describe('old metadata files in S3', () => {
  const catalog = `s3://${BUCKET}/catalogs/catalog.db`;
  const avroKeys = async () => new Set((await listKeys(moto.client, BUCKET, 'warehouse/earthcatalog/stac_items/metadata')).filter((k) => k.endsWith('.avro')));
  const minus = (a: Set<string>, b: Set<string>) => new Set([...a].filter((k) => !b.has(k)));

  it("a rebuild deletes the generation before the replaced one; another catalog's table in the same directory keeps its files", async () => {
    const before = await avroKeys();
    await rebuildWith(catalog);
    const gen1 = minus(await avroKeys(), before);
    await rebuildWith(catalog);
    const r3 = await rebuildWith(catalog);
    const after = await avroKeys();
    assert.equal(r3.metadataCleanupError, undefined);
    assert.ok(gen1.size >= 2 && [...gen1].every((k) => !after.has(k)), 'the first of the three generations is gone');
    assert.equal(r3.metadataFilesDeleted, gen1.size);
    assertWholeWarehouse(await scanS3CatalogDb(catalog));
    // The race test's catalog registered its table at the same location: its manifests are no metadata of ours.
    assertWholeWarehouse(await scanS3CatalogDb(`s3://${BUCKET}/catalogs/race/catalog.db`));
  });
  it('a commit by Spark spelling its manifest list s3a:// is read and, once history, expired like any other', async () => {
    await rebuildWith(catalog);
    // Another engine commits (a property change) and names its manifest list as Hadoop's S3A does.
    const backend = await openCatalogBackend(catalog, WAREHOUSE, 'earthcatalog');
    let foreignLists: string[];
    try {
      const handle = await backend.openTable('earthcatalog', 'stac_items');
      const current = handle.pointer!.metadataLocation;
      const metadata = JSON.parse((await backend.readFile(current)).toString('utf8')) as {
        snapshots: { 'manifest-list': string }[];
        'metadata-log'?: { 'timestamp-ms': number; 'metadata-file': string }[];
        'last-updated-ms': number;
        properties?: Record<string, string>;
      };
      for (const s of metadata.snapshots) s['manifest-list'] = s['manifest-list'].replace(/^s3:/, 's3a:');
      foreignLists = metadata.snapshots.map((s) => s['manifest-list']);
      metadata['metadata-log'] = [...(metadata['metadata-log'] ?? []), { 'timestamp-ms': metadata['last-updated-ms'], 'metadata-file': current }];
      metadata['last-updated-ms'] += 1;
      metadata.properties = { ...metadata.properties, 'spark.owner': 'etl' };
      const next = `${handle.metadataDir}/99000-${randomUUID()}.metadata.json`;
      await backend.writeFile(next, Buffer.from(JSON.stringify(metadata)));
      await backend.commit('earthcatalog', 'stac_items', next, handle.pointer);
    } finally {
      await backend.close();
    }
    const listKeysOf = foreignLists.map((l) => l.replace(/^s3a:\/\/[^/]+\//, ''));
    const r2 = await rebuildWith(catalog);
    assert.equal(r2.metadataCleanupError, undefined, 'the replaced s3a:// manifest list was read');
    assert.ok((await objectBytes(`s3://${BUCKET}/${listKeysOf[0]}`)) !== undefined, 'a reader of the replaced table may still open it');
    const r3 = await rebuildWith(catalog);
    assert.equal(r3.metadataCleanupError, undefined);
    for (const key of listKeysOf) assert.equal(await objectBytes(`s3://${BUCKET}/${key}`), undefined, `${key} was deleted through its s3a:// name`);
    assertWholeWarehouse(await scanS3CatalogDb(catalog));
  });
});

describe('a local catalog.db over the S3 warehouse', () => {
  it('writes metadata into the S3 warehouse; pyiceberg scans every row', async () => {
    const local = path.join(scratch, 'local-catalog', 'catalog.db');
    const result = await rebuildWith(local);
    assert.ok(result.metadataLocation.startsWith(`${WAREHOUSE}/earthcatalog/stac_items/metadata/`));
    assertWholeWarehouse(await pyiceberg(['scan', '--catalog', local, '--ids']));
  });
});

describe('keys Iceberg readers cannot address in an s3:// location', () => {
  it('a file whose key has ? or #, or a backslash, is reported unreadable, not registered; pyiceberg scans the rest; the plan counts the ones it leaves alone', async () => {
    const warehouse = `s3://${BUCKET}/warehouse-q`;
    const local = path.join(scratch, 'generated');
    const uploaded = await uploadDirectory(moto.client, BUCKET, 'warehouse-q', local);
    const source = await fs.readFile(path.join(local, uploaded[0]!));
    const odd = ['grid_partition=81283ffffffffff/year=2020/part_q?x.parquet', 'grid_partition=81283ffffffffff/year=2020/part_h#x.parquet'];
    // As a Windows path joined into a key: the store cannot address it (a path on disk would read it as folders).
    const backslash = 'grid_partition=81283ffffffffff/year=2020/part_b\\x.parquet';
    for (const key of [...odd, backslash]) await moto.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `warehouse-q/${key}`, Body: source }));
    const catalog = path.join(scratch, 'catalog-q', 'catalog.db');
    const qStore = await openWarehouseStore(warehouse);
    const backend = await openCatalogBackend(catalog, warehouse, 'earthcatalog');
    try {
      const result = await rebuildCatalog(qStore, backend, { ...request(catalog), warehouse });
      assert.deepEqual(result.unreadable.map((u) => u.key).sort(), [...odd, backslash].sort());
      for (const u of result.unreadable) assert.match(u.reason, u.key === backslash ? /a backslash or a \. or \.\. segment/ : /\? or #/);
      assert.equal(result.dataFiles, uploaded.length);
      const scan = await pyiceberg(['scan', '--catalog', catalog, '--ids']);
      assert.equal(scan.error, undefined, scan.error);
      assert.equal(scan.file_count, uploaded.length);
      assert.equal(scan.row_count, totalRows);
      // `?` reads as a glob in DuckDB, the backslash cannot be addressed: both left alone and counted.
      const plan = await planBuckets(qStore, { warehouse, planId: 'p-odd-keys', threshold: 2, dryRun: true }, () => undefined);
      assert.equal(plan.ignoredObjects, 2);
    } finally {
      await backend.close();
      await qStore.close();
    }
  });
});

describe('Amazon S3 Tables', () => {
  let tables: S3TablesClient;
  let arn: string;
  before(async () => {
    tables = new S3TablesClient({ endpoint: moto.endpoint, region: 'us-east-1', credentials: { accessKeyId: moto.accessKeyId, secretAccessKey: moto.secretAccessKey } });
    arn = (await tables.send(new CreateTableBucketCommand({ name: 'ec-tables' }))).arn!;
  });
  after(() => tables?.destroy());

  const pointer = async () =>
    tables.send(new GetTableMetadataLocationCommand({ tableBucketARN: arn, namespace: 'earthcatalog', name: 'stac_items' }));

  it('the pre-flight check and verify read a table bucket without the table and create nothing in it', async () => {
    const backend = await openCatalogBackend(arn, WAREHOUSE, 'earthcatalog');
    try {
      assert.deepEqual(await checkTable(backend, request(arn), WAREHOUSE), { tableExists: false });
      await backend.assertWritable?.('earthcatalog', 'stac_items');
    } finally {
      await backend.close();
    }
    const report = await verifyWarehouse({ warehouse: WAREHOUSE, catalog: arn, scratchDir: scratch });
    assert.deepEqual(
      report.violations.filter((v) => v.kind === ViolationKinds.tableMissing).map((v) => v.detail),
      ['the catalog has no table earthcatalog.stac_items'],
    );
    assert.deepEqual((await tables.send(new ListNamespacesCommand({ tableBucketARN: arn }))).namespaces, []);
  });

  it("a table made by create-table (no metadata yet: AWS's own compaction can then be turned off before the first run) is the table the first rebuild commits into, not one it created; verify says it has no metadata yet", async () => {
    const made = (await tables.send(new CreateTableBucketCommand({ name: 'ec-tables-made' }))).arn!;
    await tables.send(new CreateNamespaceCommand({ tableBucketARN: made, namespace: ['earthcatalog'] }));
    await tables.send(new CreateTableCommand({ tableBucketARN: made, namespace: 'earthcatalog', name: 'stac_items', format: 'ICEBERG' }));
    const located = () => tables.send(new GetTableMetadataLocationCommand({ tableBucketARN: made, namespace: 'earthcatalog', name: 'stac_items' }));
    const before = await located();
    assert.equal(before.metadataLocation, undefined, 'no metadata yet');
    const report = await verifyWarehouse({ warehouse: WAREHOUSE, catalog: made, scratchDir: scratch });
    assert.deepEqual(
      report.violations.filter((v) => v.kind === ViolationKinds.tableMissing).map((v) => v.detail),
      ['the table earthcatalog.stac_items has no metadata yet (made by create-table, or a first run stopped after creating it): a compaction gives it its first snapshot'],
    );
    const backend = await openCatalogBackend(made, WAREHOUSE, 'earthcatalog');
    try {
      assert.deepEqual(await checkTable(backend, request(made), WAREHOUSE), { tableExists: true });
    } finally {
      await backend.close();
    }
    const result = await rebuildWith(made);
    assert.equal(result.createdTable, false, 'the summary must not send the operator to check --table');
    const after = await located();
    assert.equal(after.metadataLocation, result.metadataLocation);
    assert.equal(after.warehouseLocation, before.warehouseLocation, 'the same table');
  });

  it('the pre-flight check refuses a table bucket that does not exist (a mistyped ARN), naming it, before any bucket is compacted', async () => {
    const typo = arn.replace(/bucket\/ec-tables$/, 'bucket/ec-tabels');
    assert.notEqual(typo, arn);
    const backend = await openCatalogBackend(typo, WAREHOUSE, 'earthcatalog');
    try {
      await assert.rejects(checkTable(backend, request(typo), WAREHOUSE), (err: unknown) => {
        assert.ok(err instanceof StorageError && err.kind === 'not-found', String(err));
        assert.equal(err.message, `table bucket ${typo} does not exist`);
        return true;
      });
    } finally {
      await backend.close();
    }
  });

  it('a namespace or table name S3 Tables does not allow is refused before any request, saying the rule, as non-retryable input', async () => {
    const backend = await openCatalogBackend(arn, WAREHOUSE, 'earthcatalog');
    try {
      for (const [namespace, table] of [['EarthCatalog', 'stac_items'], ['earthcatalog', '_stac_items'], ['aws_catalog', 'stac_items']]) {
        for (const attempt of [checkTable(backend, { ...request(arn), namespace, table }, WAREHOUSE), rebuildCatalog(store, backend, { ...request(arn), namespace, table })]) {
          await assert.rejects(attempt, (err: unknown) => {
            assert.ok(err instanceof CatalogRequestError, String(err));
            assert.match(err.message, /is not allowed in S3 Tables .*: 1 to 255 lowercase letters, digits and underscores, beginning and ending with a letter or digit/);
            assert.ok(err.message.includes(namespace === 'earthcatalog' ? `table name "${table}"` : `namespace "${namespace}"`), err.message);
            const failure = toActivityFailure(err);
            assert.ok(failure instanceof ApplicationFailure && failure.nonRetryable && failure.type === 'InvalidInput', String(failure));
            return true;
          });
        }
      }
    } finally {
      await backend.close();
    }
    assert.deepEqual((await tables.send(new ListNamespacesCommand({ tableBucketARN: arn }))).namespaces, [], 'nothing created');
  });

  it('creates namespace and table, writes metadata under the warehouse location, one snapshot of every file', async () => {
    const result = await rebuildWith(arn);
    assert.equal(result.createdTable, true);
    const now = await pointer();
    assert.equal(now.metadataLocation, result.metadataLocation);
    assert.ok(result.metadataLocation.startsWith(`${now.warehouseLocation}/metadata/`), result.metadataLocation);
    const scan = await pyiceberg(['scan-metadata', '--metadata', result.metadataLocation, '--ids']);
    assertWholeWarehouse(scan);
    // The data files stay in the general-purpose warehouse bucket; the table bucket holds the metadata.
    assert.ok(scan.files.every((f) => f.path.startsWith(`${WAREHOUSE}/`)));
  });

  it('a rebuild swaps the pointer with the version token and keeps exactly one snapshot', async () => {
    const before = await pointer();
    const result = await rebuildWith(arn);
    assert.equal(result.createdTable, false);
    const backend = await openCatalogBackend(arn, WAREHOUSE, 'earthcatalog');
    try {
      assert.deepEqual(await checkTable(backend, request(arn), WAREHOUSE), { tableExists: true });
    } finally {
      await backend.close();
    }
    const now = await pointer();
    assert.equal(now.metadataLocation, result.metadataLocation);
    assert.notEqual(now.versionToken, before.versionToken);
    // S3 Tables removes unreferenced files itself (its table maintenance); the rebuild leaves them to it.
    assert.equal(result.metadataFilesDeleted, 0);
    assert.match(result.metadataCleanupNote ?? '', /removes unreferenced files itself/);
    const scan = await pyiceberg(['scan-metadata', '--metadata', result.metadataLocation, '--files-only']);
    assert.equal(scan.snapshot_count, 1);
    assert.equal(scan.file_count, dataFiles.length);
  });

  it('a stale version token is a CatalogConflictError and the newer pointer stays', async () => {
    const slow = await S3TablesCatalogBackend.open(arn);
    try {
      const handle = await slow.openTable('earthcatalog', 'stac_items');
      const theirs = await rebuildWith(arn);
      const location = `${handle.metadataDir}/99999-stale.metadata.json`;
      await slow.writeFile(location, Buffer.from('{}'));
      await assert.rejects(slow.commit('earthcatalog', 'stac_items', location, handle.pointer), (err: unknown) => {
        assert.ok(err instanceof CatalogConflictError, String(err));
        assert.match(err.message, /earthcatalog\.stac_items .*ec-tables.* changed by someone else/);
        return true;
      });
      assert.equal((await pointer()).metadataLocation, theirs.metadataLocation);
    } finally {
      await slow.close();
    }
  });

  /** A proxy that counts the pointer swaps (UpdateTableMetadataLocation) sent through it and answers them as `answer` says. */
  const swapProxy = async (answer: 'forwarded' | 'AccessDenied' | 'BadRequest') => {
    let swaps = 0;
    const proxy = await startFaultProxy(moto.endpoint, {
      denyCode: answer === 'BadRequest' ? 'BadRequest' : 'AccessDenied',
      deny: (r) => {
        const hit = r.method === 'PUT' && r.bucket === 'tables' && r.key.endsWith('/metadata-location');
        if (hit) swaps++;
        return hit && answer !== 'forwarded';
      },
    });
    return { proxy, swaps: () => swaps };
  };

  const proveCommitThrough = async (endpoint: string) => {
    const backend = await S3TablesCatalogBackend.open(arn, { clientSettings: { endpoint } });
    try {
      await backend.assertWritable('earthcatalog', 'stac_items');
    } finally {
      await backend.close();
    }
  };

  it('the pre-flight proves the commit is allowed by a swap S3 Tables refuses as stale: pointer and version token stay as they were', async () => {
    const before = await pointer();
    assert.ok(before.metadataLocation && before.versionToken);
    const { proxy, swaps } = await swapProxy('forwarded');
    try {
      await proveCommitThrough(proxy.endpoint);
    } finally {
      await proxy.stop();
    }
    assert.equal(swaps(), 1, 'the proof sent one UpdateTableMetadataLocation');
    const after = await pointer();
    assert.equal(after.metadataLocation, before.metadataLocation);
    assert.equal(after.versionToken, before.versionToken, 'the proof committed nothing (a swap on the real token would have changed it)');
    assert.equal((await rebuildWith(arn)).createdTable, false, 'the commit that follows still matches');
  });

  it('a stale token refused as malformed (BadRequestException) rather than as stale proves nothing but fails no run; nothing is changed', async () => {
    const before = await pointer();
    const { proxy, swaps } = await swapProxy('BadRequest');
    try {
      await proveCommitThrough(proxy.endpoint);
    } finally {
      await proxy.stop();
    }
    assert.equal(swaps(), 1);
    const after = await pointer();
    assert.deepEqual([after.metadataLocation, after.versionToken], [before.metadataLocation, before.versionToken]);
  });

  it("a role without UpdateTableMetadataLocation fails the run's pre-flight as denied, naming the table; nothing is changed", async () => {
    const before = await pointer();
    const { proxy, swaps } = await swapProxy('AccessDenied');
    const activities = createActivities({ scratchDir: await makeTempDir('ec-s3tables-preflight'), memoryBudgetMb: 256, duckdbThreads: 1 });
    // Only the S3 Tables API goes through the proxy, as a worker's environment would point it.
    process.env.AWS_ENDPOINT_URL_S3TABLES = proxy.endpoint;
    try {
      await assert.rejects(new MockActivityEnvironment().run(activities.checkCatalog, request(arn)), (err: unknown) => {
        assert.ok(err instanceof ApplicationFailure && err.nonRetryable && err.type === 'StorageAccessDenied', String(err));
        assert.ok(err.message.startsWith(`table earthcatalog.stac_items in ${arn} cannot be committed (`), err.message);
        assert.match(err.message, /nothing was changed\. Give the worker s3tables:UpdateTableMetadataLocation on it$/);
        return true;
      });
    } finally {
      delete process.env.AWS_ENDPOINT_URL_S3TABLES;
      await proxy.stop();
    }
    assert.equal(swaps(), 1);
    const after = await pointer();
    assert.deepEqual([after.metadataLocation, after.versionToken], [before.metadataLocation, before.versionToken]);
  });

  it('a reader polling during rebuilds always finds the table and an existing metadata file', async () => {
    let polling = true;
    const seen = new Set<string>();
    let polls = 0;
    const poller = (async () => {
      while (polling) {
        const p = await pointer();
        assert.ok(p.metadataLocation, 'the table always has metadata');
        assert.ok(await objectBytes(p.metadataLocation!), `metadata ${p.metadataLocation} exists`);
        seen.add(p.metadataLocation!);
        polls++;
      }
    })();
    try {
      await rebuildWith(arn);
      await rebuildWith(arn);
    } finally {
      polling = false;
      await poller;
    }
    assert.ok(polls > 2 && seen.size >= 2, `the reader saw the swaps (${polls} polls, ${seen.size} locations)`);
  });
});

/**
 * The whole compaction on Temporal over S3, the worker in its own process reaching S3 through the
 * fault proxy: transient faults are retried and the result is exact; one input denied (403
 * InvalidAccessKeyId, whose S3 error body names the key id) fails its bucket only, naming the object,
 * with none of its files deleted; and neither the workflow histories nor the worker's logs contain
 * the access key id or the secret.
 */
describe('compactWarehouse on S3 through injected faults (Temporal, worker process)', () => {
  const E2E_BUCKET = 'ec-e2e-test';
  const warehouse = `s3://${E2E_BUCKET}/wh`;
  const catalog = `s3://${E2E_BUCKET}/catalogs/catalog.db`;
  let h: TemporalHarness;
  let worker: WorkerProcess;
  let proxy: FaultProxy;
  let local: string;
  let initial: Map<string, string[]>;
  let deniedBucket: string;
  let deniedKey: string;
  let summary: CompactionSummary;
  /** Rows each bucket must hold after the run (the oracle for compacted ones, the raw rows for the failed one). */
  const expectedRows = new Map<string, number>();
  const workflowId = `s3-e2e-${Date.now()}`;

  before(async () => {
    await moto.createBucket(E2E_BUCKET);
    local = path.join(scratch, 'e2e-generated');
    await generateSampleWarehouse(local, { cells: ['81283ffffffffff', '8128bffffffffff'], years: [2020, 2021], partsPerBucket: [2, 3], rowsPerPart: 25, seed: 9, schemaDrift: true });
    initial = byBucket(await uploadDirectory(moto.client, E2E_BUCKET, 'wh', local));
    [deniedBucket] = [...initial.keys()].sort();
    deniedKey = initial.get(deniedBucket!)![0]!;
    // The Python pipeline's lock object where it keeps it by default (its store on the bucket, key `.lock`),
    // left stale by a crashed ingest 13 hours ago: the run takes it over and releases it.
    const acquired = new Date(Date.now() - 13 * 3600_000).toISOString().replace(/Z$/, '+00:00');
    const staleLock = JSON.stringify({ owner: 'incremental', pid: 7, hostname: 'py-host', acquired, ttl_hours: 12 });
    await moto.client.send(new PutObjectCommand({ Bucket: E2E_BUCKET, Key: '.lock', Body: staleLock }));
    proxy = await startFaultProxy(
      moto.endpoint,
      {
        rates: { error500: 0.05, slowDown503: 0.05, reset: 0.04, midBodyReset: 0.1, uploadReset: 0.05, stall: 0.01 },
        stallMs: 2000,
        maxConsecutive: 2,
        maxFaults: 80,
        // A download of this one input is refused for good; footer reads (ranged) still work. The
        // InvalidAccessKeyId body names the caller's key id, as AWS does: it must not reach history or logs.
        deny: (r) => r.method === 'GET' && !r.headers.range && r.key === `wh/${deniedKey}`,
        denyCode: 'InvalidAccessKeyId',
      },
      3,
    );
    h = await startTemporal();
    const taskQueue = uniqueTaskQueue('s3-e2e');
    worker = spawnWorkerProcess(h, taskQueue, { ...moto.env, AWS_ENDPOINT_URL: proxy.endpoint }, ['--max-concurrent-buckets', '2']);
    const input: CompactionInput = { warehouse, catalog, useLock: true };
    summary = (await h.client.workflow.execute('compactWarehouse', { taskQueue, workflowId, args: [input] })) as CompactionSummary;
  });

  after(async () => {
    await worker?.stop();
    await h?.stop();
    await proxy?.stop();
  });

  it('compacts every other bucket exactly (oracle), fails the denied one naming the object, deletes none of its files', async () => {
    const others = [...initial.keys()].filter((b) => b !== deniedBucket);
    assert.equal(summary.failedBucketsTotal, 1, JSON.stringify(summary.failedBuckets));
    const failure = summary.failedBuckets[0]!;
    assert.equal(failure.bucket, deniedBucket);
    assert.equal(failure.type, 'StorageAccessDenied');
    assert.ok(failure.reason.includes(`${warehouse}/${deniedKey}`), failure.reason);
    assert.equal(summary.bucketsCompacted, others.length);

    const after = byBucket(await listKeys(moto.client, E2E_BUCKET, 'wh'));
    assert.deepEqual(after.get(deniedBucket), initial.get(deniedBucket), 'no file of the failed bucket was deleted');
    expectedRows.set(deniedBucket, 25 * initial.get(deniedBucket)!.length);
    const check = await openWarehouseStore(warehouse);
    try {
      for (const b of others) {
        assert.deepEqual(after.get(b), [`${b}/compacted_${summary.planId}.parquet`]);
        const expected = await expectedBucketRows(initial.get(b)!.map((k) => path.join(local, k)));
        expectedRows.set(b, expected.length);
        const out = await check.materialize(`${b}/compacted_${summary.planId}.parquet`, path.join(scratch, 'e2e-check'));
        assertSameRows(await readOutputRows(out), expected, b);
      }
    } finally {
      await check.close();
    }
    const raw = await listKeys(moto.client, E2E_BUCKET, 'wh');
    assert.deepEqual(raw.filter((k) => !k.endsWith('.parquet') && !k.startsWith('_earthcatalog_compaction/') && !k.startsWith('earthcatalog/')), [], 'no temporary objects');
    assert.ok(!(await listKeys(moto.client, E2E_BUCKET, '')).includes('.lock'), 'the pipeline lock object was released');
    assert.match(worker.output(), new RegExp(`took over pipeline lock s3://${E2E_BUCKET}/\\.lock from incremental on py-host: expired at`));
    // And in the run's summary, which the CLI prints: the Python tool warned of a stale lock it overrode.
    assert.match(summary.pipelineLock ?? '', new RegExp(`^took over pipeline lock s3://${E2E_BUCKET}/\\.lock from incremental on py-host: expired at \\S+$`));
  });

  it('went through injected faults', () => {
    const { injected } = proxy.stats();
    const transient = injected.error500 + injected.slowDown503 + injected.reset + injected.midBodyReset + injected.uploadReset + injected.stall;
    assert.ok(transient > 5, JSON.stringify(injected));
    assert.ok(injected.denied >= 1);
  });

  it('catalog.db in S3 holds one snapshot of every surviving file; pyiceberg scans exactly the rows', async () => {
    const after = byBucket(await listKeys(moto.client, E2E_BUCKET, 'wh'));
    const files = [...after.values()].flat();
    const local = path.join(scratch, 'e2e-catalog.db');
    await fs.writeFile(local, (await objectBytes(catalog))!);
    const scan = await pyiceberg(['scan', '--catalog', local]);
    assert.equal(scan.error, undefined, scan.error);
    assert.equal(scan.snapshot_count, 1);
    assert.equal(expectedRows.size, initial.size);
    assert.equal(scan.row_count, [...expectedRows.values()].reduce((a, b) => a + b, 0));
    assert.deepEqual(scan.files.map((f) => f.path).sort(), files.map((k) => `${warehouse}/${k}`).sort());
    assert.equal(summary.catalogDataFiles, files.length);
  });

  it('no access key id or secret in the workflow histories or the worker output', async () => {
    const ids = [workflowId, lockWorkflowId('warehouse', warehouse), lockWorkflowId('catalog', catalog)];
    let checked = 0;
    for (const id of ids) {
      const text = historyText(historyToJSON(await h.client.workflow.getHandle(id).fetchHistory()));
      assert.ok(text.length > 0);
      assert.ok(!text.includes(moto.accessKeyId), `history of ${id} holds the access key id`);
      assert.ok(!text.includes(moto.secretAccessKey), `history of ${id} holds the secret`);
      checked++;
    }
    assert.equal(checked, 3);
    const main = historyText(historyToJSON(await h.client.workflow.getHandle(workflowId).fetchHistory()));
    assert.ok(main.includes(deniedKey), 'the decoded history carries the failure (the search looked at real content)');
    const output = worker.output();
    assert.ok(output.includes(deniedKey), 'the worker logged the denied download (the search looked at an error path)');
    assert.ok(!output.includes(moto.accessKeyId) && !output.includes(moto.secretAccessKey), 'worker output holds a credential');
  });
});

/** A history as text with every base64 payload also decoded, so a credential inside a payload shows. */
function historyText(json: string): string {
  const parts: string[] = [json];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      if (v.length >= 8 && /^[A-Za-z0-9+/]+={0,2}$/.test(v)) parts.push(Buffer.from(v, 'base64').toString('utf8'));
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(JSON.parse(json));
  return parts.join('\n');
}

/**
 * Cancelling a run while one of its bucket attempts waits on a download that stalls (headers, then no
 * byte for ten minutes): the attempt stops as soon as the cancellation reaches it (its next heartbeat),
 * long before the S3 client's 60 s idle timeout would have given up and sent the request again.
 */
describe('cancelling a run while a bucket download stalls (Temporal, worker process)', () => {
  const CANCEL_BUCKET = 'ec-cancel-test';
  const warehouse = `s3://${CANCEL_BUCKET}/wh`;
  let h: TemporalHarness;
  let worker: WorkerProcess;
  let proxy: FaultProxy;
  let initial: string[];

  before(async () => {
    await moto.createBucket(CANCEL_BUCKET);
    const local = path.join(scratch, 'cancel-generated');
    await generateSampleWarehouse(local, { cells: ['81283ffffffffff'], years: [2020], partsPerBucket: [3, 3], rowsPerPart: 20, seed: 11 });
    initial = (await uploadDirectory(moto.client, CANCEL_BUCKET, 'wh', local)).sort();
    // Whole-object GETs of data files are the bucket's downloads; the rebuild's footer reads are ranged.
    proxy = await startFaultProxy(moto.endpoint, {
      rates: { stall: 1 },
      stallMs: 600_000,
      maxConsecutive: 1_000,
      eligible: (r) => r.method === 'GET' && !r.headers.range && r.key.endsWith('.parquet'),
    });
    h = await startTemporal();
  });

  after(async () => {
    await worker?.stop();
    await h?.stop();
    await proxy?.stop();
  });

  it('the attempt stops within a heartbeat, the run ends cancelled, nothing is deleted and the request is not sent again', { timeout: 120_000 }, async () => {
    const taskQueue = uniqueTaskQueue('s3-cancel');
    worker = spawnWorkerProcess(h, taskQueue, { ...moto.env, AWS_ENDPOINT_URL: proxy.endpoint });
    const input: CompactionInput = { warehouse, catalog: path.join(scratch, 'cancel-catalog.db') };
    const handle = await h.client.workflow.start('compactWarehouse', { taskQueue, workflowId: `s3-cancel-${Date.now()}`, args: [input] });
    await waitFor('a bucket download to stall', async () => (proxy.stats().injected.stall >= 1 ? true : undefined));
    await handle.cancel();
    await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure);

    const events = (await handle.fetchHistory()).events ?? [];
    assert.equal(events.filter((e) => e.activityTaskCanceledEventAttributes).length, 1, 'the bucket attempt ended as cancelled');
    assert.equal(proxy.stats().injected.stall, 1, 'the stalled download was not sent again (stopped before the idle timeout)');
    assert.deepEqual((await listKeys(moto.client, CANCEL_BUCKET, 'wh')).filter((k) => k.endsWith('.parquet')).sort(), initial, 'every input kept, no output');
  });
});

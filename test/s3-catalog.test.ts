/**
 * The catalog rebuild over an S3 warehouse, against a real S3 / S3 Tables API server (moto):
 * - catalog.db kept in S3: downloaded, rebuilt, uploaded with a conditional write; pyiceberg loads
 *   the table from it and scans exactly the warehouse's rows; a concurrent change is a conflict and
 *   is never overwritten; a corrupt catalog.db is refused and left alone.
 * - a local catalog.db over the S3 warehouse (metadata files in S3).
 * - S3 Tables: namespace and table created when absent, metadata under the warehouse location,
 *   exactly one snapshot, a stale version token is a conflict, readers always find the table.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { CreateTableBucketCommand, GetTableMetadataLocationCommand, S3TablesClient } from '@aws-sdk/client-s3tables';
import type { CatalogRequest } from '../workflows/contract';
import { openWarehouseStore } from '../activities/storage/open-store';
import type { WarehouseStore } from '../activities/storage/warehouse-store';
import { openCatalogBackend } from '../activities/catalog/open-catalog';
import { rebuildCatalog } from '../activities/catalog/rebuild-catalog';
import { CatalogConflictError, CatalogCorruptError } from '../activities/catalog/catalog-backend';
import { S3CatalogDbBackend } from '../activities/catalog/s3-catalog-db';
import { S3TablesCatalogBackend } from '../activities/catalog/s3tables-catalog';
import { generateSampleWarehouse } from '../client/demo/sample-warehouse';
import { startMoto, uploadDirectory, type MotoServer } from './helpers/moto-server';
import { REPO_ROOT } from './helpers/temporal';
import type { IcebergScan } from './helpers/warehouse-fixtures';

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
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'ec-s3-catalog-'));
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
  if (scratch) await fs.rm(scratch, { recursive: true, force: true });
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
  const python = process.env.EARTHCATALOG_PYTHON ?? 'python3';
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

describe('a local catalog.db over the S3 warehouse', () => {
  it('writes metadata into the S3 warehouse; pyiceberg scans every row', async () => {
    const local = path.join(scratch, 'local-catalog', 'catalog.db');
    const result = await rebuildWith(local);
    assert.ok(result.metadataLocation.startsWith(`${WAREHOUSE}/earthcatalog/stac_items/metadata/`));
    assertWholeWarehouse(await pyiceberg(['scan', '--catalog', local, '--ids']));
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
    const now = await pointer();
    assert.equal(now.metadataLocation, result.metadataLocation);
    assert.notEqual(now.versionToken, before.versionToken);
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

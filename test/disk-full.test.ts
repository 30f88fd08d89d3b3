/**
 * A full disk under the warehouse, the catalog, the scratch directory and the output, caused for real: each case mounts a small
 * tmpfs and fills it. Mounting needs root (CAP_SYS_ADMIN); without it the cases are skipped, saying so.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { generateSampleWarehouse } from '../client/demo/sample-warehouse';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { StorageError } from '../activities/storage/warehouse-store';
import { createActivities } from '../activities';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { FailureTypes } from '../workflows/contract';
import { appendParquetFiles } from '../activities/compaction/parquet-append';
import { claimWorkerScratch } from '../activities/compaction/worker-scratch';
import { compactBucket } from '../activities/compaction/compact-bucket';
import { isOutOfMemory, openDuckSession } from '../activities/compaction/duckdb-session';
import { CatalogCommitNotAppliedError } from '../activities/catalog/catalog-backend';
import { SqliteCatalogBackend } from '../activities/catalog/sqlite-catalog';
import { rebuildCatalog } from '../activities/catalog/rebuild-catalog';
import type { CatalogRequest } from '../workflows/contract';
import { makeTempDir } from './helpers/temp-dirs';
import { relativeFiles } from './helpers/files';

const mounted: string[] = [];

/** A tmpfs of `sizeMb` at a new directory, or undefined when this process may not mount one. */
async function smallDisk(sizeMb: number): Promise<string | undefined> {
  const dir = await makeTempDir('disk-full');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch {
    return undefined;
  }
  mounted.push(dir);
  return dir;
}

/** Writes a filler file into `dir` until its filesystem is full. */
async function fill(dir: string): Promise<string> {
  const filler = path.join(dir, 'filler');
  const handle = await fs.open(filler, 'w');
  const block = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) await handle.write(block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await handle.close();
  }
  return filler;
}

const STAGING = /\.staging$/;

let canMount = false;
before(async () => {
  const probe = await smallDisk(1);
  canMount = probe !== undefined;
});

after(() => {
  for (const dir of mounted) execFileSync('umount', [dir], { stdio: 'pipe' });
});

function skipUnlessRoot(t: { skip: (why: string) => void }): boolean {
  if (canMount) return false;
  t.skip('mounting a tmpfs needs root; a full disk cannot be caused otherwise');
  return true;
}

describe('a full disk under the warehouse', () => {
  test('a plan or lock object that cannot be written names its key and leaves no staging file', async (t) => {
    if (skipUnlessRoot(t)) return;
    const disk = (await smallDisk(1))!;
    const store = new LocalWarehouseStore(disk);
    await fs.mkdir(path.join(disk, '_lock'));
    await fill(disk);
    await assert.rejects(store.writeSmall('_lock/compaction.lock', Buffer.alloc(256 * 1024, 7), null), (err: Error) => {
      assert.match(err.message, /cannot write .*_lock\/compaction\.lock: ENOSPC/);
      return true;
    });
    assert.deepEqual((await relativeFiles(disk)).filter((f) => STAGING.test(f)), [], 'no staging file left');
  });

  test('an output published across filesystems that does not fit names its target and leaves no staging copy', async (t) => {
    if (skipUnlessRoot(t)) return;
    const disk = (await smallDisk(1))!;
    const store = new LocalWarehouseStore(disk);
    // On another filesystem than the warehouse: publishing copies it next to the target first.
    const local = path.join(await makeTempDir('disk-full-out'), 'compacted.parquet');
    await fs.writeFile(local, Buffer.alloc(2 * 1024 * 1024, 3));
    await assert.rejects(store.publishIfAbsent(local, 'grid_partition=a/year=2020/compacted_x.parquet'), (err: Error) => {
      assert.match(err.message, /cannot copy .* to .*grid_partition=a\/year=2020\/compacted_x\.parquet: ENOSPC/);
      return true;
    });
    assert.deepEqual((await relativeFiles(disk)).filter((f) => STAGING.test(f) || f.endsWith('.parquet')), [], 'neither a staging copy nor a partial output');
    assert.ok(await fs.stat(local), 'the local output is kept for the next attempt');
  });

  test("an appended output that does not fit names the file (the system's message names none)", async (t) => {
    if (skipUnlessRoot(t)) return;
    const disk = (await smallDisk(1))!;
    const inputs = await makeTempDir('disk-full-in');
    await generateSampleWarehouse(inputs, { cells: ['a'], years: [2020], partsPerBucket: [1, 1], rowsPerPart: 4_000 });
    const [part] = (await relativeFiles(inputs)).filter((f) => f.endsWith('.parquet'));
    const source = path.join(inputs, part!);
    assert.ok((await fs.stat(source)).size > 256 * 1024, 'the input is larger than the space left');
    await fs.writeFile(path.join(disk, 'filler'), Buffer.alloc(900 * 1024));
    const out = path.join(disk, 'appended.parquet');
    await assert.rejects(appendParquetFiles([source], out, []), (err: Error) => {
      assert.equal(err.message.startsWith(`cannot write ${out}: ENOSPC`), true, err.message);
      return true;
    });
  });
});

test('a worker that cannot claim a full scratch directory names it and leaves no claim behind', async (t) => {
  if (skipUnlessRoot(t)) return;
  const disk = (await smallDisk(1))!;
  await fill(disk);
  await assert.rejects(claimWorkerScratch(disk), (err: Error) => {
    assert.match(err.message, new RegExp(`^scratch directory ${disk} cannot be used: ENOSPC`));
    return true;
  });
  assert.deepEqual(await fs.readdir(disk), ['filler'], 'nothing but the filler, not even an empty claim directory');
});

test("DuckDB's spill into a nearly full scratch directory fails as the disk's error, not as out of memory, and the same session spills once there is room", async (t) => {
  if (skipUnlessRoot(t)) return;
  const disk = (await smallDisk(64))!;
  const filler = await fill(disk);
  // Room for a little spill: DuckDB's own cap (90 % of it, frozen when it first spilled) stayed after space was freed.
  await fs.truncate(filler, (await fs.stat(filler)).size - 2 * 1024 * 1024);
  const session = await openDuckSession({ tempDir: path.join(disk, 'spill'), memoryLimitMb: 64, threads: 1 });
  try {
    const sort = "SELECT count(*) AS n FROM (SELECT repeat('x', 100) || i::VARCHAR AS s FROM range(1000000) r(i) ORDER BY s DESC)";
    await assert.rejects(session.rows(sort), (err: Error) => {
      assert.equal(isOutOfMemory(err), false, err.message);
      assert.match(err.message, new RegExp(`^IO Error: Could not write file "${disk}/spill/[^"]+": No space left on device`));
      return true;
    });
    await fs.rm(filler);
    assert.equal((await session.rows(sort))[0]!.n, 1000000n, 'the same session spills into the space freed');
  } finally {
    session.close();
  }
});

test('a warehouse on a read-only filesystem refuses a plan or an output as denied (not retried), naming the folder, not as a missing folder', async (t) => {
  if (skipUnlessRoot(t)) return;
  const disk = (await smallDisk(1))!;
  execFileSync('mount', ['-o', 'remount,ro', disk], { stdio: 'pipe' });
  const store = new LocalWarehouseStore(disk);
  await assert.rejects(store.writeSmall('_earthcatalog_compaction/plans/p/manifest.json', Buffer.from('{}'), null), (err: Error) => {
    assert.ok(err instanceof StorageError && err.kind === 'denied', String(err));
    assert.match(err.message, new RegExp(`^cannot create the folder of ${disk}/_earthcatalog_compaction/plans/p/manifest\\.json: EROFS`));
    return true;
  });
  const local = path.join(await makeTempDir('disk-ro-out'), 'compacted.parquet');
  await fs.writeFile(local, 'x');
  await assert.rejects(store.publishIfAbsent(local, 'grid_partition=a/year=2020/compacted_p.parquet'), (err: Error) => err instanceof StorageError && err.kind === 'denied' && /EROFS/.test(err.message));
});

test('a bucket folder on a read-only filesystem fails its bucket as denied at the output write (DuckDB or the append), naming the folder, inputs intact', async (t) => {
  if (skipUnlessRoot(t)) return;
  const disk = (await smallDisk(8))!;
  await generateSampleWarehouse(disk, { cells: ['a'], years: [2020], partsPerBucket: [2, 2], rowsPerPart: 500 });
  const store = new LocalWarehouseStore(disk);
  const inputs = [];
  for await (const o of store.list('grid_partition=a/year=2020/')) inputs.push({ key: o.key, size: o.size });
  execFileSync('mount', ['-o', 'remount,ro', disk], { stdio: 'pipe' });
  const before = await relativeFiles(disk);
  const folder = path.join(disk, 'grid_partition=a', 'year=2020');
  // One COPY by DuckDB (a small bucket), and the out-of-core path whose output Node appends from sorted chunks.
  for (const path_ of [{}, { smallBucketBytes: 0, sortBudgetBytes: 1 }]) {
    await assert.rejects(
      compactBucket(store, { warehouse: disk, planId: 'ro1', bucket: { cell: 'a', year: 2020 }, inputs }, {
        scratchDir: await makeTempDir('disk-ro-bucket-scratch'),
        memoryLimitMb: 256,
        threads: 1,
        heartbeat: () => undefined,
        ...path_,
      }),
      (err: Error) => {
        assert.ok(err instanceof StorageError && err.kind === 'denied', String(err));
        assert.ok(err.message.startsWith(`bucket grid_partition=a/year=2020: cannot write its output in ${folder}: `), err.message);
        return true;
      },
    );
  }
  assert.deepEqual(await relativeFiles(disk), before, 'nothing written or deleted');
});

test('a catalog.db to be created on a read-only filesystem fails the pre-flight as denied, before any bucket, not the rebuild after every bucket', async (t) => {
  if (skipUnlessRoot(t)) return;
  const disk = (await smallDisk(1))!;
  execFileSync('mount', ['-o', 'remount,ro', disk], { stdio: 'pipe' });
  const activities = createActivities({ scratchDir: await makeTempDir('disk-ro-cat-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 });
  const warehouse = await makeTempDir('disk-ro-cat-wh');
  const req = { warehouse, namespace: 'earthcatalog', table: 'stac_items', catalogName: 'earthcatalog' };
  await assert.rejects(new MockActivityEnvironment().run(activities.checkCatalog, { ...req, catalog: path.join(disk, 'sub', 'catalog.db') }), (err: Error) => {
    assert.ok(err instanceof ApplicationFailure && err.nonRetryable && err.type === FailureTypes.storageDenied, String(err));
    assert.equal(err.message, `catalog ${disk}/sub/catalog.db cannot be created: ${disk} is not writable (EROFS)`);
    return true;
  });
  const writable = path.join(await makeTempDir('disk-rw-cat'), 'sub', 'catalog.db');
  assert.deepEqual(await new MockActivityEnvironment().run(activities.checkCatalog, { ...req, catalog: writable }), { tableExists: false });
  await assert.rejects(fs.access(path.dirname(writable)), 'nothing created to find out');
});

test("every command runs with a read-only temp folder (a container's read-only root): tsx's compile cache is left off", async (t) => {
  if (skipUnlessRoot(t)) return;
  const disk = (await smallDisk(1))!;
  execFileSync('mount', ['-o', 'remount,ro', disk], { stdio: 'pipe' });
  const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'bin', 'earthcatalog-compact'), '--help'], { env: { ...process.env, TMPDIR: disk }, encoding: 'utf8' });
  assert.match(out, /^usage: earthcatalog-compact --warehouse W --catalog C/);
});

test('a worker whose scratch directory is on a read-only filesystem says so, not that the directory does not exist', async (t) => {
  if (skipUnlessRoot(t)) return;
  const disk = (await smallDisk(1))!;
  execFileSync('mount', ['-o', 'remount,ro', disk], { stdio: 'pipe' });
  await assert.rejects(claimWorkerScratch(disk), (err: Error) => {
    assert.match(err.message, new RegExp(`^scratch directory ${disk} cannot be used: EROFS`));
    return true;
  });
});

describe('a full disk under catalog.db', () => {
  let warehouse: string;
  let catalogDb: string;
  let filler: string;
  let backend: SqliteCatalogBackend;
  let request: CatalogRequest;

  before(async () => {
    if (!canMount) return;
    warehouse = await makeTempDir('disk-full-wh');
    await generateSampleWarehouse(warehouse, { cells: ['a', 'b'], years: [2020], partsPerBucket: [1, 2], rowsPerPart: 20 });
    catalogDb = path.join((await smallDisk(2))!, 'catalog.db');
    request = { warehouse, catalog: catalogDb, namespace: 'earthcatalog', table: 'stac_items', catalogName: 'earthcatalog' };
    backend = new SqliteCatalogBackend({ catalogDbPath: catalogDb, catalogName: 'earthcatalog', warehouseRootUri: warehouse });
    await rebuildCatalog(new LocalWarehouseStore(warehouse), backend, request);
    filler = await fill(path.dirname(catalogDb));
  });

  after(async () => backend?.close());

  test("the pre-flight names the catalog and says to free space", async (t) => {
    if (skipUnlessRoot(t)) return;
    await assert.rejects(backend.assertWritable(), (err: Error) => {
      assert.match(err.message, new RegExp(`catalog ${catalogDb} cannot be written \\(.*full.*\\): free space`));
      return true;
    });
  });

  test('a commit that fails leaves the pointer where it was and removes every file the attempt wrote', async (t) => {
    if (skipUnlessRoot(t)) return;
    const metadataDir = path.join(warehouse, 'earthcatalog', 'stac_items', 'metadata');
    const before = (await relativeFiles(metadataDir)).sort();
    const pointer = await backend.findTable('earthcatalog', 'stac_items');
    await assert.rejects(rebuildCatalog(new LocalWarehouseStore(warehouse), backend, request), (err: Error) => {
      assert.ok(err instanceof CatalogCommitNotAppliedError, `${err.name}: ${err.message}`);
      assert.match(err.message, new RegExp(`cannot commit earthcatalog\\.stac_items in SQLite catalog ${catalogDb}.*full.*still points at ${pointer!.metadataLocation}`));
      return true;
    });
    assert.deepEqual(await backend.findTable('earthcatalog', 'stac_items'), pointer, 'the pointer did not move');
    assert.deepEqual((await relativeFiles(metadataDir)).sort(), before, 'no metadata file, manifest or manifest list of the failed attempt is left');

    await fs.rm(filler);
    const result = await rebuildCatalog(new LocalWarehouseStore(warehouse), backend, request);
    assert.notEqual((await backend.findTable('earthcatalog', 'stac_items'))?.metadataLocation, pointer!.metadataLocation);
    assert.equal(result.metadataLocation, (await backend.findTable('earthcatalog', 'stac_items'))?.metadataLocation, 'once there is room, the rebuild commits');
  });
});

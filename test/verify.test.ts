/**
 * `verify` after a real compaction (the bucket and catalog activities' functions on a generated
 * warehouse): clean first, then one kind of damage at a time, each repaired before the next.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { createPrng, generateSampleWarehouse, makeSampleRow, writePartFile } from '../client/demo/sample-warehouse';
import { compactBucket } from '../activities/compaction/compact-bucket';
import { openDuckSession, sqlString } from '../activities/compaction/duckdb-session';
import { rebuildCatalog } from '../activities/catalog/rebuild-catalog';
import { defaultSchema } from '../activities/catalog/iceberg-schema';
import { openCatalogBackend } from '../activities/catalog/open-catalog';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { bucketBatches, verifyWarehouse, ViolationKinds, type VerifyReport } from '../activities/verification/verify-warehouse';
import { groupByBucket, listPhysicalDataFiles } from '../activities/verification/warehouse-files';
import { DEFAULT_CATALOG_NAME, DEFAULT_NAMESPACE, DEFAULT_TABLE } from '../workflows/contract';
import { pythonExecutable } from '../client/temporal-cli';
import { REPO_ROOT } from './helpers/temporal';
import { makeTempDir } from './helpers/temp-dirs';
import { formatVerifyReport } from '../client/commands/verify';
import { checkGeoMetadata } from '../activities/verification/parquet-checks';

const execFileP = promisify(execFile);
const CELLS = ['8128bffffffffff', '8129bffffffffff'];
const YEARS = [2021];

let dir: string;
let warehouse: string;
let catalog: string;
let store: LocalWarehouseStore;

async function compactEverything(planId: string): Promise<void> {
  const files = await listPhysicalDataFiles(store);
  for (const group of groupByBucket(files).values()) {
    if (group.length < 2) continue;
    await compactBucket(
      store,
      { warehouse, planId, bucket: group[0]!.parsed.bucket, inputs: group.map((f) => ({ key: f.key, size: f.size })) },
      { scratchDir: path.join(dir, 'scratch'), memoryLimitMb: 256, threads: 1, heartbeat: () => undefined },
    );
  }
}

async function rebuild(): Promise<void> {
  const backend = await openCatalogBackend(catalog, warehouse, DEFAULT_CATALOG_NAME);
  try {
    await rebuildCatalog(store, backend, { warehouse, catalog, namespace: DEFAULT_NAMESPACE, table: DEFAULT_TABLE, catalogName: DEFAULT_CATALOG_NAME });
  } finally {
    await backend.close();
  }
}

const verify = () => verifyWarehouse({ warehouse, catalog });

function kinds(r: VerifyReport): string[] {
  return r.violations.map((v) => `${v.kind} ${v.object}`).sort();
}

async function compactedFiles(): Promise<string[]> {
  return (await listPhysicalDataFiles(store)).filter((f) => f.compacted).map((f) => f.key);
}

/** Rewrites a Parquet file through DuckDB: `select` over `src`, optional kv metadata, to `dest`. */
async function rewrite(src: string, dest: string, select: string, kv: string | undefined, fieldIds?: string): Promise<void> {
  const session = await openDuckSession({ tempDir: path.join(dir, 'spill'), memoryLimitMb: 128, threads: 1 });
  const tmp = `${dest}.rewrite`;
  try {
    const kvClause = kv === undefined ? '' : `, KV_METADATA {geo: ${sqlString(kv)}}`;
    await session.exec(
      `COPY (${select.replace('$src', `read_parquet(${sqlString(src)}, hive_partitioning = false)`)}) TO ${sqlString(tmp)} (FORMAT parquet, COMPRESSION zstd${kvClause}${fieldIds ? `, FIELD_IDS ${fieldIds}` : ''})`,
    );
    const [geo] = await session.rows(`SELECT 1 FROM parquet_kv_metadata(${sqlString(tmp)}) WHERE key = 'geo'::BLOB`);
    assert.equal(geo !== undefined, kv !== undefined, 'the rewritten file has a geo key exactly when asked');
  } finally {
    session.close();
  }
  await fs.rename(tmp, dest);
}

/**
 * A copy of `src` whose `column` cannot be decompressed: the zstd magic number of each of its pages is
 * flipped. Footer and the other columns stay intact.
 */
async function damageColumn(src: string, dest: string, column: string): Promise<void> {
  const session = await openDuckSession({ tempDir: path.join(dir, 'spill'), memoryLimitMb: 128, threads: 1 });
  let chunks;
  try {
    chunks = await session.rows(
      `SELECT coalesce(dictionary_page_offset, data_page_offset) AS start, total_compressed_size AS size, compression
       FROM parquet_metadata(${sqlString(src)}) WHERE path_in_schema = ${sqlString(column)}`,
    );
  } finally {
    await session.close();
  }
  const bytes = await fs.readFile(src);
  const magic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
  let flipped = 0;
  for (const c of chunks) {
    assert.equal(c.compression, 'ZSTD');
    const start = Number(c.start);
    const end = start + Number(c.size);
    for (let at = bytes.indexOf(magic, start); at >= 0 && at < end; at = bytes.indexOf(magic, at + 1)) {
      bytes[at] ^= 0xff;
      flipped += 1;
    }
  }
  assert.ok(flipped > 0, `no zstd page found in column ${column} of ${src}`);
  await fs.writeFile(dest, bytes);
}

async function geoOf(file: string): Promise<string> {
  const session = await openDuckSession({ tempDir: path.join(dir, 'spill'), memoryLimitMb: 128, threads: 1 });
  try {
    const [row] = await session.rows(`SELECT value FROM parquet_kv_metadata(${sqlString(file)}) WHERE key = 'geo'::BLOB`);
    return Buffer.from(row!.value as Uint8Array).toString('utf8');
  } finally {
    session.close();
  }
}

/**
 * Rewrites the first compacted file with `select` (keeping its geo key unless told otherwise), runs
 * `check` on the damaged warehouse, then restores the file and the catalog; verify is clean again.
 */
async function withRewrittenCompactedFile(
  select: string,
  check: (key: string) => Promise<void>,
  opts: { keepGeo?: boolean; rebuildFirst?: boolean; fieldIds?: string } = {},
): Promise<void> {
  const [compacted] = await compactedFiles();
  const file = path.join(warehouse, compacted!);
  const saved = path.join(dir, 'saved.parquet');
  await fs.copyFile(file, saved);
  try {
    await rewrite(saved, file, select, opts.keepGeo === false ? undefined : await geoOf(saved), opts.fieldIds);
    if (opts.rebuildFirst) await rebuild();
    await check(compacted!);
  } finally {
    await fs.copyFile(saved, file);
    await rebuild();
  }
  assert.equal((await verify()).ok, true);
}

describe('verify', () => {
  before(async () => {
    dir = await makeTempDir('ec-verify');
    warehouse = path.join(dir, 'warehouse');
    catalog = path.join(dir, 'catalog.db');
    await fs.mkdir(warehouse, { recursive: true });
    await generateSampleWarehouse(warehouse, { cells: CELLS, years: YEARS, seed: 11, partsPerBucket: [3, 4], rowsPerPart: 40 });
    store = new LocalWarehouseStore(warehouse);
  });

  test('before compaction: the missing catalog and the duplicate ids across part files are reported', async () => {
    const r = await verify();
    assert.equal(r.ok, false);
    assert.deepEqual(
      [...new Set(r.violations.map((v) => v.kind))].sort(),
      [ViolationKinds.catalogMissing, ViolationKinds.duplicateId].sort(),
    );
    const dup = r.violations.filter((v) => v.kind === ViolationKinds.duplicateId).map((v) => v.object).sort();
    assert.deepEqual(dup, CELLS.map((c) => `grid_partition=${c}/year=2021`).sort());
    assert.match(r.violations.find((v) => v.kind === ViolationKinds.duplicateId)!.detail, /in 2 files/);
    await assert.rejects(fs.stat(catalog), 'verify does not create the catalog');
    assert.equal(r.stats.buckets, 2);
    assert.ok(r.stats.bucketsWithSeveralFiles === 2 && r.stats.catalogFiles === null);
    // One bucket per batch (an S3 warehouse is downloaded a batch at a time): the same findings.
    for (const batch of [{ batchBytes: 1 }, { batchFiles: 1 }]) {
      const byBucket = await verifyWarehouse({ warehouse, catalog, ...batch });
      assert.deepEqual(kinds(byBucket), kinds(r));
      assert.deepEqual({ ...byBucket.stats, durationMs: 0 }, { ...r.stats, durationMs: 0 });
    }
  });

  test('batches are whole buckets in order, cut before a bucket that would pass the byte or the file cap, at least one bucket each', () => {
    const f = (bucket: string, size: number) => ({ bucket, size, key: `${bucket}/${size}` });
    const files = [f('a', 5), f('a', 5), f('b', 3), f('c', 20), f('d', 1), f('d', 1)];
    const bytes = (maxBytes: number) => ({ maxBytes, maxFiles: Infinity });
    assert.deepEqual(bucketBatches(files, bytes(13)).map((b) => b.map((x) => x.key)), [['a/5', 'a/5', 'b/3'], ['c/20'], ['d/1', 'd/1']]);
    assert.deepEqual(bucketBatches(files, bytes(1)).map((b) => b.length), [2, 1, 1, 2]);
    assert.deepEqual(bucketBatches(files, bytes(Infinity)).map((b) => b.length), [6]);
    assert.deepEqual(bucketBatches([], bytes(10)), []);
    assert.deepEqual(bucketBatches(files, { maxBytes: Infinity, maxFiles: 3 }).map((b) => b.map((x) => x.key)), [['a/5', 'a/5', 'b/3'], ['c/20', 'd/1', 'd/1']]);
    assert.deepEqual(bucketBatches(files, { maxBytes: Infinity, maxFiles: 2 }).map((b) => b.map((x) => x.key)), [['a/5', 'a/5'], ['b/3', 'c/20'], ['d/1', 'd/1']]);
    assert.deepEqual(bucketBatches(files, { maxBytes: 13, maxFiles: 4 }).map((b) => b.length), [3, 1, 2]);
  });

  test('after compaction and catalog rebuild the warehouse verifies clean', async () => {
    await compactEverything('20250105T030000-verify01');
    await rebuild();
    const r = await verify();
    assert.deepEqual(r.violations, []);
    assert.equal(r.ok, true);
    assert.equal(r.stats.dataFiles, 2);
    assert.equal(r.stats.compactedFiles, 2);
    assert.equal(r.stats.bucketsWithSeveralFiles, 0);
    assert.equal(r.stats.snapshotCount, 1);
    assert.equal(r.stats.catalogFiles, 2);
    assert.equal(r.stats.catalogRows, r.stats.rows);
    assert.ok(r.stats.rows > 0);
  });

  test("verify creates nothing in the catalog: one without the catalog tables, or lacking one of them, stays byte for byte as it was; a crashed writer's journal is rolled back, as by any reader", async () => {
    const sha = async (file: string) => createHash('sha256').update(await fs.readFile(file)).digest('hex');
    const bare = path.join(dir, 'bare-catalog.db');
    const db = new Database(bare);
    db.pragma('user_version = 7');
    db.close();
    const bareSha = await sha(bare);
    const r = await verifyWarehouse({ warehouse, catalog: bare });
    assert.deepEqual(r.violations.map((v) => v.kind), [ViolationKinds.tableMissing]);
    assert.equal(await sha(bare), bareSha, 'no catalog table was created in it');

    const halfCatalog = path.join(dir, 'half-catalog.db');
    await fs.copyFile(catalog, halfCatalog);
    const half = new Database(halfCatalog);
    half.exec('DROP TABLE iceberg_namespace_properties');
    half.close();
    const halfSha = await sha(halfCatalog);
    const h = await verifyWarehouse({ warehouse, catalog: halfCatalog });
    assert.deepEqual(h.violations, [], 'its table is read as it is');
    assert.equal(await sha(halfCatalog), halfSha, 'the missing table was not re-created');

    // A writer killed mid-transaction leaves a hot journal, which SQLite rolls back on the next open:
    // verify must still read the catalog (as any reader would), not call it unreadable.
    const crashed = path.join(dir, 'crashed-catalog.db');
    await fs.copyFile(catalog, crashed);
    const writer = `
      const db = new (require(${JSON.stringify(require.resolve('better-sqlite3'))}))(${JSON.stringify(crashed)});
      db.pragma('cache_size = 1');
      db.exec('BEGIN');
      db.prepare("UPDATE iceberg_tables SET metadata_location = '/nowhere.metadata.json'").run();
      db.exec('CREATE TABLE filler (b BLOB)');
      const add = db.prepare('INSERT INTO filler VALUES (zeroblob(4096))');
      for (let i = 0; i < 500; i++) add.run();
      process.kill(process.pid, 'SIGKILL');`;
    spawnSync(process.execPath, ['-e', writer]);
    await fs.access(`${crashed}-journal`);
    const c = await verifyWarehouse({ warehouse, catalog: crashed });
    assert.deepEqual(c.violations, [], 'the crashed transaction is rolled back and the table read as it was');
    await assert.rejects(fs.access(`${crashed}-journal`), 'the hot journal was rolled back');
  });

  test('a --warehouse that is not the table\'s (one folder too high, a copy) is one warehouse-mismatch, not every file missing', async () => {
    const copy = path.join(await makeTempDir('ec-verify-copy'), 'warehouse');
    await fs.cp(warehouse, copy, { recursive: true });
    for (const other of [path.dirname(warehouse), copy]) {
      const r = await verifyWarehouse({ warehouse: other, catalog });
      assert.deepEqual(
        r.violations.filter((v) => v.kind !== ViolationKinds.notInCatalog).map((v) => v.kind),
        [ViolationKinds.warehouseMismatch],
        JSON.stringify(r.violations.slice(0, 3)),
      );
      assert.match(r.violations.find((v) => v.kind === ViolationKinds.warehouseMismatch)!.detail, /; check --warehouse \(nothing else was compared\)$/);
    }
  });

  test('a stray data file that is not in the catalog', async () => {
    const rng = createPrng(5);
    const key = `grid_partition=${CELLS[0]}/year=2021/part_99999_stray.parquet`;
    const rows = [0, 1, 2].map((i) => makeSampleRow(rng, { id: `STRAY_${i}`, cell: CELLS[0]!, year: 2021, updated: new Date() }));
    await writePartFile(path.join(warehouse, key), rows);
    try {
      const r = await verify();
      assert.deepEqual(kinds(r), [`${ViolationKinds.notInCatalog} ${key}`]);
    } finally {
      await fs.rm(path.join(warehouse, key));
    }
    assert.equal((await verify()).ok, true);
  });

  test('files that look like Parquet outside the layout (a subfolder, a bad year) are named, not violations: the compaction leaves them alone too', async () => {
    const rng = createPrng(7);
    const keys = [`grid_partition=${CELLS[0]}/year=2021/delivery/part-0.parquet`, `grid_partition=${CELLS[0]}/year=02021/part-1.parquet`];
    const hidden = `grid_partition=${CELLS[0]}/year=2021/_temporary/part-2.parquet`;
    for (const key of [...keys, hidden]) {
      await writePartFile(path.join(warehouse, key), [makeSampleRow(rng, { id: `OFF_${key.length}`, cell: CELLS[0]!, year: 2021, updated: new Date() })]);
    }
    try {
      const r = await verify();
      assert.equal(r.ok, true);
      assert.deepEqual(r.outsideLayout, [...keys].sort());
      const text = formatVerifyReport(r);
      assert.match(text, /^ {2}note: 2 file\(s\) under bucket folders look like Parquet data but are no data files of the layout .*no reader of the table sees their rows: /m);
      assert.ok(text.includes(`sees their rows: ${[...keys].sort().join(', ')}\n`), text);
      const other = await verifyWarehouse({ warehouse, catalog, cells: [CELLS[1]!] });
      assert.equal(other.outsideLayout, undefined, 'a selection names those of its cells only');
      // And of its years: a year folder of digits counts as that year (02021 as 2021), one of no digits as none.
      assert.deepEqual((await verifyWarehouse({ warehouse, catalog, years: [2021] })).outsideLayout, [...keys].sort());
      assert.equal((await verifyWarehouse({ warehouse, catalog, years: [2020] })).outsideLayout, undefined);
    } finally {
      for (const key of [...keys, hidden]) await fs.rm(path.join(warehouse, key));
    }
    assert.equal((await verify()).outsideLayout, undefined);
  });

  test('a data file whose key has a backslash (a Windows path, say) is named: nothing compacts or catalogs it', async () => {
    const rng = createPrng(6);
    const key = `grid_partition=${CELLS[0]}/year=2021/part_99998_win\\x.parquet`;
    await writePartFile(path.join(warehouse, key), [makeSampleRow(rng, { id: 'WIN_0', cell: CELLS[0]!, year: 2021, updated: new Date() })]);
    try {
      const r = await verify();
      assert.deepEqual(kinds(r), [`${ViolationKinds.unreadableFile} ${key}`]);
      assert.match(r.violations[0]!.detail, /^not compacted or catalogued: its key has a backslash/);
      assert.equal(r.stats.dataFiles, (await listPhysicalDataFiles(store)).length, 'not counted as a data file');
    } finally {
      await fs.rm(path.join(warehouse, key));
    }
    assert.equal((await verify()).ok, true);
  });

  test('--cells/--years check those buckets only: their files and the catalog entries of them', async () => {
    const [damaged, other] = CELLS.map((c) => `grid_partition=${c}/year=2021`);
    const stray = `${damaged}/part_99998_selection.parquet`;
    await writePartFile(path.join(warehouse, stray), [makeSampleRow(createPrng(6), { id: 'SEL_1', cell: CELLS[0]!, year: 2021, updated: new Date() })]);
    const [compacted] = (await compactedFiles()).filter((k) => k.startsWith(`${damaged}/`));
    const saved = path.join(dir, 'saved-selection.parquet');
    await fs.rename(path.join(warehouse, compacted!), saved);
    try {
      const whole = await verify();
      assert.deepEqual(kinds(whole), [`${ViolationKinds.notInCatalog} ${stray}`, `${ViolationKinds.missingFromWarehouse} ${path.join(warehouse, compacted!)}`].sort());
      assert.equal(whole.selection, undefined);

      const clean = await verifyWarehouse({ warehouse, catalog, cells: [CELLS[1]!] });
      assert.deepEqual(clean.violations, [], 'the damaged bucket and its catalog entry are not looked at');
      assert.deepEqual(clean.selection, { cells: [CELLS[1]!] });
      assert.deepEqual([clean.stats.dataFiles, clean.stats.buckets, clean.stats.catalogFiles], [1, 1, 1]);
      assert.equal(clean.stats.catalogRows, clean.stats.rows);

      const both = await verifyWarehouse({ warehouse, catalog, cells: [CELLS[0]!], years: [2021] });
      assert.deepEqual(kinds(both), kinds(whole), 'the selected bucket is checked as a whole verify checks it');
      assert.deepEqual([both.stats.dataFiles, both.stats.catalogFiles], [1, 1]);

      const none = await verifyWarehouse({ warehouse, catalog, years: [2022] });
      assert.deepEqual([none.ok, none.stats.dataFiles, none.stats.catalogFiles], [true, 0, 0]);
      assert.deepEqual(none.unmatched, { years: [2022] }, 'a year without files or entries is named');
      assert.equal(clean.unmatched, undefined);
      const typo = await verifyWarehouse({ warehouse, catalog, cells: [CELLS[1]!, 'nosuchcell'], years: [2021] });
      assert.deepEqual(typo.unmatched, { cells: ['nosuchcell'] }, 'only the selected cell that matched nothing');
      assert.match(formatVerifyReport(typo), /\n {2}note: no data file and no catalog entry in cells nosuchcell: nothing of them was checked\n/);
      await assert.rejects(verifyWarehouse({ warehouse, catalog, cells: [] }), /invalid selection: cells: list at least one cell/);

      const cli = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
      const text = await execFileP(process.execPath, [cli, 'verify', '--warehouse', warehouse, '--catalog', catalog, '--cells', CELLS[1]!, '--years', '2021'], { cwd: REPO_ROOT });
      assert.match(text.stdout, new RegExp(`only cells ${CELLS[1]} and years 2021\n`));
      assert.match(text.stdout, /\nOK: no violations/);
      // A compaction's rules for its locations and names hold for verify too: a presigned catalog URL is not a missing catalog.
      const presigned = ['--catalog', 's3://bucket/catalog.db?X-Amz-Signature=abc'];
      for (const bad of [['--cells', ''], ['--years', '20x1'], ['--cells', 'a/b'], presigned, ['--catalog', 'arn:aws:s3tables:us-east-1:123:bucket/x'], ['--table', 'a-b']]) {
        const refused = await execFileP(process.execPath, [cli, 'verify', '--warehouse', warehouse, '--catalog', catalog, ...bad], { cwd: REPO_ROOT }).then(
          () => assert.fail(`verify ${bad.join(' ')} must be refused`),
          (err: { code?: number; stderr?: string }) => err,
        );
        assert.equal(refused.code, 64, `${bad.join(' ')}: ${refused.stderr}`);
        assert.match(refused.stderr!, /usage: earthcatalog-compact verify/);
        if (bad === presigned) {
          assert.match(refused.stderr!, /^earthcatalog-compact: --catalog: an s3:\/\/ catalog is a plain location, without a query string or fragment/);
          assert.doesNotMatch(refused.stderr!, /X-Amz-Signature/);
        }
      }
    } finally {
      await fs.rm(path.join(warehouse, stray));
      await fs.rename(saved, path.join(warehouse, compacted!));
    }
    assert.equal((await verify()).ok, true);
    assert.equal(other, `grid_partition=${CELLS[1]}/year=2021`);
  });

  test('an id duplicated across two files of one bucket, even once both are catalogued', async () => {
    const [compacted] = await compactedFiles();
    const bucket = path.dirname(compacted!);
    const session = await openDuckSession({ tempDir: path.join(dir, 'spill'), memoryLimitMb: 128, threads: 1 });
    let id: string;
    try {
      const [row] = await session.rows(`SELECT min(id) AS id FROM read_parquet(${sqlString(path.join(warehouse, compacted!))}, hive_partitioning = false)`);
      id = String(row!.id);
    } finally {
      session.close();
    }
    const cell = /grid_partition=([^/]+)/.exec(bucket)![1]!;
    const key = `${bucket}/part_99998_late.parquet`;
    await writePartFile(path.join(warehouse, key), [makeSampleRow(createPrng(6), { id, cell, year: 2021, updated: new Date() })]);
    try {
      await rebuild();
      const r = await verify();
      assert.deepEqual(kinds(r), [`${ViolationKinds.duplicateId} ${bucket}`]);
      // Both files named, so the reader knows where to look.
      assert.match(r.violations[0]!.detail, new RegExp(`1 id\\(s\\).*${id}.*2 times in 2 files \\(${path.basename(compacted!)}, part_99998_late\\.parquet\\)$`));
      assert.equal(r.stats.bucketsWithSeveralFiles, 1);
    } finally {
      await fs.rm(path.join(warehouse, key));
      await rebuild();
    }
    assert.equal((await verify()).ok, true);
  });

  test('a data column named `filename` (a common STAC property) is checked like any other, not taken for an unreadable file', async () => {
    await withRewrittenCompactedFile(
      "SELECT *, 'scene.tif' AS filename FROM $src",
      async () => assert.deepEqual((await verify()).violations, [], 'no unreadable file, no incompatible bucket'),
      { rebuildFirst: true },
    );
  });

  test('a compacted file whose rows are not sorted by (platform, datetime)', async () => {
    await withRewrittenCompactedFile(
      'SELECT * FROM $src ORDER BY platform DESC, datetime DESC',
      async (compacted) => {
        const r = await verify();
        assert.deepEqual(kinds(r), [`${ViolationKinds.unsorted} ${compacted}`]);
        assert.match(r.violations[0]!.detail, /rows are out of \(platform, datetime\) order, the first at row 0/);
      },
      { rebuildFirst: true },
    );
  });

  test("catalog column bounds that no longer hold a file's values (the file changed after the rebuild)", async () => {
    // Same rows, same order: every datetime one second later, every platform one letter longer.
    await withRewrittenCompactedFile("SELECT * REPLACE (datetime + INTERVAL 1 SECOND AS datetime, platform || 'x' AS platform) FROM $src", async (compacted) => {
      const r = await verify();
      const bounds = r.violations.filter((v) => v.kind === ViolationKinds.columnBoundsMismatch);
      assert.deepEqual(bounds.map((v) => v.object), [compacted]);
      assert.match(bounds[0]!.detail, /datetime upper bound \S+ is below the largest value \S+/);
      assert.match(bounds[0]!.detail, /platform upper bound "\w+" is below the largest value "\w+x"/);
      assert.doesNotMatch(bounds[0]!.detail, /lower bound/, 'the lower bounds still hold');
      const expectedKinds: string[] = [ViolationKinds.columnBoundsMismatch, ViolationKinds.fileSizeMismatch];
      assert.ok(r.violations.every((v) => v.object === compacted && expectedKinds.includes(v.kind)), 'nothing else is reported');
      await rebuild();
      assert.deepEqual((await verify()).violations, [], 'a rebuild records the new bounds');
    });
  });

  test("a column the table's schema lacks, or cannot read, is a schema mismatch; a rebuild adds the one and names the other", async () => {
    await withRewrittenCompactedFile('SELECT *, CAST(12.5 AS REAL) AS "eo:cloud_cover" FROM $src', async (compacted) => {
      const r = await verify();
      const misfits = r.violations.filter((v) => v.kind === ViolationKinds.schemaMismatch);
      assert.deepEqual(misfits.map((v) => v.object), [compacted]);
      assert.equal(misfits[0]!.detail, "column(s) the table's schema lacks: eo:cloud_cover (readers fail on the file)");
      await rebuild();
      assert.deepEqual((await verify()).violations, [], 'the rebuild added the column');
    });
    await withRewrittenCompactedFile(
      'SELECT * REPLACE (CAST(latitude AS VARCHAR) AS latitude) FROM $src',
      async (compacted) => {
        const misfits = (await verify()).violations.filter((v) => v.kind === ViolationKinds.schemaMismatch);
        assert.deepEqual(misfits.map((v) => [v.object, v.detail]), [[compacted, "column 'latitude' is string in the file, double in the table (readers fail on the file)"]]);
      },
      { rebuildFirst: true },
    );
    // A datetime written as text is whole: a schema mismatch and rows without a year, not an unreadable file.
    await withRewrittenCompactedFile(
      'SELECT * REPLACE (CAST(datetime AS VARCHAR) AS datetime) FROM $src',
      async (compacted) => {
        const found = (await verify()).violations.filter((v) => v.object === compacted);
        assert.deepEqual(found.map((v) => v.kind).sort(), [ViolationKinds.partitionMismatch, ViolationKinds.schemaMismatch], JSON.stringify(found));
        const year = /year=(\d+)/.exec(compacted)![1];
        assert.equal(
          found.find((v) => v.kind === ViolationKinds.partitionMismatch)!.detail,
          `the file's datetime column is BYTE_ARRAY UTF8, not a timestamp, so its rows have no year, but its path puts them in year(datetime)=${year}; engines that prune on the partition skip them`,
        );
      },
      { rebuildFirst: true },
    );
  });

  test("a column named like the year partition field is not added to the schema (Java readers would refuse the table) and is a schema mismatch", async () => {
    await withRewrittenCompactedFile(
      'SELECT *, 1999 AS year FROM $src',
      async (compacted) => {
        const misfits = (await verify()).violations.filter((v) => v.kind === ViolationKinds.schemaMismatch);
        assert.deepEqual(misfits.map((v) => v.object), [compacted], 'still a mismatch after the rebuild: the rebuild did not add it');
        assert.match(misfits[0]!.detail, /^column 'year' has the name of the partition field 'year' \(year\(datetime\)\).*rename the column in the file/);
      },
      { rebuildFirst: true },
    );
  });

  test("Parquet field ids of another numbering are a schema mismatch: readers would read another column", async () => {
    // The rebuild created the table with the default schema.
    const idOf = (name: string) => defaultSchema().fields.find((f) => f.name === name)!.id;
    const [platform, collection] = [idOf('platform'), idOf('collection')];
    await withRewrittenCompactedFile(
      'SELECT platform, collection FROM $src',
      async (compacted) => {
        const misfits = (await verify()).violations.filter((v) => v.kind === ViolationKinds.schemaMismatch);
        assert.deepEqual(misfits.map((v) => v.object), [compacted]);
        assert.equal(
          misfits[0]!.detail,
          `column 'platform' carries Parquet field id ${collection}, the table's field has id ${platform} (readers take a file's ids over the name mapping); ` +
            `column 'collection' carries Parquet field id ${platform}, the table's field has id ${collection} (readers take a file's ids over the name mapping) (readers fail on the file)`,
        );
      },
      { rebuildFirst: true, fieldIds: `{platform: ${collection}, collection: ${platform}}` },
    );
  });

  test("catalog null counts that are not a file's (a null count of 0 lets engines skip the file for `IS NULL`)", async () => {
    // Same rows, same order, same bounds (the extremes kept): one updated in between becomes NULL.
    await withRewrittenCompactedFile(
      `SELECT * EXCLUDE (rn) REPLACE (CASE WHEN rn = 2 THEN NULL ELSE updated END AS updated)
       FROM (SELECT *, row_number() OVER (ORDER BY updated, id) AS rn FROM $src ORDER BY platform, datetime, id)`,
      async (compacted) => {
        const r = await verify();
        const counts = r.violations.filter((v) => v.kind === ViolationKinds.columnCountsMismatch);
        assert.deepEqual(counts.map((v) => v.object), [compacted]);
        assert.match(counts[0]!.detail, /: updated has 1 null\(s\), the catalog records 0$/);
        const expectedKinds: string[] = [ViolationKinds.columnCountsMismatch, ViolationKinds.fileSizeMismatch];
        assert.deepEqual(r.violations.filter((v) => !expectedKinds.includes(v.kind)), [], 'bounds still hold; nothing else is reported');
        await rebuild();
        assert.deepEqual((await verify()).violations, [], 'a rebuild records the new counts');
      },
    );
  });

  test("a file the Python pipeline appended with pyiceberg's add_files: its column metrics agree with the file (only the second snapshot is reported)", async () => {
    const rng = createPrng(11);
    const key = `grid_partition=${CELLS[1]}/year=2021/part_99997_appended.parquet`;
    // Nulls in `updated`, so the null counts pyiceberg derives are compared with something other than 0.
    const rows = [0, 1, 2, 3].map((i) => makeSampleRow(rng, { id: `APPENDED_${i}`, cell: CELLS[1]!, year: 2021, updated: i % 2 ? null : new Date() }));
    await writePartFile(path.join(warehouse, key), rows);
    try {
      await execFileP(pythonExecutable(), [path.join(REPO_ROOT, 'test', 'py', 'iceberg_read.py'), 'add-files', '--catalog', catalog, '--files', path.join(warehouse, key)]).catch((err: { stdout?: string }) => {
        throw new Error(`pyiceberg add_files: ${err.stdout ?? String(err)}`);
      });
      const r = await verify();
      assert.deepEqual(kinds(r), [`${ViolationKinds.snapshotCount} ${catalog} (${DEFAULT_NAMESPACE}.${DEFAULT_TABLE})`]);
    } finally {
      await fs.rm(path.join(warehouse, key));
      await rebuild();
    }
  });

  test("a file whose catalog partition and whose rows both disagree with its path gets both partition mismatches, not one", async () => {
    const rng = createPrng(12);
    const key = `grid_partition=${CELLS[1]}/year=2021/part_99996_misdated.parquet`;
    // pyiceberg's add_files takes the partition from the column statistics: 2020, where the path says 2021.
    const rows = [0, 1].map((i) => makeSampleRow(rng, { id: `MISDATED_${i}`, cell: CELLS[1]!, year: 2020, updated: new Date() }));
    await writePartFile(path.join(warehouse, key), rows);
    try {
      await execFileP(pythonExecutable(), [path.join(REPO_ROOT, 'test', 'py', 'iceberg_read.py'), 'add-files', '--catalog', catalog, '--files', path.join(warehouse, key)]).catch((err: { stdout?: string }) => {
        throw new Error(`pyiceberg add_files: ${err.stdout ?? String(err)}`);
      });
      const r = await verify();
      const details = r.violations.filter((v) => v.kind === ViolationKinds.partitionMismatch && v.object === key).map((v) => v.detail).sort();
      assert.equal(details.length, 2, JSON.stringify(details));
      assert.match(details[0]!, /^partition field year is 50 in the catalog, the path says 51$/);
      assert.match(details[1]!, /^the rows do not match the partition of their path .*not all in 2021/);
    } finally {
      await fs.rm(path.join(warehouse, key));
      await rebuild();
    }
  });

  test('rows without an id are reported (a compaction refuses their bucket: they cannot be deduplicated)', async () => {
    await withRewrittenCompactedFile(
      `SELECT * EXCLUDE (rn) REPLACE (CASE WHEN rn <= 2 THEN NULL ELSE id END AS id) FROM (SELECT *, row_number() OVER () AS rn FROM $src)`,
      async (compacted) => {
        const r = await verify();
        assert.deepEqual(kinds(r), [`${ViolationKinds.nullId} ${compacted}`]);
        assert.match(r.violations[0]!.detail, /^2 of \d+ rows have no id: they cannot be deduplicated, so a compaction refuses the bucket$/);
      },
      { rebuildFirst: true },
    );
  });

  test('an id and a datetime nested in a struct are not the columns: the file is told it has none', async () => {
    await withRewrittenCompactedFile(`SELECT * EXCLUDE (id, datetime), {'id': id, 'datetime': CAST(datetime AS VARCHAR)} AS extra FROM $src`, async (compacted) => {
      const found = (await verify()).violations.filter((v) => v.object === compacted);
      assert.deepEqual(
        found
          // (The rewrite also changed the file's size and columns, which the catalog is told of: not this test's.)
          .filter((v) => ([ViolationKinds.missingIdColumn, ViolationKinds.nullId, ViolationKinds.partitionMismatch, ViolationKinds.unreadableFile, ViolationKinds.unsorted] as string[]).includes(v.kind))
          .map((v) => [v.kind, v.detail]),
        [
          [ViolationKinds.missingIdColumn, 'the file has no `id` column'],
          [
            ViolationKinds.partitionMismatch,
            `the file has no datetime column, so its rows have no year, but its path puts them in year(datetime)=2021; engines that prune on the partition skip them`,
          ],
        ],
        JSON.stringify(found),
      );
    });
  });

  test("rows that do not match their path's partition (no datetime, another year, another cell, an infinite datetime) are reported: engines pruning on the partition skip them", async () => {
    // Row order kept; the first row loses its datetime, the second moves back a year, the third names
    // another cell, the fourth's datetime is infinity (whose year() is NULL, like a missing datetime's).
    await withRewrittenCompactedFile(
      `SELECT * EXCLUDE (rn) REPLACE (
         CASE WHEN rn = 1 THEN NULL WHEN rn = 2 THEN datetime - INTERVAL 1 YEAR WHEN rn = 4 THEN 'infinity' ELSE datetime END AS datetime,
         CASE WHEN rn = 3 THEN 'elsewhere' ELSE grid_partition END AS grid_partition
       ) FROM (SELECT *, row_number() OVER () AS rn FROM $src)`,
      async (compacted) => {
        const r = await verify();
        const mismatches = r.violations.filter((v) => v.kind === ViolationKinds.partitionMismatch);
        assert.deepEqual(mismatches.map((v) => v.object), [compacted]);
        const cell = /grid_partition=([^/]+)/.exec(compacted)![1]!;
        assert.match(mismatches[0]!.detail, new RegExp(`^the rows do not match the partition of their path \\(grid_partition=${cell}, year\\(datetime\\)=2021\\): 1 of \\d+ rows have no datetime; 1 of \\d+ rows have an infinite datetime; its datetimes run from 2020-\\S+ .* not all in 2021; its grid_partition column is not "${cell}" throughout \\(values from "${cell}" to "elsewhere"\\); engines that prune on the partition skip them$`));
      },
      { rebuildFirst: true },
    );
  });

  test("a geo value without GeoParquet's version, primary column or that column's entry, or naming a column the file lacks, is geo-metadata", () => {
    const file = { key: 'grid_partition=a/year=2021/part_1.parquet', path: '/x', bucket: 'grid_partition=a/year=2021', compacted: false };
    const check = (geo: unknown, columns = ['id', 'geometry']) =>
      checkGeoMetadata(file, { rows: 1, geoKeys: 1, geo: new Uint8Array(Buffer.from(JSON.stringify(geo))), columns: new Set(columns) })?.detail;
    const good = { version: '1.1.0', primary_column: 'geometry', columns: { geometry: { encoding: 'WKB', geometry_types: [] } } };
    assert.equal(check(good), undefined);
    assert.equal(check({}), 'the `geo` value has no `version`');
    assert.equal(check({ ...good, primary_column: undefined }), 'the `geo` value has no `primary_column`');
    assert.equal(check({ ...good, columns: [] }), 'the `geo` value has no `columns` object');
    assert.equal(check({ ...good, primary_column: 'geom' }), "the `geo` value does not describe its primary column 'geom' in `columns`");
    assert.equal(check(good, ['id']), "the `geo` value names the primary column 'geometry', which the file does not have");
    assert.equal(check([1, 2]), 'the `geo` value is not a JSON object');
  });

  test('a data file without its geo key', async () => {
    await withRewrittenCompactedFile(
      'SELECT * FROM $src',
      async (compacted) => {
        const stale = await verify();
        // The catalog still records the old size: that is reported too, until the catalog is rebuilt.
        assert.deepEqual(kinds(stale), [`${ViolationKinds.fileSizeMismatch} ${compacted}`, `${ViolationKinds.geoMetadata} ${compacted}`]);
        await rebuild();
        const r = await verify();
        assert.deepEqual(kinds(r), [`${ViolationKinds.geoMetadata} ${compacted}`]);
        assert.match(r.violations[0]!.detail, /no `geo` key/);
      },
      { keepGeo: false },
    );
  });

  test('a catalogued file that is deleted, and one that is truncated', async () => {
    const [first, second] = await compactedFiles();
    const saved1 = path.join(dir, 'saved-1.parquet');
    const saved2 = path.join(dir, 'saved-2.parquet');
    await fs.copyFile(path.join(warehouse, first!), saved1);
    await fs.copyFile(path.join(warehouse, second!), saved2);
    try {
      await fs.rm(path.join(warehouse, first!));
      await fs.truncate(path.join(warehouse, second!), 100);
      const r = await verify();
      assert.deepEqual(kinds(r), [
        `${ViolationKinds.fileSizeMismatch} ${second}`,
        `${ViolationKinds.missingFromWarehouse} ${path.join(warehouse, first!)}`,
        `${ViolationKinds.unreadableFile} ${second}`,
      ]);
    } finally {
      await fs.copyFile(saved1, path.join(warehouse, first!));
      await fs.copyFile(saved2, path.join(warehouse, second!));
    }
    assert.equal((await verify()).ok, true);
  });

  test("a file with damaged pages in a column the checks do not read is unreadable; the rest of its bucket is still checked for duplicates", async () => {
    const [compacted] = await compactedFiles();
    const bucket = path.dirname(compacted!);
    const copy = path.join(bucket, 'part-copy.parquet');
    const badAssets = path.join(bucket, 'part-bad-assets.parquet');
    const badId = path.join(bucket, 'part-bad-id.parquet');
    await fs.copyFile(path.join(warehouse, compacted!), path.join(warehouse, copy));
    await damageColumn(path.join(warehouse, compacted!), path.join(warehouse, badAssets), 'assets');
    await damageColumn(path.join(warehouse, compacted!), path.join(warehouse, badId), 'id');
    try {
      const r = await verify();
      assert.deepEqual(kinds(r), [
        `${ViolationKinds.duplicateId} ${bucket}`,
        ...[badAssets, badId, copy].map((k) => `${ViolationKinds.notInCatalog} ${k}`),
        ...[badAssets, badId].map((k) => `${ViolationKinds.unreadableFile} ${k}`),
      ]);
      assert.match(r.violations.find((v) => v.kind === ViolationKinds.duplicateId)!.detail, /2 times in 2 files/);
    } finally {
      for (const k of [copy, badAssets, badId]) await fs.rm(path.join(warehouse, k));
    }
    assert.equal((await verify()).ok, true);
  });

  test('keys and a warehouse path with glob characters are read as themselves, not as patterns matching other files', async () => {
    const [compacted] = await compactedFiles();
    const bucket = path.dirname(compacted!);
    const bracketed = path.join(bucket, 'part-[1].parquet');
    const plain = path.join(bucket, 'part-1.parquet');
    for (const k of [bracketed, plain]) await fs.copyFile(path.join(warehouse, compacted!), path.join(warehouse, k));
    try {
      const r = await verify();
      assert.deepEqual(kinds(r), [`${ViolationKinds.duplicateId} ${bucket}`, ...[plain, bracketed].map((k) => `${ViolationKinds.notInCatalog} ${k}`)]);
      assert.match(r.violations.find((v) => v.kind === ViolationKinds.duplicateId)!.detail, /3 times in 3 files/);
      // Such a key is read through the scratch directory, whose own name then must not be a pattern.
      await assert.rejects(
        verifyWarehouse({ warehouse, catalog, scratchDir: path.join(dir, 'scratch{a,b}') }),
        /scratch directory .*scratch\{a,b\}.* must not contain .*; give verify --scratch-dir \(or TMPDIR\) without them$/,
      );
    } finally {
      for (const k of [bracketed, plain]) await fs.rm(path.join(warehouse, k));
    }
    const globbed = path.join(dir, 'g[1]', 'warehouse');
    await fs.cp(warehouse, globbed, { recursive: true });
    try {
      const r = await verifyWarehouse({ warehouse: globbed, catalog: path.join(dir, 'no-catalog.db') });
      assert.deepEqual(r.violations.map((v) => v.kind), [ViolationKinds.catalogMissing]);
      assert.equal(r.stats.dataFiles, 2);
      assert.ok(r.stats.rows > 0);
    } finally {
      await fs.rm(path.dirname(globbed), { recursive: true });
    }
    assert.equal((await verifyWarehouse({ warehouse, catalog, scratchDir: path.join(dir, 'scratch{a,b}') })).ok, true, 'plain local keys never need the scratch directory');
  });

  test('the CLI exits 0 when clean and 2 with the violations as JSON', async () => {
    const cli = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
    // A --scratch-dir that does not exist yet is made, as the worker makes its own.
    const scratch = path.join(await makeTempDir('ec-verify-cli-scratch'), 'not', 'yet');
    const clean = await execFileP(process.execPath, [cli, 'verify', '--warehouse', warehouse, '--catalog', catalog, '--scratch-dir', scratch], { cwd: REPO_ROOT });
    assert.match(clean.stdout, /OK/);
    assert.deepEqual(await fs.readdir(scratch), [], 'the scratch directory is left empty');
    const file = path.join(path.dirname(scratch), 'a-file');
    await fs.writeFile(file, '');
    const refused = await execFileP(process.execPath, [cli, 'verify', '--warehouse', warehouse, '--catalog', catalog, '--scratch-dir', path.join(file, 'sub')], { cwd: REPO_ROOT }).then(
      () => assert.fail('a scratch dir below a file is refused'),
      (err: { code?: number; stderr?: string }) => err,
    );
    assert.equal(refused.code, 1);
    assert.match(refused.stderr ?? '', /--scratch-dir \S+a-file\/sub cannot be used as a directory: ENOTDIR/);
    const key = `grid_partition=${CELLS[1]}/year=2021/part_99997_cli.parquet`;
    await writePartFile(path.join(warehouse, key), [makeSampleRow(createPrng(9), { id: 'CLI_1', cell: CELLS[1]!, year: 2021, updated: new Date() })]);
    try {
      const broken = await execFileP(process.execPath, [cli, 'verify', '--warehouse', warehouse, '--catalog', catalog, '--json'], { cwd: REPO_ROOT }).then(
        () => assert.fail('verify must exit non-zero on a violation'),
        (err: { code?: number; stdout?: string }) => err,
      );
      assert.equal(broken.code, 2);
      const report = JSON.parse(broken.stdout!) as VerifyReport;
      assert.equal(report.ok, false);
      assert.deepEqual(kinds(report), [`${ViolationKinds.notInCatalog} ${key}`]);
    } finally {
      await fs.rm(path.join(warehouse, key));
    }
  });

  test('the text report counts the violations by kind and lists some of every kind: many of one kind hide none of another', () => {
    const many = Array.from({ length: 1000 }, (_, i) => ({ kind: ViolationKinds.duplicateId, object: `grid_partition=c${i}/year=2021`, detail: 'id x 2 times in 2 files' }));
    const missing = { kind: ViolationKinds.missingFromWarehouse, object: 'grid_partition=c1/year=2021/part_1.parquet', detail: 'registered, not in the warehouse' };
    const stats = { dataFiles: 1, buckets: 1, bucketsWithSeveralFiles: 0, compactedFiles: 0, rows: 1, catalogFiles: 1, catalogRows: 1, snapshotCount: 1, durationMs: 1 };
    const text = formatVerifyReport({ ok: false, warehouse: '/w', catalog: '/c', table: 'ns.t', stats, violations: [...many, missing] } as unknown as VerifyReport);
    assert.match(text, new RegExp(`^FAILED: 1001 violation\\(s\\): 1000 ${ViolationKinds.duplicateId}, 1 ${ViolationKinds.missingFromWarehouse}$`, 'm'));
    assert.ok(text.includes(`${missing.object}: ${missing.detail}`), text);
    assert.match(text, new RegExp(`… and 975 more ${ViolationKinds.duplicateId} \\(--json lists all\\)`));
    // Once per kind, after its lines: what clears it.
    const advice = text.split('\n').filter((l) => /^ +what to do: /.test(l));
    assert.equal(advice.length, 2, text);
    assert.match(advice[0]!, /what to do: a compaction of the bucket keeps each id's row with the latest updated/);
    assert.match(advice[1]!, /what to do: readers of the table fail on these files: if something other than a compaction deleted or moved them, restore them/);
    assert.ok(text.indexOf(advice[1]!) > text.indexOf(missing.object), 'after the lines of its kind');
  });

  test('a report larger than a pipe holds (64 KB) reaches the reader whole before the CLI exits', async () => {
    const cli = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
    // 400 buckets, one file each without `geo` metadata (each a violation), written by one partitioned COPY.
    const session = await openDuckSession({ tempDir: await makeTempDir('ec-verify-pipe-spill'), threads: 1 });
    const cells = Array.from({ length: 400 }, (_, i) => `zzpipe${String(i).padStart(3, '0')}`);
    try {
      await session.exec(
        `COPY (SELECT 'PIPE_' || i AS id, 'zzpipe' || lpad(i::VARCHAR, 3, '0') AS grid_partition, 2021 AS year, TIMESTAMPTZ '2021-06-01 00:00:00+00' AS datetime
               FROM range(400) t(i))
         TO ${sqlString(warehouse)} (FORMAT parquet, PARTITION_BY (grid_partition, year), WRITE_PARTITION_COLUMNS true, FILENAME_PATTERN 'part_pipe_{i}', OVERWRITE_OR_IGNORE true)`,
      );
    } finally {
      session.close();
    }
    try {
      // A reader slower than the writer (jq on a loaded machine): nothing is read for the first 2 s, so the
      // pipe fills and the rest of the report waits in the process.
      const out = path.join(await makeTempDir('ec-verify-pipe-out'), 'report.json');
      const piped = spawnSync('bash', ['-c', 'set -o pipefail; "$0" "$1" verify --warehouse "$2" --catalog "$3" --json | (sleep 2; cat > "$4")', process.execPath, cli, warehouse, catalog, out], {
        cwd: REPO_ROOT,
        encoding: 'utf8',
      });
      const broken = { code: piped.status, stdout: await fs.readFile(out, 'utf8') };
      assert.equal(broken.code, 2);
      assert.ok(broken.stdout!.length > 64 * 1024, `${broken.stdout!.length} bytes: more than a pipe holds`);
      const report = JSON.parse(broken.stdout!) as VerifyReport;
      // Every one of the 400 files is named (whatever else the shared warehouse's state reports).
      const named = new Set(report.violations.map((v) => v.object.split('/')[0]));
      assert.deepEqual(cells.filter((c) => !named.has(`grid_partition=${c}`)), []);
    } finally {
      for (const cell of cells) await fs.rm(path.join(warehouse, `grid_partition=${cell}`), { recursive: true });
    }
  });
});

/** Warehouses on disk for the end-to-end tests, and the independent checks run after each scenario. */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createPrng, generateSampleWarehouse, makeSampleRow, writePartFile, type SampleRow, type SampleWarehouseOptions } from '../../client/demo/sample-warehouse';
import { REPO_ROOT } from './temporal';
import { relativeFiles } from './files';
import { pythonExecutable } from '../../client/temporal-cli';
import { makeTempDir } from './temp-dirs';
import type { BucketRequest } from '../../workflows/contract';

const run = promisify(execFile);

export interface Fixture {
  dir: string;
  warehouse: string;
  catalog: string;
}

export async function makeFixture(name: string, opts: SampleWarehouseOptions = {}): Promise<Fixture> {
  const dir = await makeTempDir(`ec-${name}`);
  const warehouse = path.join(dir, 'warehouse');
  await fs.mkdir(warehouse, { recursive: true });
  await generateSampleWarehouse(warehouse, { cells: ['81283ffffffffff', '8128bffffffffff', '8129bffffffffff'], years: [2020, 2021], seed: 7, ...opts });
  return { dir, warehouse, catalog: path.join(dir, 'catalog.db') };
}

/**
 * Many tiny buckets, fast: two template part files (overlapping ids) per year are written once with
 * DuckDB and copied into every bucket of that year. Each bucket compacts to 5 rows. The templates have
 * no `grid_partition` column (readers take it from the partition), so one file fits every cell.
 */
export async function makeTinyWarehouse(name: string, buckets: number): Promise<Fixture> {
  const dir = await makeTempDir(`ec-${name}`);
  const warehouse = path.join(dir, 'warehouse');
  const rng = createPrng(3);
  const templates: Array<[a: string, b: string]> = [];
  for (let y = 0; y < 10; y++) {
    const year = 2015 + y;
    const row = (id: string, day: number): SampleRow => makeSampleRow(rng, { id, cell: 'template', year, updated: new Date(Date.UTC(2025, 0, day)) });
    const a = path.join(dir, `a-${year}.parquet`);
    const b = path.join(dir, `b-${year}.parquet`);
    await writePartFile(a, [row('x1', 1), row('x2', 1), row('x3', 1)], { omitColumns: ['grid_partition'] });
    await writePartFile(b, [row('x2', 2), row('x3', 2), row('x4', 2), row('x5', 2)], { omitColumns: ['grid_partition'] });
    templates.push([a, b]);
  }
  const cellsPerYear = Math.ceil(buckets / 10);
  let made = 0;
  for (let c = 0; c < cellsPerYear && made < buckets; c++) {
    for (let y = 0; y < 10 && made < buckets; y++, made++) {
      const bucketDir = path.join(warehouse, `grid_partition=cell${String(c).padStart(5, '0')}`, `year=${2015 + y}`);
      await fs.mkdir(bucketDir, { recursive: true });
      await fs.copyFile(templates[y]![0], path.join(bucketDir, 'part_00000_a.parquet'));
      await fs.copyFile(templates[y]![1], path.join(bucketDir, 'part_00001_b.parquet'));
    }
  }
  return { dir, warehouse, catalog: path.join(dir, 'catalog.db') };
}

/** A request for one bucket of `warehouse` with every file in it as input, as a plan would list them. */
export async function bucketRequest(warehouse: string, cell: string, year: number, planId: string): Promise<BucketRequest> {
  const dir = `grid_partition=${cell}/year=${year}`;
  const names = (await fs.readdir(path.join(warehouse, dir))).sort();
  const inputs = await Promise.all(names.map(async (n) => ({ key: `${dir}/${n}`, size: (await fs.stat(path.join(warehouse, dir, n))).size })));
  return { warehouse, planId, bucket: { cell, year }, inputs };
}

/** Every file under the warehouse (relative keys), sorted; control objects excluded. */
export async function listFiles(root: string): Promise<string[]> {
  return withoutControlObjects(await relativeFiles(root));
}

/** The keys sorted, without the compaction's plans and the Iceberg metadata (data and temporary files stay). */
export function withoutControlObjects(keys: string[]): string[] {
  return keys.filter((k) => !k.startsWith('_earthcatalog_compaction/') && !k.startsWith('earthcatalog/')).sort();
}

/** Data files grouped by bucket prefix. */
export function byBucket(keys: string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const k of keys) {
    const match = /^(grid_partition=[^/]+\/year=\d+)\/[^/]+\.parquet$/.exec(k);
    if (!match) continue;
    const list = m.get(match[1]!) ?? [];
    list.push(k);
    m.set(match[1]!, list);
  }
  return m;
}

export async function copyTree(from: string, to: string): Promise<void> {
  await fs.cp(from, to, { recursive: true });
}

export interface IcebergScan {
  snapshot_count: number;
  file_count: number;
  row_count: number | null;
  files: { path: string; record_count: number; size: number; partition: Record<string, unknown> }[];
  ids?: string[];
  /** With --values COLUMN: that column's value (JSON text, or null) by id. */
  values?: Record<string, string | null>;
  error?: string;
}

/**
 * pyiceberg, the independent reader: loads the table and scans it. `catalog` is a local catalog.db;
 * iceberg_read_s3.py reads the table's files from S3 (endpoint and credentials from the environment).
 */
export async function pyicebergScan(catalog: string, extra: string[] = ['--ids'], script: 'iceberg_read.py' | 'iceberg_read_s3.py' = 'iceberg_read.py'): Promise<IcebergScan> {
  const python = pythonExecutable();
  try {
    const { stdout } = await run(python, [path.join(REPO_ROOT, 'test', 'py', script), 'scan', '--catalog', catalog, ...extra], {
      maxBuffer: 256 * 1024 * 1024,
    });
    return JSON.parse(stdout) as IcebergScan;
  } catch (err) {
    const stdout = (err as { stdout?: string }).stdout;
    if (stdout) return JSON.parse(stdout) as IcebergScan;
    throw err;
  }
}

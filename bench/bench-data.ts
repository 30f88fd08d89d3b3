/**
 * The benchmark's input data under one root, generated deterministically and reused when the
 * manifest (`data.json`) says the same options produced it. Nothing under `source/` is ever
 * compacted: each run works on hard links (see linkOrCopy), so compaction deleting its inputs
 * leaves the source intact.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { openDuckSession, sqlString } from '../activities/compaction/duckdb-session';
import type { BucketRef, PlannedFile } from '../workflows/contract';
import { bucketPrefix } from '../workflows/contract';
import { compactBucket } from '../activities/compaction/compact-bucket';
import { duckdbMemoryLimitMb } from '../activities';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { writeStacBucket, writeStacParts, type StacBucketFiles } from './stac-bucket';
import { linkOrCopy, writeTinyTemplates } from './tiny-buckets';

const DATA_VERSION = 1;
/** Parts of new ingest that the weekly case adds to the compacted heavy bucket. */
const WEEKLY_NEW_PARTS = 2;
const SEED = 20240601;
const DUPLICATE_FRACTION = 0.2;
/** The memory case needs a bucket whose uncompressed data is at least this many times the budget. */
export const MEMORY_CASE_FACTOR = 10;

export interface BucketData extends StacBucketFiles {
  /** Warehouse holding the source bucket (never compacted). */
  warehouse: string;
  bucket: BucketRef;
  inputs: PlannedFile[];
}

export interface BenchData {
  root: string;
  heavy?: BucketData;
  /** Undefined when the heavy bucket is already MEMORY_CASE_FACTOR x the budget (it then serves both cases). */
  memory?: BucketData;
  /** The heavy bucket compacted (last week's output) plus WEEKLY_NEW_PARTS parts of new ingest. */
  weekly?: BucketData;
  /** The same output plus WEEKLY_NEW_PARTS parts of recent acquisitions (StacBucketSpec.recentIngest). */
  recent?: BucketData;
  tinyTemplates?: string[];
}

interface Manifest {
  version: number;
  buckets: Record<string, { rows: number; parts: number; seed: number; data: BucketData }>;
}

async function readManifest(file: string): Promise<Manifest> {
  try {
    const m = JSON.parse(await fs.readFile(file, 'utf8')) as Manifest;
    if (m.version === DATA_VERSION) return m;
  } catch {
    // Absent or unreadable: regenerate.
  }
  return { version: DATA_VERSION, buckets: {} };
}

async function filesExist(d: BucketData): Promise<boolean> {
  for (const input of d.inputs) {
    const st = await fs.stat(path.join(d.warehouse, input.key)).catch(() => undefined);
    if (!st || st.size !== input.size) return false;
  }
  return true;
}

export interface PrepareOptions {
  rows: number;
  parts: number;
  /** Budget of the memory case, whose bucket must be 10x+ of it uncompressed. */
  memoryCaseMb: number;
  threads: number;
  heavy: boolean;
  memory: boolean;
  weekly: boolean;
  recent: boolean;
  tiny: boolean;
  log: (line: string) => void;
}

export async function prepareData(root: string, opts: PrepareOptions): Promise<BenchData> {
  await fs.mkdir(root, { recursive: true });
  const manifestFile = path.join(root, 'data.json');
  const manifest = await readManifest(manifestFile);
  const source = path.join(root, 'source');
  // Generation gets a fixed, modest budget: it is not what is measured, and others share the machine.
  const session = await openDuckSession({ memoryLimitMb: 2048, threads: opts.threads, tempDir: path.join(root, 'gen-spill') });
  /** The bucket the manifest records under `name`, when the same options made it and its files are intact. */
  const reusable = async (name: string, rows: number): Promise<BucketData | undefined> => {
    const known = manifest.buckets[name];
    if (!known || known.rows !== rows || known.parts !== opts.parts || known.seed !== SEED || !(await filesExist(known.data))) return undefined;
    opts.log(`reusing ${name} bucket: ${known.data.rowsIn.toLocaleString()} rows in ${known.data.inputs.length} parts`);
    return known.data;
  };
  const bucket = async (name: string, cell: string, rows: number): Promise<BucketData> => {
    const known = await reusable(name, rows);
    if (known) return known;
    const b: BucketRef = { cell, year: 2020 };
    const warehouse = path.join(source, name);
    const dir = path.join(warehouse, bucketPrefix(b));
    await fs.rm(warehouse, { recursive: true, force: true });
    opts.log(`generating ${name} bucket: ${rows.toLocaleString()} rows in ${opts.parts} parts ...`);
    const started = Date.now();
    const files = await writeStacBucket(session, {
      dir,
      cell,
      year: b.year,
      rows,
      parts: opts.parts,
      duplicateFraction: DUPLICATE_FRACTION,
      seed: SEED,
    });
    opts.log(`  done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const data: BucketData = {
      ...files,
      warehouse,
      bucket: b,
      inputs: files.files.map((f) => ({ key: `${bucketPrefix(b)}/${f.name}`, size: f.size })),
    };
    manifest.buckets[name] = { rows, parts: opts.parts, seed: SEED, data };
    await fs.writeFile(manifestFile, JSON.stringify(manifest, null, 2));
    return data;
  };
  /**
   * Last week's compaction of the heavy bucket, made by compactBucket itself, plus the generator's next
   * parts: a week newer, new ids and updates of earlier ones.
   */
  const weekly = async (heavy: BucketData): Promise<BucketData> => {
    const known = await reusable('weekly', opts.rows);
    if (known) return known;
    const warehouse = path.join(source, 'weekly');
    const dir = path.join(warehouse, bucketPrefix(heavy.bucket));
    const scratch = path.join(root, 'weekly-gen');
    await fs.rm(warehouse, { recursive: true, force: true });
    await fs.rm(scratch, { recursive: true, force: true });
    opts.log(`generating weekly bucket: compacting the heavy bucket, then ${WEEKLY_NEW_PARTS} new parts ...`);
    const started = Date.now();
    const last = path.join(scratch, 'warehouse');
    await linkBucketInto(heavy, last);
    const compacted = await compactBucket(
      new LocalWarehouseStore(last),
      { bucket: heavy.bucket, inputs: heavy.inputs, warehouse: last, planId: 'lastweek' },
      { scratchDir: path.join(scratch, 'scratch'), memoryLimitMb: duckdbMemoryLimitMb(2048), threads: opts.threads, heartbeat: () => undefined },
    );
    await fs.mkdir(dir, { recursive: true });
    await fs.rename(path.join(last, compacted.outputKey), path.join(warehouse, compacted.outputKey));
    await fs.rm(scratch, { recursive: true, force: true });
    const data = await withNewParts('weekly', warehouse, heavy.bucket, { name: path.basename(compacted.outputKey), size: compacted.bytesOut }, false);
    opts.log(`  done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return data;
  };
  /** Last week's output of the weekly bucket (hard-linked) plus parts of recent acquisitions. */
  const recent = async (weeklyData: BucketData): Promise<BucketData> => {
    const known = await reusable('recent', opts.rows);
    if (known) return known;
    const warehouse = path.join(source, 'recent');
    await fs.rm(warehouse, { recursive: true, force: true });
    opts.log(`generating recent bucket: last week's output, then ${WEEKLY_NEW_PARTS} parts of recent acquisitions ...`);
    const [last] = weeklyData.inputs;
    await fs.mkdir(path.join(warehouse, bucketPrefix(weeklyData.bucket)), { recursive: true });
    await linkOrCopy(path.join(weeklyData.warehouse, last!.key), path.join(warehouse, last!.key));
    return withNewParts('recent', warehouse, weeklyData.bucket, weeklyData.files[0]!, true);
  };
  /** Last week's output (already in the bucket's directory) plus the generator's next parts, recorded as `name`. */
  const withNewParts = async (
    name: 'weekly' | 'recent',
    warehouse: string,
    b: BucketRef,
    last: { name: string; size: number },
    recentIngest: boolean,
  ): Promise<BucketData> => {
    const dir = path.join(warehouse, bucketPrefix(b));
    const spec = { dir, cell: b.cell, year: b.year, rows: opts.rows, parts: opts.parts, duplicateFraction: DUPLICATE_FRACTION, seed: SEED, recentIngest };
    const added = await writeStacParts(session, spec, opts.parts, WEEKLY_NEW_PARTS);
    const [base] = await session.rows(
      `SELECT sum(total_uncompressed_size) AS bytes, sum(row_group_num_rows) FILTER (WHERE column_id = 0) AS rows
       FROM parquet_metadata(${sqlString(path.join(dir, last.name))})`,
    );
    const files = [last, ...added.files];
    const data: BucketData = {
      files,
      rowsIn: Number(base?.rows ?? 0) + added.rowsPerPart * WEEKLY_NEW_PARTS,
      rowsOut: added.newPerPart * (opts.parts + WEEKLY_NEW_PARTS),
      bytesOnDisk: files.reduce((n, f) => n + f.size, 0),
      uncompressedBytes: Number(base?.bytes ?? 0) + added.uncompressedBytes,
      warehouse,
      bucket: b,
      inputs: files.map((f) => ({ key: `${bucketPrefix(b)}/${f.name}`, size: f.size })),
    };
    manifest.buckets[name] = { rows: opts.rows, parts: opts.parts, seed: SEED, data };
    await fs.writeFile(manifestFile, JSON.stringify(manifest, null, 2));
    return data;
  };
  const out: BenchData = { root };
  try {
    if (opts.heavy || opts.memory || opts.weekly || opts.recent) out.heavy = await bucket('heavy', 'bench_heavy', opts.rows);
    if ((opts.weekly || opts.recent) && out.heavy) out.weekly = await weekly(out.heavy);
    if (opts.recent && out.weekly) out.recent = await recent(out.weekly);
    if (opts.memory && out.heavy) {
      const budget = opts.memoryCaseMb * 1024 * 1024;
      if (out.heavy.uncompressedBytes < MEMORY_CASE_FACTOR * budget) {
        const perRow = out.heavy.uncompressedBytes / out.heavy.rowsIn;
        const rows = Math.ceil((MEMORY_CASE_FACTOR * 1.05 * budget) / perRow / opts.parts) * opts.parts;
        out.memory = await bucket('memory', 'bench_memory', rows);
      }
    }
  } finally {
    session.close();
    await fs.rm(path.join(root, 'gen-spill'), { recursive: true, force: true });
  }
  if (opts.tiny) {
    const dir = path.join(source, 'tiny-templates');
    await fs.mkdir(dir, { recursive: true });
    out.tinyTemplates = await writeTinyTemplates(dir);
  }
  return out;
}

/** A fresh warehouse with the bucket's inputs hard-linked in, for one run that may delete them. */
export async function linkBucketInto(data: BucketData, warehouse: string): Promise<void> {
  for (const input of data.inputs) {
    const target = path.join(warehouse, input.key);
    await fs.mkdir(path.dirname(target), { recursive: true });
    await linkOrCopy(path.join(data.warehouse, input.key), target);
  }
}

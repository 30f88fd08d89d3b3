/**
 * Many tiny buckets for the orchestration case: two small part files (overlapping ids, 7 rows → 5) per
 * year are written once and hard-linked into every bucket of that year, so thousands of buckets cost
 * seconds to lay out. They carry no `grid_partition` column (readers take it from the partition), so
 * one file fits every cell and its rows match the partition of every bucket it lands in.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { createPrng, makeSampleRow, writePartFile, type SampleRow } from '../client/demo/sample-warehouse';
import { openDuckSession } from '../activities/compaction/duckdb-session';
import type { BucketRef } from '../workflows/contract';
import { bucketPrefix } from '../workflows/contract';

export const TINY_ROWS_IN = 7;
export const TINY_ROWS_OUT = 5;
const TINY_PARTS = ['part_00000_a.parquet', 'part_00001_b.parquet'] as const;

const TINY_YEARS = 10;
const FIRST_YEAR = 2015;

/** Writes the two template parts of each year under `dir/<year>/`; returns their paths. */
export async function writeTinyTemplates(dir: string): Promise<string[]> {
  const rng = createPrng(11);
  // Our own session: without one, writePartFile leaves a spill directory behind in the OS temp dir.
  const spill = path.join(dir, '.spill');
  const session = await openDuckSession({ tempDir: spill });
  const written: string[] = [];
  try {
    for (let year = FIRST_YEAR; year < FIRST_YEAR + TINY_YEARS; year++) {
      const row = (id: string, day: number): SampleRow =>
        makeSampleRow(rng, { id, cell: 'tiny', year, updated: new Date(Date.UTC(2025, 0, day)) });
      const [a, b] = TINY_PARTS.map((name) => path.join(dir, String(year), name)) as [string, string];
      await fs.mkdir(path.dirname(a), { recursive: true });
      const opts = { session, omitColumns: ['grid_partition'] };
      await writePartFile(a, [row('t1', 1), row('t2', 1), row('t3', 1)], opts);
      await writePartFile(b, [row('t2', 2), row('t3', 2), row('t4', 2), row('t5', 2)], opts);
      written.push(a, b);
    }
  } finally {
    session.close();
    await fs.rm(spill, { recursive: true, force: true });
  }
  return written;
}

/** The i-th tiny bucket: 10 years per cell, cells numbered. */
export function tinyBucket(i: number): BucketRef {
  return { cell: `tiny${String(Math.floor(i / TINY_YEARS)).padStart(5, '0')}`, year: FIRST_YEAR + (i % TINY_YEARS) };
}

/** The templates of one year (writeTinyTemplates puts them in a folder named after it). */
export function templatesOf(templates: readonly string[], year: number): string[] {
  return templates.filter((t) => path.basename(path.dirname(t)) === String(year));
}

/** Lays out `count` tiny buckets in `warehouse` as hard links to their year's templates (copies across devices). */
export async function layOutTinyBuckets(warehouse: string, templates: readonly string[], count: number): Promise<BucketRef[]> {
  const buckets: BucketRef[] = [];
  for (let i = 0; i < count; i++) {
    const b = tinyBucket(i);
    const dir = path.join(warehouse, bucketPrefix(b));
    await fs.mkdir(dir, { recursive: true });
    for (const t of templatesOf(templates, b.year)) await linkOrCopy(t, path.join(dir, path.basename(t)));
    buckets.push(b);
  }
  return buckets;
}

/** Compaction deletes its inputs; a hard link lets a run delete its own name and leave the source intact. */
export async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await fs.link(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await fs.copyFile(from, to);
  }
}

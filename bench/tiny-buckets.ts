/**
 * Many tiny buckets for the orchestration case: two small part files (overlapping ids, 7 rows → 5) are
 * written once and hard-linked into every bucket, so thousands of buckets cost seconds to lay out.
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

/** Writes the two template parts under `dir`; returns their paths. */
export async function writeTinyTemplates(dir: string): Promise<string[]> {
  const rng = createPrng(11);
  const row = (id: string, day: number): SampleRow =>
    makeSampleRow(rng, { id, cell: 'tiny', year: 2024, updated: new Date(Date.UTC(2025, 0, day)) });
  const a = path.join(dir, TINY_PARTS[0]);
  const b = path.join(dir, TINY_PARTS[1]);
  // Our own session: without one, writePartFile leaves a spill directory behind in the OS temp dir.
  const spill = path.join(dir, '.spill');
  const session = await openDuckSession({ tempDir: spill });
  try {
    await writePartFile(a, [row('t1', 1), row('t2', 1), row('t3', 1)], { session });
    await writePartFile(b, [row('t2', 2), row('t3', 2), row('t4', 2), row('t5', 2)], { session });
  } finally {
    session.close();
    await fs.rm(spill, { recursive: true, force: true });
  }
  return [a, b];
}

/** The i-th tiny bucket: 10 years per cell, cells numbered. */
export function tinyBucket(i: number): BucketRef {
  return { cell: `tiny${String(Math.floor(i / 10)).padStart(5, '0')}`, year: 2015 + (i % 10) };
}

/** Lays out `count` tiny buckets in `warehouse` as hard links to the templates (copies across devices). */
export async function layOutTinyBuckets(warehouse: string, templates: readonly string[], count: number): Promise<BucketRef[]> {
  const buckets: BucketRef[] = [];
  for (let i = 0; i < count; i++) {
    const b = tinyBucket(i);
    const dir = path.join(warehouse, bucketPrefix(b));
    await fs.mkdir(dir, { recursive: true });
    for (const t of templates) await linkOrCopy(t, path.join(dir, path.basename(t)));
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

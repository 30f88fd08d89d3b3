/**
 * The hive layout: which keys are data files, which are compaction artifacts, and what they are named.
 * Everything that does not match is never touched and never registered.
 */
import type { BucketRef } from '../../workflows/contract';
import { bucketPrefix } from '../../workflows/contract';

/** Control objects of this tool (plans, lock object) live here; no data file can match it. */
export const CONTROL_PREFIX = '_earthcatalog_compaction';

const DATA_FILE = /^grid_partition=([^/=]+)\/year=(\d{4})\/([^/]+\.parquet)$/;
const TEMP_ARTIFACT = /^\.earthcatalog-tmp-[A-Za-z0-9_-]+\.parquet\.[A-Za-z0-9_-]+$/;

export interface DataFileKey {
  bucket: BucketRef;
  name: string;
}

/** Parses a key as a data file of the layout, or returns undefined. Names starting with '.' or '_' are hidden. */
export function parseDataFileKey(key: string): DataFileKey | undefined {
  const m = DATA_FILE.exec(key);
  if (!m) return undefined;
  const name = m[3]!;
  if (name.startsWith('.') || name.startsWith('_')) return undefined;
  return { bucket: { cell: m[1]!, year: Number(m[2]) }, name };
}

export function bucketKey(b: BucketRef): string {
  return bucketPrefix(b);
}

/** The output of one plan for one bucket: the bucket is in the path, the plan in the name. */
export function outputKeyFor(b: BucketRef, planId: string): string {
  return `${bucketPrefix(b)}/compacted_${planId}.parquet`;
}

/** Name of a temporary file a writer may leave behind in the bucket directory. */
export function tempNameFor(planId: string, tag: string): string {
  return `.earthcatalog-tmp-${planId}.parquet.${tag}`;
}

/** True for temporary artifacts of any compaction (safe to sweep under the warehouse lock). */
export function isTempArtifactName(name: string): boolean {
  return TEMP_ARTIFACT.test(name);
}

/** Rejects keys that could escape the warehouse root. */
export function assertSafeKey(key: string): void {
  if (key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '.') || key.includes('\\') || key.includes('\0')) {
    throw new Error(`key escapes the warehouse root: ${JSON.stringify(key)}`);
  }
}

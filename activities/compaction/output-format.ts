/** How outputs (and the chunks appended into them) are written: codec, row groups, key-value metadata. */
import { sqlString } from './duckdb-session';
import type { KvEntry } from './output-metadata';

/** Rows per row group: DuckDB's own default, a good size for predicate pushdown and readers. */
export const OUTPUT_ROW_GROUP_ROWS = 122_880;

/** DuckDB's floor for ROW_GROUP_SIZE (one vector). */
export const MIN_ROW_GROUP_ROWS = 2048;

export interface RowGroupSize {
  rows: number;
  bytes: number;
}

/**
 * Largest output row group (uncompressed): what the smallest supported budget (256 MB, a 128 MB DuckDB
 * limit) reads back. Next week's compaction reads this file again, maybe on a smaller worker: a 4M-row
 * bucket written at a 2 GB budget in 128 MB row groups could not be compacted again at 512 MB (DuckDB
 * ran out of memory decoding one row group).
 */
const MAX_OUTPUT_ROW_GROUP_BYTES = 16 * 1024 * 1024;

/**
 * Output row groups: at most memory/8 (the writer buffers one per thread) and MAX_OUTPUT_ROW_GROUP_BYTES
 * uncompressed, and at most DuckDB's default row count.
 */
export function outputRowGroup(memoryLimitBytes: number, rowBytes: number): RowGroupSize {
  const bytes = Math.floor(Math.min(MAX_OUTPUT_ROW_GROUP_BYTES, memoryLimitBytes / 8));
  return { bytes, rows: Math.max(MIN_ROW_GROUP_ROWS, Math.min(OUTPUT_ROW_GROUP_ROWS, Math.floor(bytes / rowBytes))) };
}

/**
 * Write options of an output or a chunk of one. Given the `rows` the statement writes, row groups come
 * out even (evenRowGroupRows).
 */
export function finalWriteOptions(rg: RowGroupSize, kv: readonly KvEntry[], rows?: number): string {
  const groupRows = rows === undefined ? rg.rows : evenRowGroupRows(rows, rg.rows);
  return `FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${groupRows}, ROW_GROUP_SIZE_BYTES ${rg.bytes}${kvClause(kv)}`;
}

/**
 * ROW_GROUP_SIZE for an ordered write of `rows` rows whose last row group is not a sliver. DuckDB hands
 * the writer a vector (MIN_ROW_GROUP_ROWS) at a time and closes a row group on the vector that reaches
 * ROW_GROUP_SIZE or ROW_GROUP_SIZE_BYTES, so every row group but the last is a whole number of vectors:
 * 8,193 rows at 8,192 were a row group of 8,192 and one of a single row. So: the largest whole number
 * of vectors within `cap`, down to half of that, whose last row group holds at least a quarter of the
 * others. Within, not up to the next vector: `cap` comes from the byte limit and an estimate of a row's
 * bytes, and when both limits fall in the same vector either may close it (a soak: 14,492 rows at a cap
 * of 14,351 became 14,336 + 156, the byte limit closing the group a vector before the row limit would).
 */
export function evenRowGroupRows(rows: number, cap: number): number {
  const most = oneRowGroupRows(cap) / MIN_ROW_GROUP_ROWS;
  if (rows <= most * MIN_ROW_GROUP_ROWS) return cap;
  for (let vectors = most; vectors >= Math.ceil(most / 2); vectors--) {
    const size = vectors * MIN_ROW_GROUP_ROWS;
    const last = rows % size;
    if (last === 0 || last * 4 >= size) return size;
  }
  return most * MIN_ROW_GROUP_ROWS;
}

/** The most rows an ordered write at `cap` puts into one row group (evenRowGroupRows): whole vectors within it. */
export function oneRowGroupRows(cap: number): number {
  return Math.max(1, Math.floor(cap / MIN_ROW_GROUP_ROWS)) * MIN_ROW_GROUP_ROWS;
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** KV_METADATA clause; values as hex BLOBs so any bytes (and any quote) survive exactly. */
function kvClause(kv: readonly KvEntry[]): string {
  if (!kv.length) return '';
  return `, KV_METADATA {${kv.map((e) => `${sqlString(e.key)}: from_hex(${sqlString(hexOf(e.value))})`).join(', ')}}`;
}

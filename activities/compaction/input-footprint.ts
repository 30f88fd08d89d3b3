/** The size of a bucket's inputs, from their footers: what picks the write path and sizes its buffers. */
import { sqlStringList, toNumber, type DuckSession } from './duckdb-session';
import type { LocalInput } from './input-schema';

export interface InputFootprint {
  /** Rows of all inputs, from their footers. */
  rows: number;
  /** Estimated in-memory bytes of one row: Parquet's uncompressed size plus DuckDB's per-value header. */
  rowBytes: number;
}

/** What the footers say about the inputs' size, in one statement (the cheapest metadata query). */
export async function inputFootprint(session: DuckSession, inputs: readonly LocalInput[]): Promise<InputFootprint> {
  const [r] = await session.rows(
    `SELECT coalesce(sum(total_uncompressed_size), 0) AS bytes, count(DISTINCT path_in_schema) AS columns,
            coalesce(sum(row_group_num_rows) FILTER (WHERE column_id = 0), 0) AS rows
     FROM parquet_metadata(${sqlStringList(inputs.map((i) => i.path))})`,
  );
  const rows = toNumber(r?.rows);
  const rowBytes = Math.max(64, Math.ceil(toNumber(r?.bytes) / Math.max(1, rows)) + 16 * toNumber(r?.columns));
  return { rows, rowBytes };
}

export interface LargestRowGroup {
  key: string;
  rowGroup: number;
  /** Uncompressed bytes of the row group's columns. */
  bytes: number;
  rows: number;
}

/**
 * The input row group with the most uncompressed bytes. DuckDB decodes a row group's column chunks
 * whole, so one near the memory limit fails a bucket whatever its size on disk (writers with one row
 * group per file make such row groups).
 */
export async function largestRowGroup(session: DuckSession, inputs: readonly LocalInput[]): Promise<LargestRowGroup | undefined> {
  const [r] = await session.rows(
    `SELECT file_name, row_group_id, sum(total_uncompressed_size) AS bytes, any_value(row_group_num_rows) AS rows
     FROM parquet_metadata(${sqlStringList(inputs.map((i) => i.path))})
     GROUP BY file_name, row_group_id ORDER BY bytes DESC, file_name, row_group_id LIMIT 1`,
  );
  const input = r && inputs.find((i) => i.path === r.file_name);
  return input ? { key: input.key, rowGroup: toNumber(r.row_group_id), bytes: toNumber(r.bytes), rows: toNumber(r.rows) } : undefined;
}

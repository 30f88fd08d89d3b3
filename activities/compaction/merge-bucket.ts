/**
 * The DuckDB side of compacting one bucket: pick the winning row of every id, write them sorted into
 * one Parquet file, and compute the id digests that verification compares.
 *
 * Memory: a window function over the whole wide bucket (QUALIFY row_number() OVER (PARTITION BY id))
 * holds wide rows per partition and fails under a small memory_limit. Instead the winners are chosen
 * from NARROW columns only (id, updated, row position) with spillable aggregates and joins, stored in a
 * table (which spills to the temp directory) and ranked in output order there; the wide rows are read once more and joined to
 * the ranks by position (see writeOrdered for how they are put in order within the memory limit).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { BadBucketDataError } from './bucket-errors';
import { sqlIdent, sqlString, sqlStringList, type DuckSession } from './duckdb-session';
import type { InputSchema, LocalInput } from './input-schema';
import { anyHasColumn } from './input-schema';
import type { KvEntry } from './output-metadata';

/** Rows per row group: DuckDB's own default, a good size for predicate pushdown and readers. */
export const OUTPUT_ROW_GROUP_ROWS = 122_880;

/** Row position: file index (plan order) in the high bits, row number in the file in the low 40. */
const POSITION_SHIFT = 40;

export interface WinnerStats {
  rowsIn: number;
  rowsOut: number;
}

function readInputs(inputs: readonly LocalInput[]): string {
  return `read_parquet(${sqlStringList(inputs.map((i) => i.path))}, union_by_name = true, hive_partitioning = false, filename = true, file_row_number = true)`;
}

function toNumber(v: unknown): number {
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'number') return v;
  return Number(v ?? 0);
}

/**
 * Builds table `ordered(pos, rank)`: one row per id, the row with the greatest `updated` (NULL loses to
 * any value; among equals the later input in plan order, then the greater row number in that file),
 * ranked 0..n-1 in output order (platform, datetime, id). Only narrow columns are read here.
 */
export async function computeWinners(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
): Promise<WinnerStats> {
  const col = (name: string, type: string): string =>
    anyHasColumn(schemas, name) ? `r.${sqlIdent(name)}` : `CAST(NULL AS ${type})`;
  await session.exec('DROP TABLE IF EXISTS input_files; DROP TABLE IF EXISTS narrow; DROP TABLE IF EXISTS winners; DROP TABLE IF EXISTS ordered');
  await session.exec('CREATE TABLE input_files (fi BIGINT, filename VARCHAR)');
  await session.exec(
    `INSERT INTO input_files VALUES ${inputs.map((inp, i) => `(${i}, ${sqlString(inp.path)})`).join(', ')}`,
  );
  await session.exec(
    `CREATE TABLE narrow AS
       SELECT r.id AS id, ${col('updated', 'TIMESTAMPTZ')} AS updated, ${col('platform', 'VARCHAR')} AS platform,
              ${col('datetime', 'TIMESTAMPTZ')} AS datetime, (f.fi << ${POSITION_SHIFT}) | r.file_row_number AS pos
       FROM ${readInputs(inputs)} r JOIN input_files f ON f.filename = r.filename`,
  );
  const nullIds = await session.rows(
    `SELECT f.filename AS path, count(*) AS n FROM narrow n JOIN input_files f ON f.fi = n.pos >> ${POSITION_SHIFT}
     WHERE n.id IS NULL GROUP BY f.filename ORDER BY f.filename`,
  );
  if (nullIds.length) {
    const keys = nullIds.map((r) => inputs.find((i) => i.path === r.path)?.key ?? String(r.path));
    const detail = nullIds.map((r, i) => `${keys[i]} (${toNumber(r.n)} rows)`).join(', ');
    throw new BadBucketDataError(`rows with a null 'id' cannot be deduplicated: ${detail}`, keys);
  }
  await session.exec(
    `CREATE TABLE winners AS
       WITH best AS (SELECT id, max(updated) AS updated FROM narrow GROUP BY id)
       SELECT max(n.pos) AS pos
       FROM narrow n JOIN best b ON n.id = b.id AND n.updated IS NOT DISTINCT FROM b.updated
       GROUP BY n.id`,
  );
  // ids are unique among winners, so this order is total: the same rank on every retry.
  await session.exec(
    `CREATE TABLE ordered AS
       SELECT n.pos AS pos,
              row_number() OVER (ORDER BY n.platform ASC NULLS LAST, n.datetime ASC NULLS LAST, n.id ASC) - 1 AS rank
       FROM narrow n JOIN winners w ON n.pos = w.pos`,
  );
  const [stats] = await session.rows(
    'SELECT (SELECT count(*) FROM narrow) AS rows_in, (SELECT count(*) FROM ordered) AS rows_out',
  );
  await session.exec('DROP TABLE narrow; DROP TABLE winners');
  return { rowsIn: toNumber(stats?.rows_in), rowsOut: toNumber(stats?.rows_out) };
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** KV_METADATA clause; values as hex BLOBs so any bytes (and any quote) survive exactly. */
function kvClause(kv: readonly KvEntry[]): string {
  if (!kv.length) return '';
  return `, KV_METADATA {${kv.map((e) => `${sqlString(e.key)}: from_hex(${sqlString(hexOf(e.value))})`).join(', ')}}`;
}

/** Estimated in-memory bytes of one row: Parquet's uncompressed size plus DuckDB's per-value header. */
export async function estimateRowBytes(session: DuckSession, inputs: readonly LocalInput[]): Promise<number> {
  let bytes = 0;
  let rows = 0;
  let columns = 0;
  for (const input of inputs) {
    const [r] = await session.rows(
      `SELECT coalesce(sum(total_uncompressed_size), 0) AS bytes, count(DISTINCT path_in_schema) AS columns,
              (SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata(${sqlString(input.path)})) AS rows
       FROM parquet_metadata(${sqlString(input.path)})`,
    );
    bytes += toNumber(r?.bytes);
    rows += toNumber(r?.rows);
    columns = Math.max(columns, toNumber(r?.columns));
  }
  return Math.max(64, Math.ceil(bytes / Math.max(1, rows)) + 16 * columns);
}

export interface WritePlan {
  /** In-memory bytes per row (estimateRowBytes). */
  rowBytes: number;
  /** Largest amount of wide rows one DuckDB sort is given at once. */
  sortBudgetBytes: number;
  /** Upper bound of an output row group's uncompressed size (the writer buffers one per thread). */
  rowGroupBytes: number;
  /** Fan-out of the range partitioning when a bucket does not fit one sort. */
  fanout: number;
  /** Private directory for sorted chunk files. */
  workDir: string;
  /** Progress of the partitioned path: chunks written so far of the total. */
  onChunk?: (done: number, total: number) => void;
}

/** DuckDB's floor for ROW_GROUP_SIZE (one vector). */
const MIN_ROW_GROUP_ROWS = 2048;

function rowGroupRows(plan: WritePlan): number {
  return Math.max(MIN_ROW_GROUP_ROWS, Math.min(OUTPUT_ROW_GROUP_ROWS, Math.floor(plan.rowGroupBytes / plan.rowBytes)));
}

function winnerRows(inputs: readonly LocalInput[], withRank: boolean): string {
  return `SELECT ${withRank ? 'o.rank AS __ec_rank, ' : ''}r.* EXCLUDE (filename, file_row_number)
          FROM ${readInputs(inputs)} r
          JOIN input_files f ON f.filename = r.filename
          JOIN ordered o ON o.pos = (f.fi << ${POSITION_SHIFT}) | r.file_row_number`;
}

/**
 * Writes the winners in rank order, all columns of the union (input order of first appearance).
 *
 * DuckDB 1.5's sort does not spill wide string payloads reliably: sorting rows worth more than about a
 * quarter of memory_limit fails with "Out of Memory". So a bucket that fits `sortBudgetBytes` is sorted
 * in one COPY; a larger one is range-partitioned by rank in tables that spill (filter scans, which
 * stream), each partition small enough is sorted into a chunk file, and the chunk files are
 * concatenated in rank order with insertion order preserved, so no statement ever sorts more than
 * the budget. Every path yields the same rows in the same order.
 */
export async function writeOrdered(
  session: DuckSession,
  inputs: readonly LocalInput[],
  rowsOut: number,
  outFile: string,
  kv: readonly KvEntry[],
  plan: WritePlan,
): Promise<void> {
  const rg = rowGroupRows(plan);
  const writeOptions = `FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${rg}`;
  const chunkRows = Math.max(1, Math.floor(plan.sortBudgetBytes / plan.rowBytes));
  if (rowsOut <= chunkRows) {
    await session.exec(
      `COPY (${winnerRows(inputs, false)} ORDER BY o.rank) TO ${sqlString(outFile)}
         (${writeOptions}, ROW_GROUP_SIZE_BYTES ${Math.floor(plan.rowGroupBytes)}${kvClause(kv)})`,
    );
    await session.exec('DROP TABLE ordered');
    return;
  }

  const chunkDir = path.join(plan.workDir, 'chunks');
  await fs.mkdir(chunkDir, { recursive: true });
  const split = (lo: number, hi: number): [number, number][] => {
    const parts = Math.min(plan.fanout, Math.ceil((hi - lo) / chunkRows));
    const width = Math.ceil((hi - lo) / parts);
    const out: [number, number][] = [];
    for (let a = lo; a < hi; a += width) out.push([a, Math.min(hi, a + width)]);
    return out;
  };
  const leaves = (lo: number, hi: number): number =>
    hi - lo <= chunkRows ? 1 : split(lo, hi).reduce((s, [a, b]) => s + leaves(a, b), 0);
  const totalChunks = leaves(0, rowsOut);
  const chunks: string[] = [];
  let tableSeq = 0;
  // Ranks are dense (0..rowsOut-1), so a rank range's row count is known without counting.
  const partition = async (table: string, lo: number, hi: number): Promise<void> => {
    if (hi - lo <= chunkRows) {
      const file = path.join(chunkDir, `chunk_${String(chunks.length).padStart(6, '0')}.parquet`);
      await session.exec(
        `COPY (SELECT * EXCLUDE (__ec_rank) FROM ${table} ORDER BY __ec_rank) TO ${sqlString(file)}
           (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${rg}, ROW_GROUP_SIZE_BYTES ${Math.floor(plan.rowGroupBytes)})`,
      );
      await session.exec(`DROP TABLE ${table}`);
      chunks.push(file);
      plan.onChunk?.(chunks.length, totalChunks);
      return;
    }
    const children: { table: string; lo: number; hi: number }[] = [];
    for (const [a, b] of split(lo, hi)) {
      const child = { table: `part_${++tableSeq}`, lo: a, hi: b };
      await session.exec(
        `CREATE TABLE ${child.table} AS SELECT * FROM ${table} WHERE __ec_rank >= ${child.lo} AND __ec_rank < ${child.hi}`,
      );
      children.push(child);
    }
    await session.exec(`DROP TABLE ${table}`);
    for (const c of children) await partition(c.table, c.lo, c.hi);
  };
  await session.exec(`CREATE TABLE part_0 AS ${winnerRows(inputs, true)}`);
  await session.exec('DROP TABLE ordered');
  await partition('part_0', 0, rowsOut);

  // Concatenation in list order: with insertion order preserved DuckDB reads the files in the given
  // order and each file front to back, and the writer keeps that order.
  await session.exec('SET preserve_insertion_order = true');
  try {
    await session.exec(
      `COPY (SELECT * FROM read_parquet(${sqlStringList(chunks)}, hive_partitioning = false)) TO ${sqlString(outFile)}
         (${writeOptions}${kvClause(kv)})`,
    );
  } finally {
    await session.exec('SET preserve_insertion_order = false');
  }
  for (const c of chunks) await fs.rm(c, { force: true });
}

/** What verification compares: how many distinct ids, and an order-independent digest of them. */
export interface IdDigest {
  rows: number;
  distinctIds: number;
  idHashSum: string;
}

/** Digest of the distinct ids of the inputs (computed from the files, not from the winners table). */
export async function inputIdDigest(session: DuckSession, inputs: readonly LocalInput[]): Promise<IdDigest> {
  const [r] = await session.rows(
    `WITH ids AS (SELECT id, count(*) AS n FROM read_parquet(${sqlStringList(inputs.map((i) => i.path))},
                    union_by_name = true, hive_partitioning = false) GROUP BY id)
     SELECT coalesce(sum(n), 0) AS rows, count(id) AS distinct_ids,
            coalesce(sum(hash(id)::HUGEINT) FILTER (WHERE id IS NOT NULL), 0) AS h FROM ids`,
  );
  return { rows: toNumber(r?.rows), distinctIds: toNumber(r?.distinct_ids), idHashSum: String(r?.h ?? 0) };
}

/** Digest of a written output; `rows` counts rows, which must equal its distinct ids. */
export async function outputIdDigest(session: DuckSession, file: string): Promise<IdDigest> {
  const [r] = await session.rows(
    `SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids,
            coalesce(sum(hash(id)::HUGEINT), 0) AS h
     FROM (SELECT id FROM read_parquet(${sqlString(file)}, hive_partitioning = false))`,
  );
  return { rows: toNumber(r?.rows), distinctIds: toNumber(r?.distinct_ids), idHashSum: String(r?.h ?? 0) };
}

/** How many distinct ids of the given inputs are absent from the output (0 when it covers them). */
export async function idsMissingFromOutput(
  session: DuckSession,
  inputs: readonly LocalInput[],
  file: string,
): Promise<number> {
  const [r] = await session.rows(
    `SELECT count(*) AS n FROM
       (SELECT DISTINCT id FROM read_parquet(${sqlStringList(inputs.map((i) => i.path))}, union_by_name = true, hive_partitioning = false)) i
     ANTI JOIN (SELECT id FROM read_parquet(${sqlString(file)}, hive_partitioning = false)) o ON i.id = o.id`,
  );
  return toNumber(r?.n);
}

/** Key-value metadata of a Parquet file, raw bytes, in file order. */
export async function readKvMetadata(session: DuckSession, file: string): Promise<KvEntry[]> {
  const rows = await session.rows(`SELECT key, value FROM parquet_kv_metadata(${sqlString(file)})`);
  return rows.map((r) => ({
    key: Buffer.from(r.key as Uint8Array).toString('utf8'),
    value: new Uint8Array(r.value as Uint8Array),
  }));
}

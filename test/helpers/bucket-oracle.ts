/**
 * What a compacted bucket must contain, computed independently of the engine: every input row is read
 * into JS (DuckDB only decodes the Parquet; no SQL dedup, join or sort), then deduplicated and sorted
 * in plain JS by the SPEC's rules. Used by the engine's tests and by end-to-end tests.
 */
import assert from 'node:assert/strict';
import { DuckDBInstance, type DuckDBValue } from '@duckdb/node-api';

/** A cell in a comparable, printable form (timestamps as epoch nanoseconds, bytes as 'hex:..'). */
export type Cell = null | string | number | bigint | boolean;
export type Row = Record<string, Cell>;

export interface ParquetRows {
  columns: string[];
  rows: Row[];
}

interface HasBytes {
  bytes: Uint8Array;
}

function canonical(v: DuckDBValue): Cell {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v;
  const o = v as unknown as Record<string, unknown>;
  // Nanoseconds, so that two versions of an id less than a microsecond apart still compare as they are.
  if ('micros' in o && typeof o.micros === 'bigint') return o.micros * 1000n;
  if ('millis' in o && typeof o.millis === 'bigint') return o.millis * 1_000_000n;
  if ('nanos' in o && typeof o.nanos === 'bigint') return o.nanos;
  if ('seconds' in o && typeof o.seconds === 'bigint') return o.seconds * 1_000_000_000n;
  if ('bytes' in o && o.bytes instanceof Uint8Array) return `hex:${Buffer.from((o as unknown as HasBytes).bytes).toString('hex')}`;
  return String(v);
}

async function withDuck<T>(fn: (run: (sql: string) => Promise<Record<string, DuckDBValue>[]>) => Promise<T>): Promise<T> {
  const instance = await DuckDBInstance.create(':memory:', { threads: '1' });
  const conn = await instance.connect();
  try {
    await conn.run('SET enable_geoparquet_conversion = false');
    return await fn(async (sql) => (await conn.runAndReadAll(sql)).getRowObjects());
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

const lit = (s: string): string => `'${s.replace(/'/g, "''")}'`;

/** All rows of one Parquet file, in file order, with its column names in file order. */
export async function readParquetRows(file: string): Promise<ParquetRows> {
  return withDuck(async (run) => {
    const cols = await run(`DESCRIBE SELECT * FROM read_parquet(${lit(file)}, hive_partitioning = false)`);
    const columns = cols.map((c) => String(c.column_name));
    const raw = await run(
      `SELECT *, file_row_number AS __oracle_row FROM read_parquet(${lit(file)}, hive_partitioning = false, file_row_number = true)`,
    );
    // Order by row number in JS, so the result does not depend on DuckDB's scan order.
    raw.sort((a, b) => Number(a.__oracle_row) - Number(b.__oracle_row));
    const rows = raw.map((r) => {
      const row: Row = {};
      for (const c of columns) row[c] = canonical(r[c] ?? null);
      return row;
    });
    return { columns, rows };
  });
}

/** The rows of a compacted output, in file order, to compare with expectedBucketRows. */
export async function readOutputRows(file: string): Promise<Row[]> {
  return (await readParquetRows(file)).rows;
}

function utf8Compare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Ascending, NULLs last; strings by UTF-8 bytes (DuckDB's binary collation). */
function compareCells(a: Cell, b: Cell): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1;
  if (typeof a === 'string' && typeof b === 'string') return utf8Compare(a, b);
  if (typeof a === 'number' && typeof b === 'number') return Math.sign(a - b);
  if (typeof a === 'boolean' || typeof b === 'boolean') return Number(a) - Number(b);
  if (typeof a === 'string' || typeof b === 'string') return utf8Compare(String(a), String(b));
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * The rows a compaction of `files` (in plan order) must produce: one per id — greatest `updated`,
 * NULL losing, ties to the later file then the later row — sorted by (platform, datetime, id), every
 * column of the union in order of first appearance, missing values null.
 */
export async function expectedBucketRows(files: readonly string[]): Promise<Row[]> {
  const columns: string[] = [];
  const best = new Map<string, { row: Row; file: number; index: number }>();
  for (let f = 0; f < files.length; f++) {
    const { columns: cols, rows } = await readParquetRows(files[f]!);
    for (const c of cols) if (!columns.includes(c)) columns.push(c);
    rows.forEach((row, index) => {
      const id = row.id;
      if (id === null || id === undefined) throw new Error(`oracle: null id in ${files[f]}`);
      const key = String(id);
      const held = best.get(key);
      if (!held) return void best.set(key, { row, file: f, index });
      const byUpdated = compareUpdated(row.updated ?? null, held.row.updated ?? null);
      // Later file / later row wins ties: (f, index) only grows, so a tie always replaces.
      if (byUpdated >= 0) best.set(key, { row, file: f, index });
    });
  }
  const out = [...best.values()].map(({ row }) => {
    const full: Row = {};
    for (const c of columns) full[c] = row[c] ?? null;
    return full;
  });
  out.sort(
    (a, b) =>
      compareCells(a.platform ?? null, b.platform ?? null) ||
      compareCells(a.datetime ?? null, b.datetime ?? null) ||
      compareCells(a.id ?? null, b.id ?? null),
  );
  return out;
}

/** > 0 when `a` is newer than `b`; NULL is older than any value. */
function compareUpdated(a: Cell, b: Cell): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1;
  return compareCells(a, b);
}

/** Asserts the same rows in the same order, naming the first differing row and column. */
export function assertSameRows(actual: readonly Row[], expected: readonly Row[], what = 'rows'): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} rows, expected ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.deepEqual(Object.keys(a), Object.keys(e), `${what}: columns of row ${i} differ`);
    for (const k of Object.keys(e)) {
      assert.equal(compareCellsEqual(a[k]!, e[k]!), true, `${what}: row ${i} (id ${String(e.id)}) column ${k}: ${String(a[k])} != ${String(e[k])}`);
    }
  }
}

function compareCellsEqual(a: Cell, b: Cell): boolean {
  if (a === null || b === null) return a === b;
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b) || a === b;
  return compareCells(a, b) === 0;
}

/** Footer facts tests check: key-value metadata (text, in file order), row groups, codecs. */
export interface ParquetFacts {
  kv: [string, string][];
  rowGroupRows: number[];
  codecs: Set<string>;
  rows: number;
}

export async function parquetFacts(file: string): Promise<ParquetFacts> {
  return withDuck(async (run) => {
    const kvRows = await run(`SELECT key, value FROM parquet_kv_metadata(${lit(file)})`);
    const kv = kvRows.map(
      (r) =>
        [
          Buffer.from((r.key as unknown as HasBytes).bytes).toString('utf8'),
          Buffer.from((r.value as unknown as HasBytes).bytes).toString('utf8'),
        ] as [string, string],
    );
    const groups = await run(
      `SELECT row_group_id, any_value(row_group_num_rows) AS n FROM parquet_metadata(${lit(file)}) GROUP BY row_group_id ORDER BY row_group_id`,
    );
    const codecs = await run(`SELECT DISTINCT compression FROM parquet_metadata(${lit(file)})`);
    const rowGroupRows = groups.map((g) => Number(g.n));
    return {
      kv,
      rowGroupRows,
      codecs: new Set(codecs.map((c) => String(c.compression))),
      rows: rowGroupRows.reduce((s, n) => s + n, 0),
    };
  });
}

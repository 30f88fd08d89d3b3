/**
 * Inputs that are already in output order need not be scattered. In the weekly steady state a heavy
 * bucket is last week's compacted file (sorted, deduplicated) plus a little new ingest: the
 * out-of-core write then scatters only the new ingest, and reads each rank range's rows of the sorted
 * file as one slice of consecutive rows (`file_row_number BETWEEN lo AND hi`, which skips the row
 * groups outside it).
 *
 * Correctness never depends on an input being sorted: a slice is bounded by the smallest and largest
 * row number of the file's winners in the range, and joined to their ranks, so it yields exactly those
 * rows whatever order the file is in. Sortedness only decides whether slicing is cheaper than
 * scattering (a shuffled file's slices would each span nearly the whole file).
 */
import { sqlIdent, sqlString, toNumber, type DuckSession } from './duckdb-session';
import { anyHasColumn, firstValueOf, foldCase, type InputSchema, type LocalInput, type UnionColumn } from './input-schema';

/** Row position: input index (plan order) in the high bits, row number in the file in the low 40. */
export const POSITION_SHIFT = 40;
const ROW_MASK = `${2 ** POSITION_SHIFT - 1}`;

/**
 * Every union column from `alias`, cast to its union type, or a typed NULL when none of `schemas` has
 * it: rows read from different subsets of the inputs then line up column by column (UNION ALL is
 * positional, and a subset's union_by_name may order or type columns differently).
 */
export function projectUnion(columns: readonly UnionColumn[], schemas: readonly InputSchema[], alias: string): string {
  return columns
    .map((c) => {
      const held = [c.name, ...(c.alsoFrom ?? [])].filter((n) => anyHasColumn(schemas, foldCase(n)));
      const value = held.length === 0 ? 'NULL' : firstValueOf(alias, held);
      return `CAST(${value} AS ${c.type}) AS ${sqlIdent(c.name)}`;
    })
    .join(', ');
}

/**
 * Inputs whose winners lie in output order closely enough that reading them by slices beats
 * scattering them: per range of `chunkRows` ranks, the slice from the first to the last winner of the
 * file, summed over the ranges, is at most twice the file's winners. Small files are always scattered
 * (a slice per range costs a statement's file open for a handful of rows). Needs `ordered`.
 */
export async function findPresortedInputs(session: DuckSession, chunkRows: number): Promise<number[]> {
  const rows = await session.rows(
    `SELECT fi FROM (
       SELECT pos >> ${POSITION_SHIFT} AS fi, rank // ${chunkRows} AS k, min(pos & ${ROW_MASK}) AS lo,
              max(pos & ${ROW_MASK}) AS hi, count(*) AS n
       FROM ordered GROUP BY ALL)
     GROUP BY fi HAVING sum(n) >= ${chunkRows} AND sum(hi - lo + 1) <= 2 * sum(n) ORDER BY fi`,
  );
  return rows.map((r) => toNumber(r.fi));
}

/**
 * Writes the positions and ranks of the presorted inputs' winners, in rank order and in small row
 * groups, so that a range's entries are read without scanning the rest. Needs `ordered`.
 */
export async function writeRankIndex(session: DuckSession, presorted: readonly number[], file: string): Promise<void> {
  await session.exec(
    `COPY (SELECT pos, rank FROM ordered WHERE pos >> ${POSITION_SHIFT} IN (${presorted.join(', ')}) ORDER BY rank)
     TO ${sqlString(file)} (FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE 8192)`,
  );
}

export interface Slice {
  /** Input index (plan order). */
  input: number;
  /** First and last row number (inclusive) of the input's winners in the range. */
  lo: number;
  hi: number;
}

/** The slice of each presorted input holding its winners ranked in [start, end). */
export async function slicesFor(session: DuckSession, rankIndex: string, start: number, end: number): Promise<Slice[]> {
  const rows = await session.rows(
    `SELECT pos >> ${POSITION_SHIFT} AS fi, min(pos & ${ROW_MASK}) AS lo, max(pos & ${ROW_MASK}) AS hi
     FROM read_parquet(${sqlString(rankIndex)}) WHERE rank >= ${start} AND rank < ${end} GROUP BY ALL ORDER BY fi`,
  );
  return rows.map((r) => ({ input: toNumber(r.fi), lo: toNumber(r.lo), hi: toNumber(r.hi) }));
}

/**
 * The rows of one slice with their rank (`__ec_rank` first, then the union columns): only the winners
 * ranked in [start, end), found by joining the slice to the rank index.
 */
export function sliceRows(
  slice: Slice,
  input: LocalInput,
  schema: InputSchema,
  columns: readonly UnionColumn[],
  rankIndex: string,
  start: number,
  end: number,
): string {
  return `SELECT x.rank AS __ec_rank, ${projectUnion(columns, [schema], 'r')}
          FROM read_parquet(${sqlString(input.path)}, hive_partitioning = false, file_row_number = true) r
          JOIN (SELECT pos, rank FROM read_parquet(${sqlString(rankIndex)}) WHERE rank >= ${start} AND rank < ${end}) x
            ON x.pos = (${slice.input}::BIGINT << ${POSITION_SHIFT}) | r.file_row_number
          WHERE r.file_row_number BETWEEN ${slice.lo} AND ${slice.hi}`;
}

export interface CopiedRowGroup {
  rows: number;
  bytes: number;
}

/**
 * Consecutive row groups of a presorted input that go into the output as they are: every row in them
 * is a winner and their ranks are consecutive in row order (rank − row is the same for all of them), so
 * no row of another input falls between them and none of them was replaced. In the weekly steady state
 * that is most of last week's file when the new ingest clusters in time.
 */
export interface PassthroughRun {
  /** Input index (plan order). */
  input: number;
  /** Row groups [from, to) of that input. */
  from: number;
  to: number;
  /** Ranks [start, start + rows). */
  start: number;
  rows: number;
  /** Rows and uncompressed bytes of each of the row groups [from, to). */
  groups: CopiedRowGroup[];
}

/**
 * Finds the passthrough runs of the presorted inputs, in rank order. Needs `ordered`. Row groups larger
 * than `maxRowGroupBytes` (uncompressed) are written anew: a file of an earlier version may hold
 * 128 MB row groups that a smaller budget cannot read back, and copying would keep them forever. So are
 * row groups of fewer than `minRowGroupRows` (a range's last rows, a few rows ingested between two row
 * groups last week): copied, they would stay that small week after week.
 */
export async function findPassthroughRuns(
  session: DuckSession,
  inputs: readonly LocalInput[],
  presorted: readonly number[],
  maxRowGroupBytes: number,
  minRowGroupRows: number,
): Promise<PassthroughRun[]> {
  if (!presorted.length) return [];
  const groups = presorted
    .map(
      (fi) => `SELECT ${fi}::BIGINT AS fi, row_group_id AS g, row_group_num_rows AS n, row_group_bytes AS bytes,
                      sum(row_group_num_rows) OVER (ORDER BY row_group_id) - row_group_num_rows AS lo
               FROM parquet_metadata(${sqlString(inputs[fi]!.path)}) WHERE column_id = 0`,
    )
    .join(' UNION ALL ');
  const rows = await session.rows(
    `WITH rg AS (${groups}),
          w AS (SELECT pos >> ${POSITION_SHIFT} AS fi, pos & ${ROW_MASK} AS row, rank FROM ordered
                WHERE pos >> ${POSITION_SHIFT} IN (${presorted.join(', ')}))
     SELECT rg.fi AS fi, rg.g AS g, rg.n AS n, rg.bytes AS bytes, min(w.rank) AS first
     FROM w ASOF JOIN rg ON w.fi = rg.fi AND w.row >= rg.lo
     GROUP BY rg.fi, rg.g, rg.n, rg.bytes
     HAVING count(*) = rg.n AND min(w.rank - w.row) = max(w.rank - w.row) AND rg.bytes <= ${Math.floor(maxRowGroupBytes)}
        AND rg.n >= ${Math.floor(minRowGroupRows)}
     ORDER BY first`,
  );
  const runs: PassthroughRun[] = [];
  for (const r of rows) {
    const [input, g, n, first] = [toNumber(r.fi), toNumber(r.g), toNumber(r.n), toNumber(r.first)];
    const group = { rows: n, bytes: toNumber(r.bytes) };
    const last = runs[runs.length - 1];
    if (last && last.input === input && last.to === g && last.start + last.rows === first) {
      last.to = g + 1;
      last.rows += n;
      last.groups.push(group);
    } else {
      runs.push({ input, from: g, to: g + 1, start: first, rows: n, groups: [group] });
    }
  }
  return runs;
}

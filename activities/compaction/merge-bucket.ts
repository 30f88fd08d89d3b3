/**
 * The DuckDB side of compacting one bucket: pick the winning row of every id, write them sorted into
 * one Parquet file, and compute the id digests that verification compares.
 *
 * A bucket far below the memory budget (nearly all of them) is deduplicated, sorted and written by one
 * statement (writeSmallBucket): a tiny bucket's cost is the number of statements, not the data.
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
import { openDuckSession, sqlIdent, sqlString, sqlStringList, toNumber, type DuckSession } from './duckdb-session';
import type { InputSchema, LocalInput } from './input-schema';
import { anyHasColumn } from './input-schema';
import type { KvEntry } from './output-metadata';
import { appendParquetFiles, sameParquetSchema, type AppendPart } from './parquet-append';
import {
  findPassthroughRuns,
  findPresortedInputs,
  POSITION_SHIFT,
  projectUnion,
  sliceRows,
  slicesFor,
  unionColumns,
  writeRankIndex,
  type PassthroughRun,
  type UnionColumn,
} from './presorted-inputs';

/** Rows per row group: DuckDB's own default, a good size for predicate pushdown and readers. */
export const OUTPUT_ROW_GROUP_ROWS = 122_880;

function readInputs(inputs: readonly LocalInput[]): string {
  return `read_parquet(${sqlStringList(inputs.map((i) => i.path))}, union_by_name = true, hive_partitioning = false, file_row_number = true)`;
}

/** A column of the union, or a typed NULL when no input has it (old parts may lack `platform`). */
function columnOr(schemas: readonly InputSchema[], name: string, type: string, alias = 'r'): string {
  return anyHasColumn(schemas, name) ? `${alias}.${sqlIdent(name)}` : `CAST(NULL AS ${type})`;
}

/** The winner order within one id: greatest `updated` (NULL loses), then later input, then later row. */
const WINNER_ORDER = (updated: string, fileIndex: string, row: string): string =>
  `${updated} DESC NULLS LAST, ${fileIndex} DESC, ${row} DESC`;

/** The output order; ids are unique among winners, so it is total: the same on every retry. */
const OUTPUT_ORDER = (platform: string, datetime: string, id: string): string =>
  `${platform} ASC NULLS LAST, ${datetime} ASC NULLS LAST, ${id} ASC`;

/**
 * The winner of an id is the row with the greatest key: `updated` (NULL lowest) in the high 64 bits,
 * the row position in the low 64, so ties go to the later input in plan order, then the later row
 * (as WINNER_ORDER). One fixed-width number per row lets a single spillable max() pick the winners
 * (arg_max over strings does not spill), and it holds the winner's position. epoch_us + 2^63 + 1 lies in
 * [1, 2^64) for every finite timestamp, so NULL (0) loses to all.
 */
function winnerKey(updated: string, pos: string): string {
  return `(coalesce(epoch_us(${updated})::HUGEINT + 9223372036854775809, 0)::UHUGEINT * 18446744073709551616::UHUGEINT + (${pos})::UHUGEINT)`;
}

/** The row position in the low 64 bits of a winner key (a mask: UHUGEINT modulo is 250x slower). */
function positionOfKey(key: string): string {
  return `(${key} & 18446744073709551615::UHUGEINT)::BIGINT`;
}

/**
 * Builds table `ordered(pos, rank)`: the position of every id's winning row, ranked 0..n-1 in output
 * order (platform, datetime, id). Only narrow columns are read.
 *
 * Returns the digest of the inputs' ids, taken from the same read (every input row's id, straight
 * from the files; the row count is checked against the footers), which saves the heavy path a
 * separate pass over the inputs. Throws the null-id error before anything is ranked.
 */
export async function computeWinners(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  footprint: InputFootprint,
): Promise<IdDigest> {
  await session.exec('DROP TABLE IF EXISTS narrow; DROP TABLE IF EXISTS winners; DROP TABLE IF EXISTS ordered');
  const pos = rowPosition('r');
  await session.exec(
    `CREATE TABLE narrow AS
       SELECT r.id AS id, ${columnOr(schemas, 'platform', 'VARCHAR')} AS platform,
              ${columnOr(schemas, 'datetime', 'TIMESTAMPTZ')} AS datetime, ${pos} AS pos,
              ${winnerKey(columnOr(schemas, 'updated', 'TIMESTAMPTZ'), pos)} AS k
       FROM ${readInputs(inputs)} r`,
  );
  const [n] = await session.rows('SELECT count(*) AS rows, count(*) FILTER (WHERE id IS NULL) AS null_ids FROM narrow');
  if (toNumber(n?.null_ids) > 0) {
    await session.exec('DROP TABLE narrow');
    throw await nullIdError(session, inputs);
  }
  if (toNumber(n?.rows) !== footprint.rows) {
    await session.exec('DROP TABLE narrow');
    throw new Error(
      `the ${inputs.length} input(s) yielded ${toNumber(n?.rows)} rows but their footers hold ${footprint.rows}; not compacting from a partial read`,
    );
  }
  // Measured: a join on the 16-byte key is 3x slower than on the 8-byte position.
  await session.exec(`CREATE TABLE winners AS SELECT ${positionOfKey('max(k)')} AS pos FROM narrow GROUP BY id`);
  // Not in the GROUP BY: carrying the id out of it ran out of memory at a 128 MB limit.
  const [w] = await session.rows(
    'SELECT count(*) AS distinct_ids, coalesce(sum(hash(n.id)::HUGEINT), 0) AS h FROM narrow n SEMI JOIN winners w ON n.pos = w.pos',
  );
  await session.exec(
    `CREATE TABLE ordered AS
       SELECT n.pos AS pos, row_number() OVER (ORDER BY ${OUTPUT_ORDER('n.platform', 'n.datetime', 'n.id')}) - 1 AS rank
       FROM narrow n SEMI JOIN winners w ON n.pos = w.pos`,
  );
  await session.exec('DROP TABLE narrow; DROP TABLE winners');
  return { rows: toNumber(n?.rows), distinctIds: toNumber(w?.distinct_ids), idHashSum: String(w?.h ?? 0), nullIds: 0 };
}

/**
 * A row's position: input index (plan order) in the high bits, row number in the file in the low 40.
 * read_parquet's file_index numbers the files in list order, which is plan order.
 */
function rowPosition(alias: string): string {
  return `(${alias}.file_index::BIGINT << ${POSITION_SHIFT}) | ${alias}.file_row_number`;
}

/** Names the inputs holding rows without an id (which cannot be deduplicated). */
export async function nullIdError(session: DuckSession, inputs: readonly LocalInput[]): Promise<BadBucketDataError> {
  const rows = await session.rows(
    `SELECT r.file_index AS fi, count(*) AS n FROM ${readInputs(inputs)} r WHERE r.id IS NULL GROUP BY ALL ORDER BY fi`,
  );
  const keys = rows.map((r) => inputs[toNumber(r.fi)]?.key ?? `input ${toNumber(r.fi)}`);
  const detail = rows.map((r, i) => `${keys[i]} (${toNumber(r.n)} rows)`).join(', ');
  return new BadBucketDataError(`rows with a null 'id' cannot be deduplicated: ${detail}`, keys);
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** KV_METADATA clause; values as hex BLOBs so any bytes (and any quote) survive exactly. */
function kvClause(kv: readonly KvEntry[]): string {
  if (!kv.length) return '';
  return `, KV_METADATA {${kv.map((e) => `${sqlString(e.key)}: from_hex(${sqlString(hexOf(e.value))})`).join(', ')}}`;
}

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

/** DuckDB's floor for ROW_GROUP_SIZE (one vector). */
const MIN_ROW_GROUP_ROWS = 2048;

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

function finalWriteOptions(rg: RowGroupSize, kv: readonly KvEntry[]): string {
  return `FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${rg.rows}, ROW_GROUP_SIZE_BYTES ${rg.bytes}${kvClause(kv)}`;
}

/**
 * Dedup, sort and write in one statement, for a bucket whose rows fit in memory several times over:
 * the window over all input rows and the sort of the winners both hold wide rows, which is what fails
 * under a small memory_limit for a big bucket (so the caller reserves this for small ones).
 */
export async function writeSmallBucket(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  outFile: string,
  kv: readonly KvEntry[],
  rg: RowGroupSize,
): Promise<void> {
  const winner = WINNER_ORDER(columnOr(schemas, 'updated', 'TIMESTAMPTZ', 'w'), 'w.__ec_fi', 'w.file_row_number');
  const order = OUTPUT_ORDER(columnOr(schemas, 'platform', 'VARCHAR', 'w'), columnOr(schemas, 'datetime', 'TIMESTAMPTZ', 'w'), 'w.id');
  await session.exec(
    `COPY (
       SELECT w.* EXCLUDE (file_row_number, __ec_fi)
       FROM (SELECT r.*, r.file_index AS __ec_fi FROM ${readInputs(inputs)} r) w
       QUALIFY row_number() OVER (PARTITION BY w.id ORDER BY ${winner}) = 1
       ORDER BY ${order}
     ) TO ${sqlString(outFile)} (${finalWriteOptions(rg, kv)})`,
  );
}

export interface WritePlan {
  /** In-memory bytes per row (inputFootprint). */
  rowBytes: number;
  /** Largest amount of wide rows one DuckDB sort is given; the scatter path's ranges hold half of it. */
  sortBudgetBytes: number;
  /** DuckDB's memory_limit and threads: the buffers of a scatter pass are sized from them. */
  memoryLimitBytes: number;
  threads: number;
  /** Output row groups (outputRowGroup). */
  rowGroup: RowGroupSize;
  /** Most rank ranges one scatter pass writes at once; the memory limit may allow fewer (scatterFanout). */
  maxFanout: number;
  /** Private directory for the scattered and the sorted chunk files. */
  workDir: string;
  /** Progress of the out-of-core path: chunks sorted so far of the total. */
  onChunk?: (done: number, total: number) => void;
  /** Whether inputs found in output order are read by slices instead of being scattered. */
  slicePresorted: boolean;
  /** The out-of-core path found these inputs in output order (read by slices, not scattered). */
  onPresorted?: (keys: string[]) => void;
  /** Whether row groups of presorted inputs that nothing changed in are copied into the output as they are. */
  passthroughPresorted: boolean;
  /** Row groups and rows copied as they are (findPassthroughRuns), when any are. */
  onPassthrough?: (rowGroups: number, rows: number) => void;
}

/**
 * Rank ranges one scatter pass can write at once within the memory limit, given the threads of the
 * pass. A partitioned COPY does not spill: every open range holds about a vector of wide rows per
 * thread and its file's row group. Half the limit goes to them; the reader and (first pass) the rank
 * join keep the rest. Measured on the bench bucket (2.2 KB rows, 256 MB limit, one thread): 16 ranges
 * ran, 72 ran out of memory; this gives 14 there.
 */
export function scatterFanout(memoryLimitBytes: number, rowBytes: number, threads: number, max: number): number {
  const perRange = (threads + 1) * MIN_ROW_GROUP_ROWS * rowBytes;
  return Math.max(2, Math.min(max, Math.floor(memoryLimitBytes / 2 / perRange)));
}

export interface ScatterLayout {
  /** Leading ranges of exactly one chunk: sorted right after this pass. */
  singles: number;
  /** Rows of each later range: scattered again (at most the next pass's fan-out in chunks, when that suffices). */
  width: number;
  parts: number;
  /** [start, end) of every range, relative to the scattered range. */
  ranges: [number, number][];
}

/**
 * Splits `rows` ranked rows into at most `fanout` ranges so that as few rows as possible need a second
 * pass, whose passes write `nextFanout` ranges each: x single-chunk ranges plus f − x ranges of at most
 * g chunks cover n chunks when x ≤ (f·g − n) / (g − 1). So 18 chunks at a fan-out of 16 scatter 3
 * chunks twice, not all 18.
 */
export function scatterLayout(rows: number, chunkRows: number, fanout: number, nextFanout = fanout): ScatterLayout {
  const n = Math.ceil(rows / chunkRows);
  const ranges: [number, number][] = [];
  if (n <= fanout) {
    for (let k = 0; k < n; k++) ranges.push([k * chunkRows, Math.min(rows, (k + 1) * chunkRows)]);
    return { singles: n, width: chunkRows, parts: n, ranges };
  }
  const singles = Math.max(0, Math.min(fanout - 1, Math.floor((fanout * nextFanout - n) / (nextFanout - 1))));
  const rest = rows - singles * chunkRows;
  const width = Math.ceil(rest / (fanout - singles));
  for (let k = 0; k < singles; k++) ranges.push([k * chunkRows, (k + 1) * chunkRows]);
  for (let a = singles * chunkRows; a < rows; a += width) ranges.push([a, Math.min(rows, a + width)]);
  return { singles, width, parts: ranges.length, ranges };
}

/** A rank range [start, end) of the output: sorted from its rows, or a passthrough run copied as it is. */
export interface Segment {
  start: number;
  end: number;
  run?: PassthroughRun;
}

/** The output's ranks [0, rows) as the passthrough runs and, between them, ranges of at most `chunkRows` to sort. */
export function passthroughLayout(rows: number, runs: readonly PassthroughRun[], chunkRows: number): Segment[] {
  const out: Segment[] = [];
  const gap = (a: number, b: number) => {
    const pieces = Math.ceil((b - a) / chunkRows);
    const width = Math.ceil((b - a) / pieces);
    for (let x = a; x < b; x += width) out.push({ start: x, end: Math.min(b, x + width) });
  };
  let at = 0;
  for (const run of [...runs].sort((a, b) => a.start - b.start)) {
    if (run.start > at) gap(at, run.start);
    out.push({ start: run.start, end: run.start + run.rows, run });
    at = run.start + run.rows;
  }
  if (at < rows) gap(at, rows);
  return out;
}

/**
 * Threads of the out-of-core write: of its first scatter pass, which also joins the ranks (a hash table
 * that does not spill), and how many ranges are sorted side by side (one-thread DuckDB instances, each
 * with its share of the limit). Both need room, so they start at a 1 GB limit (a 2 GB budget).
 * Measured on the 4M-row bench bucket: two threads in the first pass ran out of memory at a 256 MB
 * limit and pushed peak RSS ~220 MB beyond the budget at 512 MB, and ran within it at 1 GB; two sort
 * lanes took the whole bucket from 47-48 s to 34-39 s at 1 GB, were no faster at 512 MB and slower at
 * 256 MB (ranges of 24k rows in 128 MB instances).
 */
function outOfCoreThreads(plan: WritePlan): number {
  return plan.memoryLimitBytes >= 1024 * 1024 * 1024 ? plan.threads : 1;
}

/**
 * The winners among the inputs at `indices` (plan order), with their rank and the union columns of all
 * inputs (projectUnion), so that they line up with the rows of any other subset.
 */
function rankedWinners(
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  columns: readonly UnionColumn[],
  indices: readonly number[],
): string {
  const subset = indices.map((i) => inputs[i]!);
  // file_index numbers the subset; the list maps it back to the input's plan index.
  return `SELECT o.rank AS __ec_rank, ${projectUnion(columns, indices.map((i) => schemas[i]!), 'r')}
          FROM ${readInputs(subset)} r
          JOIN ordered o ON o.pos = ([${indices.join(', ')}][r.file_index::BIGINT + 1]::BIGINT << ${POSITION_SHIFT}) | r.file_row_number`;
}

/** Files of one scattered rank range (a directory written by COPY ... PARTITION_BY). */
function scatteredRows(dir: string): string {
  return `SELECT * FROM read_parquet(${sqlString(path.join(dir, '*.parquet'))}, hive_partitioning = false)`;
}

/**
 * Writes the winners (computeWinners' `ordered`) in rank order.
 *
 * DuckDB 1.5's sort does not spill wide string payloads reliably: sorting wide rows worth much more than
 * half of memory_limit fails with "Out of Memory". So a bucket that fits `sortBudgetBytes` is sorted in
 * one COPY. A larger one is scattered by rank range into Parquet files (one streaming pass that never
 * sorts; as many ranges at a time as memory allows, scatterLayout choosing them so that as few rows as
 * possible are scattered again), each range is sorted on its own into a chunk file in the output's
 * format (one range per thread at a time, each on a one-thread DuckDB instance), and the chunks' row
 * groups are appended in rank order into the output without decoding them again (appendParquetFiles).
 * Ranges hold half the sort budget: on the 4M-row bench bucket, ranges of the whole budget were no
 * faster and raised peak RSS. Ranks are dense (0..rowsOut-1), so a range's row
 * count is known without counting. Inputs already in output order (last week's compacted file) are
 * not scattered: every range reads its rows of them as one slice (presorted-inputs.ts), and their row
 * groups that nothing changed in are appended as they are, the ranks between them sorted as above
 * (passthroughLayout). Every path yields the same rows in the same order.
 */
export async function writeOrdered(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  rowsOut: number,
  outFile: string,
  kv: readonly KvEntry[],
  plan: WritePlan,
): Promise<void> {
  if (rowsOut * plan.rowBytes <= plan.sortBudgetBytes) {
    await session.exec(
      `COPY (SELECT r.* EXCLUDE (file_row_number) FROM ${readInputs(inputs)} r JOIN ordered o ON o.pos = ${rowPosition('r')}
             ORDER BY o.rank) TO ${sqlString(outFile)} (${finalWriteOptions(plan.rowGroup, kv)})`,
    );
    await session.exec('DROP TABLE ordered');
    return;
  }

  // Ranges are sorted side by side on one-thread DuckDB instances sharing the memory limit: an ordered
  // COPY gains little from a second thread (measured: 4 ranges of 96k rows in 3.3-3.7 s on two
  // one-thread instances, 4.9-5.5 s on one two-thread instance; two ordered COPYs on one instance were
  // slower still). A range holds half the sort budget, or a lane's share of it.
  const lanes = outOfCoreThreads(plan);
  const laneLimitBytes = Math.floor(plan.memoryLimitBytes / lanes);
  const chunkRows = Math.max(1, Math.floor(plan.sortBudgetBytes / Math.max(2, lanes) / plan.rowBytes));
  let totalChunks = Math.ceil(rowsOut / chunkRows);
  const columns = await unionColumns(session, inputs);
  const presorted = plan.slicePresorted ? await findPresortedInputs(session, chunkRows) : [];
  plan.onPresorted?.(presorted.map((i) => inputs[i]!.key));
  const rankIndex = path.join(plan.workDir, 'ranks.parquet');
  if (presorted.length) await writeRankIndex(session, presorted, rankIndex);
  const toScatter = inputs.map((_, i) => i).filter((i) => !presorted.includes(i));

  // Sorted ranges and passthrough runs, in rank order; only the sorted ones are our files to remove.
  const chunks: AppendPart[] = [];
  const chunkFiles: string[] = [];
  // The sorted ranges become the output's row groups as they are (appendParquetFiles).
  const chunkOptions = finalWriteOptions(plan.rowGroup, []);
  // Lane 0 is this session, narrowed to one thread and a lane's share of memory while it sorts, so
  // that all lanes together stay within the limit.
  const sorters: DuckSession[] = [session];
  const setSession = (threads: number, limitBytes: number) =>
    session.exec(`SET threads = ${threads}; SET memory_limit = '${Math.floor(limitBytes / 1024)}KB'`);
  let sorted = 0;
  /** One rank range [start, end): its scattered rows (when any were scattered) and presorted slices. */
  interface RangeJob {
    dir?: string;
    start: number;
    end: number;
  }
  const rangeRows = async (job: RangeJob): Promise<string> => {
    const parts = job.dir ? [scatteredRows(job.dir)] : [];
    if (presorted.length) {
      for (const slice of await slicesFor(session, rankIndex, job.start, job.end)) {
        parts.push(sliceRows(slice, inputs[slice.input]!, schemas[slice.input]!, columns, rankIndex, job.start, job.end));
      }
    }
    if (!parts.length) throw new Error(`no rows found for ranks [${job.start}, ${job.end})`);
    return parts.join('\n UNION ALL \n');
  };
  const sortChunks = async (jobs: readonly RangeJob[]): Promise<void> => {
    if (!jobs.length) return;
    const files = jobs.map((_, i) => path.join(plan.workDir, 'sorted', `chunk_${String(chunkFiles.length + i).padStart(6, '0')}.parquet`));
    chunks.push(...files);
    chunkFiles.push(...files);
    // Built before the session is narrowed: the slices are looked up in it.
    const sources: string[] = [];
    for (const job of jobs) sources.push(await rangeRows(job));
    const used = Math.min(lanes, jobs.length);
    while (sorters.length < used) {
      sorters.push(await openDuckSession({
        memoryLimitMb: laneLimitBytes / (1024 * 1024),
        threads: 1,
        tempDir: path.join(plan.workDir, `sorter_${sorters.length}`),
      }));
    }
    // A lone range keeps the session's threads and memory.
    if (used > 1) await setSession(1, laneLimitBytes);
    let next = 0;
    let failed = false;
    const lane = async (sorter: DuckSession): Promise<void> => {
      while (!failed && next < jobs.length) {
        const i = next++;
        try {
          await sorter.exec(
            `COPY (SELECT * EXCLUDE (__ec_rank) FROM (${sources[i]!}) ORDER BY __ec_rank) TO ${sqlString(files[i]!)} (${chunkOptions})`,
          );
          if (jobs[i]!.dir) await fs.rm(jobs[i]!.dir!, { recursive: true, force: true });
          plan.onChunk?.(++sorted, totalChunks);
        } catch (err) {
          failed = true;
          throw err;
        }
      }
    };
    // Every lane finishes its statement before an error propagates and the instances are closed.
    const settled = await Promise.allSettled(sorters.slice(0, used).map(lane));
    if (used > 1) await setSession(plan.threads, plan.memoryLimitBytes);
    const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected) throw rejected.reason;
  };
  /** Writes the rows of `source` into `dir`/__ec_part=k/ by the partition `part` (0 ≤ k < parts). */
  const scatterCopy = async (source: string, part: string, parts: number, dir: string, threads: number): Promise<void> => {
    // Partitioned writes do not spill: the open files (each buffers one row group) and the rows each
    // thread collects before handing them to the files (512k by default: far too many wide rows) get
    // small, fixed shares of the memory limit.
    const fileBufferBytes = Math.max(512 * 1024, Math.floor(plan.memoryLimitBytes / 8 / parts));
    const flushRows = Math.max(MIN_ROW_GROUP_ROWS, Math.floor(plan.memoryLimitBytes / 16 / threads / plan.rowBytes));
    await session.exec(
      `SET partitioned_write_max_open_files = ${parts + 1}; SET partitioned_write_flush_threshold = ${flushRows}; SET threads = ${threads}`,
    );
    try {
      await session.exec(
        `COPY (SELECT ${part} AS __ec_part, * FROM (${source})) TO ${sqlString(dir)}
           (FORMAT parquet, COMPRESSION lz4, PARTITION_BY (__ec_part), ROW_GROUP_SIZE ${MIN_ROW_GROUP_ROWS},
            ROW_GROUP_SIZE_BYTES ${fileBufferBytes})`,
      );
    } finally {
      await session.exec(`SET threads = ${plan.threads}`);
    }
  };
  const fanoutOf = (t: number) => scatterFanout(plan.memoryLimitBytes, plan.rowBytes, t, plan.maxFanout);
  let scatterSeq = 0;
  /**
   * Scatters `source` (rows ranked in [lo, hi); none when every row there is presorted) into ranges,
   * then sorts the ranges in rank order: runs of sortable ones side by side, a larger one scattered
   * again in between (or, holding presorted rows only, cut into sortable ranges).
   */
  const scatter = async (source: string | undefined, lo: number, hi: number, threads: number): Promise<void> => {
    const layout = scatterLayout(hi - lo, chunkRows, source ? fanoutOf(threads) : Number.MAX_SAFE_INTEGER, fanoutOf(plan.threads));
    const dir = path.join(plan.workDir, `scatter_${++scatterSeq}`);
    if (source) {
      const rel = `(__ec_rank - ${lo})`;
      const part = layout.singles === layout.parts
        ? `${rel} // ${chunkRows}`
        : `CASE WHEN ${rel} < ${layout.singles * chunkRows} THEN ${rel} // ${chunkRows}
                ELSE ${layout.singles} + (${rel} - ${layout.singles * chunkRows}) // ${layout.width} END`;
      await scatterCopy(source, part, layout.parts, dir, threads);
    }
    // The rank join is done once the first pass is: its table would only hold memory the sorts need.
    if (lo === 0 && hi === rowsOut) await session.exec('DROP TABLE IF EXISTS ordered');
    let sortable: RangeJob[] = [];
    for (const [k, [a, b]] of layout.ranges.entries()) {
      // A range that no scattered row fell into has no directory: its rows are all presorted.
      const partDir = source ? path.join(dir, `__ec_part=${k}`) : undefined;
      const scattered = partDir !== undefined && (await exists(partDir));
      if (b - a <= chunkRows) {
        sortable.push({ dir: scattered ? partDir : undefined, start: lo + a, end: lo + b });
        continue;
      }
      await sortChunks(sortable);
      sortable = [];
      await scatter(scattered ? scatteredRows(partDir!) : undefined, lo + a, lo + b, plan.threads);
      if (scattered) await fs.rm(partDir!, { recursive: true, force: true });
    }
    await sortChunks(sortable);
    await fs.rm(dir, { recursive: true, force: true });
  };
  /**
   * Sorts the ranges between the passthrough runs and lists the runs between them. The scattered rows
   * (this week's ingest: few) are scattered by range, as many ranges per pass as the fan-out allows,
   * each pass reading only its ranks of them; presorted rows are read by slices.
   */
  const writeAround = async (source: string | undefined, segments: readonly Segment[]): Promise<void> => {
    const sortedRanges = segments.filter((x) => !x.run);
    const fanout = fanoutOf(outOfCoreThreads(plan));
    const dirs: string[] = [];
    const scattered: string[] = [];
    for (let g = 0; source && g < sortedRanges.length; g += fanout) {
      const group = sortedRanges.slice(g, g + fanout);
      const dir = path.join(plan.workDir, `scatter_${++scatterSeq}`);
      const part = `CASE ${group.map((x, k) => `WHEN __ec_rank < ${x.end} THEN ${k}`).join(' ')} END`;
      const ranks = `SELECT * FROM (${source}) WHERE __ec_rank >= ${group[0]!.start} AND __ec_rank < ${group[group.length - 1]!.end}`;
      await scatterCopy(group.length === sortedRanges.length ? source : ranks, part, group.length, dir, outOfCoreThreads(plan));
      scattered.push(dir);
      group.forEach((_, k) => dirs.push(path.join(dir, `__ec_part=${k}`)));
    }
    await session.exec('DROP TABLE IF EXISTS ordered');
    let sortable: RangeJob[] = [];
    let k = 0;
    for (const x of segments) {
      if (x.run) {
        await sortChunks(sortable);
        sortable = [];
        chunks.push({ path: inputs[x.run.input]!.path, from: x.run.from, to: x.run.to });
        continue;
      }
      const partDir = dirs[k++];
      sortable.push({ dir: partDir && (await exists(partDir)) ? partDir : undefined, start: x.start, end: x.end });
    }
    await sortChunks(sortable);
    for (const dir of scattered) await fs.rm(dir, { recursive: true, force: true });
  };

  await fs.mkdir(path.join(plan.workDir, 'sorted'), { recursive: true });
  try {
    const first = toScatter.length ? rankedWinners(inputs, schemas, columns, toScatter) : undefined;
    const runs = plan.passthroughPresorted
      ? await passthroughCandidates(session, inputs, schemas, columns, presorted, chunkOptions, plan.rowGroup.bytes, plan.workDir)
      : [];
    if (runs.length) {
      const segments = passthroughLayout(rowsOut, runs, chunkRows);
      plan.onPassthrough?.(runs.reduce((n, r) => n + r.to - r.from, 0), runs.reduce((n, r) => n + r.rows, 0));
      totalChunks = segments.length - runs.length;
      await writeAround(first, segments);
    } else {
      await scatter(first, 0, rowsOut, outOfCoreThreads(plan));
    }
  } finally {
    for (const sorter of sorters.slice(1)) sorter.close();
  }
  await session.exec('RESET partitioned_write_max_open_files; RESET partitioned_write_flush_threshold');

  await appendParquetFiles(chunks, outFile, kv);
  for (const c of chunkFiles) await fs.rm(c, { force: true });
  await fs.rm(rankIndex, { force: true });
}

/**
 * Passthrough runs of the presorted inputs whose schema is exactly the one the sorted ranges are
 * written with (a new column in this week's ingest, or a file from another writer, rules them out):
 * checked against a file of no rows written with the ranges' projection and options.
 */
async function passthroughCandidates(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  columns: readonly UnionColumn[],
  presorted: readonly number[],
  chunkOptions: string,
  maxRowGroupBytes: number,
  workDir: string,
): Promise<PassthroughRun[]> {
  // Slack over the cap: DuckDB closes a row group on the vector that crosses it.
  const runs = await findPassthroughRuns(session, inputs, presorted, 2 * maxRowGroupBytes);
  const eligible = new Set<number>();
  for (const fi of new Set(runs.map((r) => r.input))) {
    const probe = path.join(workDir, `schema_probe_${fi}.parquet`);
    await session.exec(
      `COPY (SELECT ${projectUnion(columns, [schemas[fi]!], 'r')} FROM read_parquet(${sqlString(inputs[fi]!.path)}, hive_partitioning = false) r LIMIT 0)
       TO ${sqlString(probe)} (${chunkOptions})`,
    );
    if (await sameParquetSchema(probe, inputs[fi]!.path)) eligible.add(fi);
    await fs.rm(probe, { force: true });
  }
  return runs.filter((r) => eligible.has(r.input));
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

/** What verification compares: how many distinct ids, and an order-independent digest of them. */
export interface IdDigest {
  rows: number;
  distinctIds: number;
  idHashSum: string;
  /** Rows without an id (inputs only; such a bucket cannot be compacted). */
  nullIds: number;
}

/** Digest of the distinct ids of the inputs (computed from the files, not from the winners table). */
export async function inputIdDigest(session: DuckSession, inputs: readonly LocalInput[]): Promise<IdDigest> {
  const [r] = await session.rows(
    `WITH ids AS (SELECT id, count(*) AS n FROM read_parquet(${sqlStringList(inputs.map((i) => i.path))},
                    union_by_name = true, hive_partitioning = false) GROUP BY id)
     SELECT coalesce(sum(n), 0) AS rows, count(id) AS distinct_ids, coalesce(sum(n) FILTER (WHERE id IS NULL), 0) AS null_ids,
            coalesce(sum(hash(id)::HUGEINT) FILTER (WHERE id IS NOT NULL), 0) AS h FROM ids`,
  );
  return {
    rows: toNumber(r?.rows),
    distinctIds: toNumber(r?.distinct_ids),
    idHashSum: String(r?.h ?? 0),
    nullIds: toNumber(r?.null_ids),
  };
}

/** Digest of a written output; `rows` counts rows, which must equal its distinct ids. */
export async function outputIdDigest(session: DuckSession, file: string): Promise<IdDigest> {
  const [r] = await session.rows(
    `SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids,
            count(*) FILTER (WHERE id IS NULL) AS null_ids, coalesce(sum(hash(id)::HUGEINT), 0) AS h
     FROM (SELECT id FROM read_parquet(${sqlString(file)}, hive_partitioning = false))`,
  );
  return {
    rows: toNumber(r?.rows),
    distinctIds: toNumber(r?.distinct_ids),
    idHashSum: String(r?.h ?? 0),
    nullIds: toNumber(r?.null_ids),
  };
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

/** Key-value metadata of each file (raw bytes, in file order), in one statement. */
export async function readKvMetadata(session: DuckSession, files: readonly string[]): Promise<KvEntry[][]> {
  const rows = await session.rows(`SELECT file_name, key, value FROM parquet_kv_metadata(${sqlStringList(files)})`);
  return files.map((f) =>
    rows
      .filter((r) => r.file_name === f)
      .map((r) => ({ key: Buffer.from(r.key as Uint8Array).toString('utf8'), value: new Uint8Array(r.value as Uint8Array) })),
  );
}

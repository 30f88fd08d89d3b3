/**
 * The write of a bucket too big for one statement: the winners (rank-winners.ts) in rank order, within
 * the memory limit, into one file.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { rowPosition, scanInputs } from './bucket-sql';
import { isOutOfMemory, openDuckSession, sqlString, type DuckSession } from './duckdb-session';
import { firstLine } from '../error-text';
import { foldCase, outputStar, unionColumns, type InputSchema, type LocalInput, type UnionColumn, type OutputColumns } from './input-schema';
import type { KvEntry } from './output-metadata';
import { finalWriteOptions, MIN_ROW_GROUP_ROWS, oneRowGroupRows, type RowGroupSize } from './output-format';
import { appendParquetFiles, sameParquetSchema, type AppendPart } from './parquet-append';
import {
  findPassthroughRuns,
  findPresortedInputs,
  POSITION_SHIFT,
  projectUnion,
  sliceRows,
  slicesFor,
  writeRankIndex,
  type PassthroughRun,
} from './presorted-inputs';
import { passthroughLayout, scatterFanout, scatterLayout, withoutSmallGaps, withoutSmallNeighbours, type ScatterLayout, type Segment } from './range-layout';

export interface WritePlan {
  /** In-memory bytes per row (inputFootprint). */
  rowBytes: number;
  /**
   * How many times `rowBytes` a row is taken to need in a sort (default 1): more once a statement ran out
   * of memory, as DuckDB's rows of deeply nested columns do. The scatter's buffers stay sized from `rowBytes`.
   */
  sortScale?: number;
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
  /** How the output's columns differ from the union (valuelessParts, tableTypeCasts). */
  output: OutputColumns;
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
  /** A statement sized from the estimate ran out of memory: the write goes on with ranges of `chunkRows` (RangeWrite.shrink). */
  onShrink?: (chunkRows: number, why: string) => void;
}

/**
 * How much the estimate of a row's memory grows each time a statement sized from it runs out of memory.
 * DuckDB's rows of deeply nested columns take several times inputFootprint's estimate (measured on
 * stac-geoparquet items with 17 assets, 297 leaf columns: ~28 KB per row in a sort against an estimate
 * of 8.3 KB), and no footer figure predicts by how much.
 */
export const SHRINK_FACTOR = 4;
/** Ranges this small that still run out of memory are the budget's fault, not the estimate's. */
const MIN_SHRINK_ROWS = 256;

/** The smallest row group copied as it is, and the fewest ranks written between two copied ones: a quarter of an output row group. */
function minCopiedRowGroupRows(rowGroup: RowGroupSize): number {
  return Math.floor(rowGroup.rows / 4);
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
          FROM ${scanInputs(subset)} r
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
  let rangePlan = plan;
  if (rowsOut * sortRowBytes(plan) <= plan.sortBudgetBytes) {
    try {
      await session.exec(
        `COPY (SELECT ${outputStar('r', ['file_row_number'], plan.output)} FROM ${scanInputs(inputs)} r JOIN ordered o ON o.pos = ${rowPosition('r')}
               ORDER BY o.rank) TO ${sqlString(outFile)} (${finalWriteOptions(plan.rowGroup, kv, rowsOut)})`,
      );
      await session.exec('DROP TABLE ordered');
      return;
    } catch (err) {
      // The rows took more memory than estimated: ranges sized from a larger estimate (at least 2 * SHRINK_FACTOR of them).
      if (!(err instanceof Error) || !isOutOfMemory(err)) throw err;
      await fs.rm(outFile, { force: true });
      rangePlan = { ...plan, sortScale: (plan.sortScale ?? 1) * SHRINK_FACTOR };
      plan.onShrink?.(rangeChunkRows(rangePlan), firstLine(err));
    }
  }
  const write = await RangeWrite.prepare(session, inputs, schemas, rowsOut, rangePlan);
  try {
    await write.run();
  } finally {
    write.closeSorters();
  }
  await session.exec('RESET partitioned_write_max_open_files; RESET partitioned_write_flush_threshold');
  await appendParquetFiles(write.parts, outFile, kv);
  await write.removeFiles();
}

/** One rank range [start, end) to sort: its scattered rows (when any were scattered) and presorted slices. */
interface RangeJob {
  dir?: string;
  start: number;
  end: number;
}

/** What RangeWrite.prepare finds out before anything is written. */
interface RangeWriteShape {
  /**
   * Ranges are sorted side by side on one-thread DuckDB instances sharing the memory limit: an ordered
   * COPY gains little from a second thread (measured: 4 ranges of 96k rows in 3.3-3.7 s on two
   * one-thread instances, 4.9-5.5 s on one two-thread instance; two ordered COPYs on one instance were
   * slower still).
   */
  lanes: number;
  /** Rows of a sorted range at first: half the sort budget, or a lane's share of it. */
  chunkRows: number;
  columns: UnionColumn[];
  /** Inputs in output order, read by slices instead of being scattered (findPresortedInputs). */
  presorted: number[];
  /** The ranks of their winners, which every slice is joined to (writeRankIndex). */
  rankIndex: string;
}

/** The out-of-core write of one bucket (see writeOrdered): its files, its sort lanes and its progress. */
class RangeWrite {
  /** Sorted ranges and passthrough runs, in rank order: what the output is appended from. */
  readonly parts: AppendPart[] = [];
  /** The sorted ranges' files: only these are ours to remove. */
  private readonly chunkFiles: string[] = [];
  /** Lane 0 is the bucket's session, narrowed to one thread and a lane's share of memory while it sorts. */
  private readonly sorters: DuckSession[];
  private readonly laneLimitBytes: number;
  private totalChunks: number;
  private sorted = 0;
  private scatterSeq = 0;
  /** Rows of a sorted range: fewer each time a statement runs out of memory (shrink). */
  private chunkRows: number;
  /** The estimate of a row's memory the scatter's buffers are sized from: larger once a scatter pass ran out of memory. */
  private rowBytes: number;
  /** Whether a statement ran out of memory: later scatter passes then take one thread. */
  private shrunk: boolean;

  private constructor(
    private readonly session: DuckSession,
    private readonly inputs: readonly LocalInput[],
    private readonly schemas: readonly InputSchema[],
    private readonly rowsOut: number,
    private readonly plan: WritePlan,
    private readonly shape: RangeWriteShape,
  ) {
    this.sorters = [session];
    this.laneLimitBytes = Math.floor(plan.memoryLimitBytes / shape.lanes);
    this.totalChunks = Math.ceil(rowsOut / shape.chunkRows);
    this.rowBytes = plan.rowBytes;
    this.chunkRows = shape.chunkRows;
    this.shrunk = (plan.sortScale ?? 1) > 1;
  }

  static async prepare(
    session: DuckSession,
    inputs: readonly LocalInput[],
    schemas: readonly InputSchema[],
    rowsOut: number,
    plan: WritePlan,
  ): Promise<RangeWrite> {
    const lanes = outOfCoreThreads(plan);
    const chunkRows = rangeChunkRows(plan);
    const omitted = new Set(plan.output.omitted.map((c) => foldCase(c)));
    const columns = (await unionColumns(session, inputs))
      .filter((c) => !omitted.has(foldCase(c.name)))
      .map((c) => {
        const others = plan.output.merged.get(c.name);
        return { ...c, type: plan.output.casts.get(c.name) ?? c.type, ...(others ? { alsoFrom: others } : {}) };
      });
    const presorted = plan.slicePresorted ? await findPresortedInputs(session, chunkRows) : [];
    plan.onPresorted?.(presorted.map((i) => inputs[i]!.key));
    const rankIndex = path.join(plan.workDir, 'ranks.parquet');
    if (presorted.length) await writeRankIndex(session, presorted, rankIndex);
    await fs.mkdir(path.join(plan.workDir, 'sorted'), { recursive: true });
    return new RangeWrite(session, inputs, schemas, rowsOut, plan, { lanes, chunkRows, columns, presorted, rankIndex });
  }

  /** Sorts every range into its chunk file (or lists the passthrough runs between them), in rank order. */
  async run(): Promise<void> {
    const { presorted } = this.shape;
    const toScatter = this.inputs.map((_, i) => i).filter((i) => !presorted.includes(i));
    const first = toScatter.length ? rankedWinners(this.inputs, this.schemas, this.shape.columns, toScatter) : undefined;
    const candidates = this.plan.passthroughPresorted ? await this.passthroughCandidates() : [];
    const fit = { rows: Math.min(oneRowGroupRows(this.plan.rowGroup.rows), this.chunkRows), bytes: this.plan.rowGroup.bytes };
    const runs = withoutSmallGaps(this.rowsOut, withoutSmallNeighbours(candidates, fit), minCopiedRowGroupRows(this.plan.rowGroup));
    if (!runs.length) return this.scatter(first, 0, this.rowsOut, this.shape.lanes);
    const segments = passthroughLayout(this.rowsOut, runs, this.chunkRows);
    this.plan.onPassthrough?.(runs.reduce((n, r) => n + r.to - r.from, 0), runs.reduce((n, r) => n + r.rows, 0));
    this.totalChunks = segments.length - runs.length;
    await this.writeAround(first, segments);
  }

  /**
   * The write options of a sorted range of `rows` rows: its row groups become the output's as they are
   * (appendParquetFiles), so they are written even.
   */
  private chunkOptions(rows?: number): string {
    return finalWriteOptions(this.plan.rowGroup, [], rows);
  }

  closeSorters(): void {
    for (const sorter of this.sorters.slice(1)) sorter.close();
  }

  async removeFiles(): Promise<void> {
    for (const c of this.chunkFiles) await fs.rm(c, { force: true });
    await fs.rm(this.shape.rankIndex, { force: true });
  }

  /** The SQL of one range's rows, with their rank. */
  private async rangeRows(job: RangeJob): Promise<string> {
    const { presorted, rankIndex, columns } = this.shape;
    const parts = job.dir ? [scatteredRows(job.dir)] : [];
    if (presorted.length) {
      for (const slice of await slicesFor(this.session, rankIndex, job.start, job.end)) {
        parts.push(sliceRows(slice, this.inputs[slice.input]!, this.schemas[slice.input]!, columns, rankIndex, job.start, job.end));
      }
    }
    // The scatter wrote a folder for every range that holds rows: one missing was removed under us.
    if (!parts.length) throw this.spillGone(job);
    return parts.join('\n UNION ALL \n');
  }

  private spillGone(job: RangeJob): Error {
    return new Error(
      `no rows found for ranks [${job.start}, ${job.end}) of the bucket's spill files in ${this.plan.workDir}: ` +
        'was the scratch directory cleaned while the bucket ran? The attempt is retried from its inputs',
    );
  }

  /**
   * Sorts `jobs` (in rank order) into the next chunk files, one job per lane at a time. A job that runs
   * out of memory stops the lanes; it and the jobs not sorted yet are cut into the smaller ranges of the
   * larger estimate (shrink) and sorted after the ones done before it, so the parts stay in rank order.
   */
  private async sortChunks(jobs: readonly RangeJob[]): Promise<void> {
    if (!jobs.length) return;
    const { plan, session } = this;
    const files = jobs.map((_, i) => path.join(plan.workDir, 'sorted', `chunk_${String(this.chunkFiles.length + i).padStart(6, '0')}.parquet`));
    this.chunkFiles.push(...files);
    // Built before the session is narrowed: the slices are looked up in it.
    const sources: string[] = [];
    for (const job of jobs) sources.push(await this.rangeRows(job));
    const used = Math.min(this.shape.lanes, jobs.length);
    while (this.sorters.length < used) {
      this.sorters.push(await openDuckSession({
        memoryLimitMb: this.laneLimitBytes / (1024 * 1024),
        threads: 1,
        tempDir: path.join(plan.workDir, `sorter_${this.sorters.length}`),
      }));
    }
    // A lone range keeps the session's threads and memory; lanes together stay within the limit.
    const limitSession = (threads: number, limitBytes: number) =>
      session.exec(`SET threads = ${threads}; SET memory_limit = '${Math.floor(limitBytes / 1024)}KB'`);
    if (used > 1) await limitSession(1, this.laneLimitBytes);
    const done = jobs.map(() => false);
    let next = 0;
    let failed = false;
    let outOfMemory: Error | undefined;
    const lane = async (sorter: DuckSession): Promise<void> => {
      while (!failed && !outOfMemory && next < jobs.length) {
        const i = next++;
        try {
          await sorter.exec(
            `COPY (SELECT * EXCLUDE (__ec_rank) FROM (${sources[i]!}) ORDER BY __ec_rank)
             TO ${sqlString(files[i]!)} (${this.chunkOptions(jobs[i]!.end - jobs[i]!.start)})`,
          );
          done[i] = true;
          if (jobs[i]!.dir) await fs.rm(jobs[i]!.dir!, { recursive: true, force: true });
          plan.onChunk?.(++this.sorted, Math.max(this.sorted, this.totalChunks));
        } catch (err) {
          if (jobs[i]!.dir && !(await exists(jobs[i]!.dir!))) {
            failed = true;
            throw this.spillGone(jobs[i]!);
          }
          if (err instanceof Error && isOutOfMemory(err) && this.mayShrink(jobs[i]!.end - jobs[i]!.start)) {
            outOfMemory = err;
            continue;
          }
          failed = true;
          throw err;
        }
      }
    };
    // Every lane finishes its statement before an error propagates and the instances are closed.
    const settled = await Promise.allSettled(this.sorters.slice(0, used).map(lane));
    if (used > 1) await limitSession(plan.threads, plan.memoryLimitBytes);
    const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected) throw rejected.reason;
    if (!outOfMemory) {
      this.parts.push(...files);
      return;
    }
    const undone = jobs.filter((_, i) => !done[i]);
    this.shrink(outOfMemory, undone.reduce((n, j) => n + j.end - j.start, 0), 'sort');
    let pending: RangeJob[] = [];
    for (const [i, job] of jobs.entries()) {
      if (!done[i]) {
        pending.push(job);
        continue;
      }
      await this.sortOrScatter(pending);
      pending = [];
      this.parts.push(files[i]!);
    }
    await this.sortOrScatter(pending);
  }

  /**
   * Writes consecutive ranges in rank order: runs of sortable ones side by side, a larger one scattered
   * again in between (from its directory, or, holding presorted rows only, cut into sortable ranges).
   */
  private async sortOrScatter(jobs: readonly RangeJob[]): Promise<void> {
    let sortable: RangeJob[] = [];
    for (const job of jobs) {
      if (job.end - job.start <= this.chunkRows) {
        sortable.push(job);
        continue;
      }
      await this.sortChunks(sortable);
      sortable = [];
      await this.scatter(job.dir ? scatteredRows(job.dir) : undefined, job.start, job.end, this.laterPassThreads(), job.dir);
    }
    await this.sortChunks(sortable);
  }

  /**
   * Threads of a scatter pass after the first: all of them, unless a statement ran out of memory (each
   * thread buffers rows of the size that was underestimated).
   */
  private laterPassThreads(): number {
    return this.shrunk ? 1 : this.plan.threads;
  }

  /** Whether DuckDB's running out of memory on a statement sized for `rows` rows is one a smaller estimate can avoid. */
  private mayShrink(rows: number): boolean {
    return rows > MIN_SHRINK_ROWS && this.chunkRows > MIN_SHRINK_ROWS;
  }

  /**
   * The ranges still to sort get smaller; the scatter's buffers only after a scatter pass ran out of
   * memory: sized from the first estimate, the nested bucket's first pass ran with rows 3.4 times as large,
   * and buffers cut for nothing cut the fan-out to 2, so every later pass rewrote every row (2.1× slower).
   */
  private shrink(err: Error, rowsLeft: number, failed: 'sort' | 'scatter'): void {
    this.shrunk = true;
    if (failed === 'scatter') this.rowBytes *= SHRINK_FACTOR;
    this.chunkRows = Math.max(MIN_SHRINK_ROWS, Math.floor(this.chunkRows / SHRINK_FACTOR));
    this.totalChunks = this.sorted + Math.ceil(rowsLeft / this.chunkRows);
    this.plan.onShrink?.(this.chunkRows, firstLine(err));
  }

  /** Writes the rows of `source` into `dir`/__ec_part=k/ by the partition `part` (0 ≤ k < parts). */
  private async scatterCopy(source: string, part: string, parts: number, dir: string, threads: number): Promise<void> {
    const { plan, session } = this;
    // Partitioned writes do not spill: the open files (each buffers one row group) and the rows each
    // thread collects before handing them to the files (512k by default: far too many wide rows) get
    // small, fixed shares of the memory limit.
    const fileBufferBytes = Math.max(512 * 1024, Math.floor(plan.memoryLimitBytes / 8 / parts));
    const flushRows = Math.max(MIN_ROW_GROUP_ROWS, Math.floor(plan.memoryLimitBytes / 16 / threads / this.rowBytes));
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
  }

  /**
   * One scatter pass (scatterCopy) of rows ranked within a span of `rows`; false when it ran out of memory
   * and the estimate grew instead (shrink, `rowsLeft` rows still to sort): the caller lays the pass out
   * again, on laterPassThreads().
   */
  private async scatterOrShrink(source: string, part: string, parts: number, dir: string, threads: number, rows: number, rowsLeft: number): Promise<boolean> {
    try {
      await this.scatterCopy(source, part, parts, dir, threads);
      return true;
    } catch (err) {
      await fs.rm(dir, { recursive: true, force: true });
      if (!(err instanceof Error) || !isOutOfMemory(err) || !this.mayShrink(rows)) throw err;
      this.shrink(err, rowsLeft, 'scatter');
      return false;
    }
  }

  private fanoutOf(threads: number): number {
    return scatterFanout(this.plan.memoryLimitBytes, this.rowBytes, threads, this.plan.maxFanout);
  }

  /**
   * Scatters `source` (rows ranked in [lo, hi); none when every row there is presorted) into ranges,
   * then writes the ranges in rank order (sortOrScatter). `sourceDir`, the
   * directory `source` reads, is removed once its rows are scattered. A pass that runs out of memory is
   * written again with the smaller buffers of a larger estimate (shrink).
   */
  private async scatter(source: string | undefined, lo: number, hi: number, threads: number, sourceDir?: string): Promise<void> {
    let layout: ScatterLayout;
    let dir: string;
    for (;;) {
      const { chunkRows } = this;
      layout = scatterLayout(hi - lo, chunkRows, source ? this.fanoutOf(threads) : Number.MAX_SAFE_INTEGER, this.fanoutOf(this.laterPassThreads()));
      dir = path.join(this.plan.workDir, `scatter_${++this.scatterSeq}`);
      if (!source) break;
      const rel = `(__ec_rank - ${lo})`;
      const part = layout.singles === layout.parts
        ? `${rel} // ${chunkRows}`
        : `CASE WHEN ${rel} < ${layout.singles * chunkRows} THEN ${rel} // ${chunkRows}
                ELSE ${layout.singles} + (${rel} - ${layout.singles * chunkRows}) // ${layout.width} END`;
      if (await this.scatterOrShrink(source, part, layout.parts, dir, threads, hi - lo, hi - lo)) break;
      threads = this.laterPassThreads();
    }
    if (sourceDir) await fs.rm(sourceDir, { recursive: true, force: true });
    // The rank join is done once the first pass is: its table would only hold memory the sorts need.
    if (lo === 0 && hi === this.rowsOut) await this.session.exec('DROP TABLE IF EXISTS ordered');
    const jobs: RangeJob[] = [];
    for (const [k, [a, b]] of layout.ranges.entries()) {
      // A range that no scattered row fell into has no directory: its rows are all presorted.
      const partDir = source ? path.join(dir, `__ec_part=${k}`) : undefined;
      jobs.push({ dir: partDir !== undefined && (await exists(partDir)) ? partDir : undefined, start: lo + a, end: lo + b });
    }
    await this.sortOrScatter(jobs);
    await fs.rm(dir, { recursive: true, force: true });
  }

  /**
   * Sorts the ranges between the passthrough runs and lists the runs between them. The scattered rows
   * (this week's ingest: few) are scattered by range, as many ranges per pass as the fan-out allows,
   * each pass reading only its ranks of them; presorted rows are read by slices. A pass that runs out of
   * memory is written again with the smaller buffers of a larger estimate (shrink), and its ranges, now
   * larger than a sortable one, are scattered again when their turn comes (sortOrScatter).
   */
  private async writeAround(source: string | undefined, segments: readonly Segment[]): Promise<void> {
    const sortedRanges = segments.filter((x) => !x.run);
    const dirs: string[] = [];
    const scattered: string[] = [];
    let threads = this.shape.lanes;
    for (let g = 0; source && g < sortedRanges.length; ) {
      const group = sortedRanges.slice(g, g + this.fanoutOf(threads));
      const dir = path.join(this.plan.workDir, `scatter_${++this.scatterSeq}`);
      const part = `CASE ${group.map((x, k) => `WHEN __ec_rank < ${x.end} THEN ${k}`).join(' ')} END`;
      const ranks = `SELECT * FROM (${source}) WHERE __ec_rank >= ${group[0]!.start} AND __ec_rank < ${group[group.length - 1]!.end}`;
      const span = group[group.length - 1]!.end - group[0]!.start;
      // No range is sorted yet: all of them are left.
      const left = sortedRanges.reduce((n, x) => n + x.end - x.start, 0);
      if (!(await this.scatterOrShrink(group.length === sortedRanges.length ? source : ranks, part, group.length, dir, threads, span, left))) {
        threads = this.laterPassThreads();
        continue;
      }
      scattered.push(dir);
      group.forEach((_, k) => dirs.push(path.join(dir, `__ec_part=${k}`)));
      g += group.length;
    }
    await this.session.exec('DROP TABLE IF EXISTS ordered');
    let pending: RangeJob[] = [];
    let k = 0;
    for (const x of segments) {
      if (x.run) {
        await this.sortOrScatter(pending);
        pending = [];
        this.parts.push({ path: this.inputs[x.run.input]!.path, from: x.run.from, to: x.run.to });
        continue;
      }
      const partDir = dirs[k++];
      pending.push({ dir: partDir && (await exists(partDir)) ? partDir : undefined, start: x.start, end: x.end });
    }
    await this.sortOrScatter(pending);
    for (const dir of scattered) await fs.rm(dir, { recursive: true, force: true });
  }

  /**
   * Passthrough runs of the presorted inputs whose schema is exactly the one the sorted ranges are
   * written with (a new column in this week's ingest, or a file from another writer, rules them out):
   * checked against a file of no rows written with the ranges' projection and options.
   */
  private async passthroughCandidates(): Promise<PassthroughRun[]> {
    const { inputs, schemas, plan } = this;
    // Slack over the cap: DuckDB closes a row group on the vector that crosses it.
    const runs = await findPassthroughRuns(this.session, inputs, this.shape.presorted, 2 * plan.rowGroup.bytes, minCopiedRowGroupRows(plan.rowGroup));
    const eligible = new Set<number>();
    for (const fi of new Set(runs.map((r) => r.input))) {
      const probe = path.join(plan.workDir, `schema_probe_${fi}.parquet`);
      await this.session.exec(
        `COPY (SELECT ${projectUnion(this.shape.columns, [schemas[fi]!], 'r')} FROM read_parquet(${sqlString(inputs[fi]!.path)}, hive_partitioning = false) r LIMIT 0)
         TO ${sqlString(probe)} (${this.chunkOptions()})`,
      );
      if (await sameParquetSchema(probe, inputs[fi]!.path)) eligible.add(fi);
      await fs.rm(probe, { force: true });
    }
    return runs.filter((r) => eligible.has(r.input));
  }
}

/** Rows of a sorted range: half the sort budget, or a lane's share of it. */
function rangeChunkRows(plan: WritePlan): number {
  return Math.max(1, Math.floor(plan.sortBudgetBytes / Math.max(2, outOfCoreThreads(plan)) / sortRowBytes(plan)));
}

function sortRowBytes(plan: WritePlan): number {
  return plan.rowBytes * (plan.sortScale ?? 1);
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

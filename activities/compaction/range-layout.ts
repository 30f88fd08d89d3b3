/**
 * How the out-of-core write cuts the output's ranks into ranges: how many one scatter pass may write
 * at once, which of them are sorted right away and which scattered again, which row groups of a
 * presorted input are copied as they are, and the ranges between them. Pure arithmetic, so it is tested
 * on its own.
 */
import { MIN_ROW_GROUP_ROWS, type RowGroupSize } from './output-format';
import type { PassthroughRun } from './presorted-inputs';

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

/**
 * The runs with a row group given back to every stretch of ranks between them (or before the first, or
 * after the last) that holds fewer than `minRows`: written on its own, such a stretch is a row group of
 * a few rows, which next week's run would copy as it is. The smaller neighbouring row group joins it
 * (runs hold row groups of at least `minRows`, so one is enough); a run left without one is dropped.
 */
export function withoutSmallGaps(rows: number, runs: readonly PassthroughRun[], minRows: number): PassthroughRun[] {
  const out = [...runs].sort((a, b) => a.start - b.start).map((r) => ({ ...r, groups: [...r.groups] }));
  for (let i = 0; i <= out.length; i++) {
    const before = out[i - 1];
    const after = out[i];
    const gap = (after ? after.start : rows) - (before ? before.start + before.rows : 0);
    if (gap === 0 || gap >= minRows || (!before && !after)) continue;
    const tail = before ? before.groups[before.groups.length - 1]!.rows : Infinity;
    const head = after ? after.groups[0]!.rows : Infinity;
    const run = tail <= head ? before! : after!;
    if (run === before) {
      run.to--;
      run.rows -= run.groups.pop()!.rows;
    } else {
      run.from++;
      run.start += head;
      run.rows -= run.groups.shift()!.rows;
    }
    if (!run.groups.length) out.splice(out.indexOf(run), 1);
    // Look at this stretch again: it is wider now, or merged with the next one.
    i = Math.max(-1, i - 2);
  }
  return out;
}

/**
 * The runs without every stretch of two or more neighbouring row groups that together fit one output
 * row group (`fit`): given back, such a stretch is sorted into one. Copying keeps any row group of a
 * quarter of the cap or more, so without this the small groups that weekly ingest landing at the same
 * place leaves behind would stay small for good. Only rows that were in small groups are rewritten.
 * `fit.rows` must be what one sorted range writes as one row group (oneRowGroupRows, and at most the
 * range size): a stretch that came back as two groups would be given back again every week.
 * Greedy from the start of each run: a stretch takes groups while they fit.
 */
export function withoutSmallNeighbours(runs: readonly PassthroughRun[], fit: RowGroupSize): PassthroughRun[] {
  const out: PassthroughRun[] = [];
  for (const run of runs) {
    let piece: PassthroughRun | undefined;
    let start = run.start;
    for (let i = 0; i < run.groups.length; ) {
      let j = i;
      let rows = 0;
      let bytes = 0;
      while (j < run.groups.length && rows + run.groups[j]!.rows <= fit.rows && bytes + run.groups[j]!.bytes <= fit.bytes) {
        rows += run.groups[j]!.rows;
        bytes += run.groups[j]!.bytes;
        j++;
      }
      if (j - i >= 2) {
        piece = undefined;
        start += rows;
        i = j;
        continue;
      }
      const group = run.groups[i]!;
      if (!piece) {
        piece = { input: run.input, from: run.from + i, to: run.from + i, start, rows: 0, groups: [] };
        out.push(piece);
      }
      piece.to++;
      piece.rows += group.rows;
      piece.groups.push(group);
      start += group.rows;
      i++;
    }
  }
  return out;
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

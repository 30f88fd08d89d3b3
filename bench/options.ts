/** Flags of `npm run bench`. */
import * as os from 'node:os';
import * as path from 'node:path';
import { parse, UsageError, wholeNumberFlag } from '../client/cli-args';

export type BenchCase = 'heavy' | 'memory' | 'weekly' | 'recent' | 'tiny';
const ALL_CASES: readonly BenchCase[] = ['heavy', 'memory', 'weekly', 'recent', 'tiny'];

export interface BenchOptions {
  /** Where the generated data lives; reused when its manifest matches. Default: a fresh temp dir, removed at the end. */
  dir?: string;
  keep: boolean;
  /** Input rows of the heavy bucket (about 20% of them re-emit an id). */
  rows: number;
  /** Part files the heavy bucket is split into. */
  parts: number;
  tiny: number;
  /** Tiny buckets compacted directly (no Temporal) to measure the engine's own time per tiny bucket. */
  tinySample: number;
  /** Memory budget of one bucket activity in the heavy (speed) and tiny cases. */
  memoryMb: number;
  /** Budget of the memory case: its bucket is at least 10x this uncompressed. */
  memoryCaseMb: number;
  threads: number;
  /** Workflow maxParallelBuckets and the worker's concurrent bucket activities. */
  parallel: number;
  cases: BenchCase[];
  quick: boolean;
  /** Alternating runs of the copy floor and compactBucket per bucket case; the table shows medians. */
  repeat: number;
}

const USAGE = `usage: npm run bench -- [--quick] [--rows N] [--parts N] [--tiny N] [--tiny-sample N]
  [--memory-mb MB] [--memory-case-mb MB] [--threads N] [--parallel N] [--repeat N] [--cases heavy,memory,weekly,recent,tiny] [--dir DIR] [--keep]`;

function whole(name: string, raw: string | undefined, fallback: number, min: number): number {
  const n = wholeNumberFlag(name, raw) ?? fallback;
  if (n < min) throw new UsageError(`--${name} must be a whole number >= ${min}, got ${JSON.stringify(raw)}\n${USAGE}`);
  return n;
}

export function parseBenchArgs(argv: string[]): BenchOptions {
  const { values } = parse(argv, {
    quick: { type: 'boolean' },
    rows: { type: 'string' },
    parts: { type: 'string' },
    tiny: { type: 'string' },
    'tiny-sample': { type: 'string' },
    'memory-mb': { type: 'string' },
    'memory-case-mb': { type: 'string' },
    threads: { type: 'string' },
    parallel: { type: 'string' },
    repeat: { type: 'string' },
    cases: { type: 'string' },
    dir: { type: 'string' },
    keep: { type: 'boolean' },
  });
  const quick = values.quick === true;
  const cases = values.cases
    ? values.cases.split(',').map((c) => c.trim()).filter(Boolean)
    : [...ALL_CASES];
  for (const c of cases) {
    if (!ALL_CASES.includes(c as BenchCase)) throw new UsageError(`--cases: unknown case ${c} (known: ${ALL_CASES.join(', ')})`);
  }
  const dir = values.dir ? path.resolve(values.dir) : undefined;
  return {
    dir,
    keep: values.keep === true || dir !== undefined,
    rows: whole('rows', values.rows, quick ? 400_000 : 4_000_000, 1_000),
    parts: whole('parts', values.parts, 8, 2),
    tiny: whole('tiny', values.tiny, quick ? 200 : 2_000, 1),
    tinySample: whole('tiny-sample', values['tiny-sample'], quick ? 100 : 200, 1),
    // A production budget for speed (a 32 GB worker runs ~7 such buckets at once); the memory case
    // takes a small one so that the heavy bucket is 10x+ of it. Quick: 256 MB, which gets its own
    // 1.6M-row bucket (at 64 MB even the copy floor runs out of memory on these rows).
    memoryMb: whole('memory-mb', values['memory-mb'], 2048, 16),
    memoryCaseMb: whole('memory-case-mb', values['memory-case-mb'], quick ? 256 : 512, 16),
    threads: whole('threads', values.threads, os.cpus().length, 1),
    parallel: whole('parallel', values.parallel, 8, 1),
    cases: cases as BenchCase[],
    quick,
    repeat: whole('repeat', values.repeat, quick ? 1 : 3, 1),
  };
}

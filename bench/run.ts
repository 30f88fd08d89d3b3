/**
 * `npm run bench`: generates its data, runs every case in a process of its own, prints a markdown
 * table and ends with `worst ratio to copy floor: X.XX`. See bench/options.ts for the flags.
 *
 *   heavy   copy floor and compactBucket on one bucket of --rows STAC-like rows (~20% duplicate ids),
 *           with a --memory-mb budget
 *   memory  the same with a --memory-case-mb budget, on a bucket whose uncompressed data is >= 10x that
 *           budget (the heavy bucket when it is that large already)
 *   weekly  the steady state: the heavy bucket as compacted last week (one sorted file) plus two new
 *           parts of ingest (new ids and updates, anywhere in the year), at the --memory-mb budget
 *   recent  the same output plus two parts of recent acquisitions (new items of the year's last week,
 *           updates of its last four weeks): most of last week's row groups are copied as they are
 *   tiny    --tiny-sample tiny buckets compacted directly (the engine's own time), then --tiny tiny
 *           buckets through compactWarehouse on a Temporal dev server with an in-process worker
 */
import { promises as fs, createReadStream } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../client/cli-args';
import { firstLine } from '../activities/error-text';
import type { BucketTask } from '../workflows/contract';
import { bucketPrefix } from '../workflows/contract';
import { linkBucketInto, prepareData, type BucketData, type BenchData } from './bench-data';
import type { ChildResult, EngineSettings } from './child-jobs';
import { engineThreads } from './engine-cases';
import { parseBenchArgs, type BenchOptions } from './options';
import { formatTable, worstRatioLine, type CaseRow } from './report';
import { CaseFailedError, spawnCase } from './spawn-case';
import { layOutTinyBuckets, templatesOf, tinyBucket, TINY_ROWS_IN, TINY_ROWS_OUT } from './tiny-buckets';

const MB = 1024 * 1024;
const log = (line: string): void => void process.stderr.write(`${line}\n`);

class Bench {
  readonly rows: CaseRow[] = [];
  readonly notes: string[] = [];
  failed = false;
  /** Peak RSS of the idle engine process: what every case pays before it does any work. */
  idleRssMb: number | undefined;

  constructor(
    readonly opts: BenchOptions,
    readonly data: BenchData,
    readonly runs: string,
  ) {}

  settings(name: string, threads = this.opts.threads, memoryMb = this.opts.memoryMb): EngineSettings {
    return { memoryMb, threads, scratch: path.join(this.runs, name, 'scratch') };
  }

  /** A failed case becomes a row saying so; the other cases still run and the table is still printed. */
  async attempt(name: string, run: () => Promise<ChildResult>): Promise<ChildResult | undefined> {
    log(`running ${name} ...`);
    try {
      const r = await run();
      log(`  ${r.seconds.toFixed(2)} s, peak RSS ${r.maxRssMb.toFixed(0)} MB`);
      return r;
    } catch (err) {
      if (!(err instanceof CaseFailedError)) throw err;
      this.failed = true;
      this.rows.push({ name, note: `FAILED: ${firstLine(err)}` });
      return undefined;
    }
  }

  async baseline(probe: string): Promise<void> {
    const r = await this.attempt('baseline', () =>
      spawnCase('baseline', { kind: 'baseline', settings: this.settings('baseline'), probe }, this.runs),
    );
    if (!r) return;
    this.idleRssMb = r.maxRssMb;
    this.rows.push({ name: 'idle engine process (fixed overhead)', peakRssMb: r.maxRssMb, note: 'Node + tsx + engine modules + one DuckDB instance' });
  }

  /**
   * The copy floor and compactBucket, alternately --repeat times: wall times on a shared machine vary
   * by a third from run to run, so the table shows each one's median run (peak RSS: the highest of all).
   * A failed run is a row of its own and fails the bench; the runs that passed still make the case's row.
   */
  async bucket(label: string, d: BucketData, memoryMb: number, extraNote: string): Promise<void> {
    const dir = path.join(this.runs, label);
    await warmPageCache(d);
    const bytesIn = d.bytesOnDisk;
    await fs.mkdir(dir, { recursive: true });
    const floors: ChildResult[] = [];
    const compacts: ChildResult[] = [];
    for (let run = 0; run < this.opts.repeat; run++) {
      const floor = await this.copyFloor(label, d, memoryMb, dir);
      if (floor) floors.push(floor);
      const compact = await this.compact(label, d, memoryMb, dir);
      if (compact) compacts.push(compact);
    }
    if (!compacts.length) return;
    const floor = median(floors);
    const compact = median(compacts)!;
    const samples = (rs: ChildResult[]) => rs.map((r) => r.seconds.toFixed(1)).join(' / ');
    if (floor) {
      this.rows.push({
        name: `${label}: copy floor`,
        buckets: 1,
        rowsIn: floor.rowsIn,
        rowsOut: floor.rowsOut,
        bytesIn,
        seconds: floor.seconds,
        cpuSeconds: floor.cpuSeconds,
        peakRssMb: Math.max(...floors.map((r) => r.maxRssMb)),
        memoryMb,
        note: `read + write unchanged, zstd, ${engineThreads(this.settings(label, this.opts.threads, memoryMb))} thread(s)`,
      });
    }
    const correct = compacts.every((c) => c.rowsIn === d.rowsIn && c.rowsOut === d.rowsOut);
    if (!correct) this.failed = true;
    const peakRssMb = Math.max(...compacts.map((r) => r.maxRssMb));
    this.rows.push({
      name: `${label}: compactBucket`,
      buckets: 1,
      rowsIn: compact.rowsIn,
      rowsOut: compact.rowsOut,
      bytesIn,
      seconds: compact.seconds,
      cpuSeconds: compact.cpuSeconds,
      peakRssMb,
      memoryMb,
      ratio: floor ? compact.seconds / floor.seconds : undefined,
      note: correct ? extraNote : `WRONG RESULT: expected ${d.rowsIn} → ${d.rowsOut} rows`,
    });
    if (this.opts.repeat > 1) {
      const failedRuns = this.opts.repeat - compacts.length;
      this.notes.push(
        `${label}: ${this.opts.repeat} alternating runs, seconds: copy floor ${samples(floors)}; compactBucket ${samples(compacts)}` +
          `${failedRuns ? ` (${failedRuns} failed, see its row)` : ''} (medians in the table)`,
      );
    }
    const peak = new Map(compact.phasePeakRssMb ?? []);
    const phases = (compact.phases ?? [])
      .map(([p, s]) => `${p} ${s.toFixed(1)} s${peak.has(p) ? ` (RSS ≤ ${peak.get(p)!.toFixed(0)} MB)` : ''}`)
      .join(', ');
    this.notes.push(
      `${label}: ${(d.uncompressedBytes / MB).toFixed(0)} MB uncompressed (Parquet pages) = ` +
        `${(d.uncompressedBytes / (memoryMb * MB)).toFixed(1)}x the ${memoryMb} MB budget, ` +
        `${(bytesIn / MB).toFixed(0)} MB on disk; compactBucket peak scratch ${compact.peakScratchMb.toFixed(0)} MB` +
        (floor ? `; CPU-time ratio ${(compact.cpuSeconds / floor.cpuSeconds).toFixed(2)}` : '') +
        (compact.copiedRowGroups ? `; copied as they are: ${compact.copiedRowGroups} row groups, ${compact.copiedRows?.toLocaleString()} rows` : '') +
        `; phases: ${phases}`,
    );
    if (this.idleRssMb !== undefined) {
      const beyond = peakRssMb - memoryMb - this.idleRssMb;
      this.notes.push(
        `${label}: memory: compactBucket peak RSS ${peakRssMb.toFixed(0)} MB = budget ${memoryMb} MB + ` +
          `idle process ${this.idleRssMb.toFixed(0)} MB ${beyond >= 0 ? '+' : '−'} ${Math.abs(beyond).toFixed(0)} MB`,
      );
    }
  }

  private async copyFloor(label: string, d: BucketData, memoryMb: number, dir: string): Promise<ChildResult | undefined> {
    const out = path.join(dir, 'copy-floor.parquet');
    try {
      return await this.attempt(`${label}: copy floor`, () =>
        spawnCase(`${label}-floor`, {
          kind: 'copy-floor',
          settings: this.settings(`${label}-floor`, this.opts.threads, memoryMb),
          inputs: d.inputs.map((i) => path.join(d.warehouse, i.key)),
          out,
        }, dir),
      );
    } finally {
      await fs.rm(out, { force: true });
    }
  }

  private async compact(label: string, d: BucketData, memoryMb: number, dir: string): Promise<ChildResult | undefined> {
    const warehouse = path.join(dir, 'warehouse');
    await fs.rm(warehouse, { recursive: true, force: true });
    await linkBucketInto(d, warehouse);
    try {
      return await this.attempt(`${label}: compactBucket`, () =>
        spawnCase(`${label}-compact`, {
          kind: 'compact',
          settings: this.settings(`${label}-compact`, this.opts.threads, memoryMb),
          warehouse,
          bucket: d.bucket,
          inputs: d.inputs,
        }, dir),
      );
    } finally {
      await fs.rm(warehouse, { recursive: true, force: true });
    }
  }

  async tiny(templates: readonly string[]): Promise<void> {
    const sizes = new Map(await Promise.all(templates.map(async (t) => [t, (await fs.stat(t)).size] as const)));
    // Every year's templates are about the same size (7 rows of the same shape).
    const bytesPerBucket = templatesOf(templates, tinyBucket(0).year).reduce((s, t) => s + sizes.get(t)!, 0);
    const tasksFor = (buckets: { cell: string; year: number }[]): BucketTask[] =>
      buckets.map((bucket) => ({
        bucket,
        inputs: templatesOf(templates, bucket.year).map((t) => ({ key: `${bucketPrefix(bucket)}/${path.basename(t)}`, size: sizes.get(t)! })),
      }));
    // One DuckDB thread per bucket: the worker runs `parallel` of them at once on a few cores.
    const threads = 1;

    const sampleDir = path.join(this.runs, 'tiny-sample');
    const sampleCount = Math.min(this.opts.tinySample, this.opts.tiny);
    const sampleWarehouse = path.join(sampleDir, 'warehouse');
    const warmupCount = this.opts.parallel;
    const laidOut = await layOutTinyBuckets(sampleWarehouse, templates, warmupCount + sampleCount);
    const direct = await this.attempt('tiny: engine only', () =>
      spawnCase('tiny-direct', {
        kind: 'tiny-direct',
        settings: this.settings('tiny-direct', threads),
        warehouse: sampleWarehouse,
        warmup: tasksFor(laidOut.slice(0, warmupCount)),
        tasks: tasksFor(laidOut.slice(warmupCount)),
        parallel: this.opts.parallel,
      }, sampleDir),
    );
    await fs.rm(sampleDir, { recursive: true, force: true });
    const enginePerBucket = direct ? direct.seconds / sampleCount : undefined;
    if (direct) {
      const phases = (direct.phases ?? []).map(([p, sec]) => `${p} ${(sec * 1000).toFixed(1)} ms`).join(', ');
      this.notes.push(`tiny, compactBucket only: latency per bucket with ${this.opts.parallel} at a time: ${phases}`);
      const correct = !direct.bucketsFailed && direct.rowsOut === TINY_ROWS_OUT * sampleCount;
      if (!correct) this.failed = true;
      this.rows.push({
        name: `tiny: compactBucket only, ${this.opts.parallel} at a time`,
        buckets: sampleCount,
        rowsIn: direct.rowsIn,
        rowsOut: direct.rowsOut,
        bytesIn: bytesPerBucket * sampleCount,
        seconds: direct.seconds,
        cpuSeconds: direct.cpuSeconds,
        peakRssMb: direct.maxRssMb,
        note: !correct
          ? `WRONG RESULT: ${direct.bucketsFailed} failed, ${direct.rowsOut} rows out`
          : `engine ${((enginePerBucket ?? 0) * 1000).toFixed(1)} ms/bucket (no Temporal)`,
      });
    }

    const dir = path.join(this.runs, 'tiny');
    const warehouse = path.join(dir, 'warehouse');
    log(`laying out ${this.opts.tiny} tiny buckets ...`);
    await layOutTinyBuckets(warehouse, templates, this.opts.tiny);
    const orch = await this.attempt('tiny: compactWarehouse on Temporal', () =>
      spawnCase('orchestration', {
        kind: 'orchestration',
        settings: this.settings('orchestration', threads),
        warehouse,
        catalog: path.join(dir, 'catalog.db'),
        parallel: this.opts.parallel,
      }, dir),
    );
    await fs.rm(dir, { recursive: true, force: true });
    if (!orch) return;
    const n = this.opts.tiny;
    const correct = orch.buckets === n && !orch.bucketsFailed && orch.rowsIn === TINY_ROWS_IN * n && orch.rowsOut === TINY_ROWS_OUT * n;
    if (!correct) this.failed = true;
    const span = (name: string) => orch.phases?.find(([p]) => p === name)?.[1];
    const bucketSpan = span('buckets');
    this.rows.push({
      name: 'tiny: compactWarehouse on Temporal',
      buckets: orch.buckets,
      rowsIn: orch.rowsIn,
      rowsOut: orch.rowsOut,
      bytesIn: bytesPerBucket * n,
      seconds: orch.seconds,
      cpuSeconds: orch.cpuSeconds,
      peakRssMb: orch.maxRssMb,
      overheadPerBucket:
        bucketSpan !== undefined && enginePerBucket !== undefined ? (bucketSpan - enginePerBucket * n) / n : undefined,
      note: correct
        ? `${(n / orch.seconds).toFixed(1)} buckets/s; worker ${this.opts.parallel} buckets at a time, workflow maxParallelBuckets ${this.opts.parallel}`
        : `WRONG RESULT: ${orch.buckets} compacted, ${orch.bucketsFailed} failed`,
    });
    this.notes.push(
      `tiny on Temporal: wall ${orch.seconds.toFixed(1)} s = plan ${span('plan')?.toFixed(1)} s + bucket activities ` +
        `${bucketSpan?.toFixed(1)} s + catalog rebuild ${span('catalog')?.toFixed(1)} s (+ locks, workflow tasks); ` +
        `${orch.workflowRuns} workflow run(s); orchestration overhead per bucket = (bucket-activity span − ` +
        `${n} × engine time per tiny bucket) / ${n}`,
    );
  }
}

/** The run with the median wall time (the lower middle one of an even count). */
function median(results: readonly ChildResult[]): ChildResult | undefined {
  const sorted = [...results].sort((x, y) => x.seconds - y.seconds);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** Reads the inputs once, so the copy floor and the compaction both start from a warm page cache. */
async function warmPageCache(d: BucketData): Promise<void> {
  for (const input of d.inputs) {
    await new Promise<void>((resolve, reject) => {
      const s = createReadStream(path.join(d.warehouse, input.key), { highWaterMark: 4 * MB });
      s.on('data', () => undefined);
      s.on('end', resolve);
      s.on('error', reject);
    });
  }
}

async function main(): Promise<void> {
  const opts = parseBenchArgs(process.argv.slice(2));
  const root = opts.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'ec-bench-')));
  const [load1] = os.loadavg();
  log(
    `bench: ${os.cpus().length} cores (load ${load1!.toFixed(2)}), ${(os.totalmem() / 1024 ** 3).toFixed(0)} GB RAM; ` +
      `budget ${opts.memoryMb} MB (memory case ${opts.memoryCaseMb} MB), ${opts.threads} thread(s); data in ${root}`,
  );
  const has = (c: BenchOptions['cases'][number]) => opts.cases.includes(c);
  const runs = path.join(root, 'runs');
  try {
    const data = await prepareData(root, {
      rows: opts.rows,
      parts: opts.parts,
      memoryCaseMb: opts.memoryCaseMb,
      threads: opts.threads,
      heavy: has('heavy'),
      memory: has('memory'),
      weekly: has('weekly'),
      recent: has('recent'),
      tiny: has('tiny'),
      log,
    });
    await fs.rm(runs, { recursive: true, force: true });
    const bench = new Bench(opts, data, runs);
    const probe = data.heavy ? path.join(data.heavy.warehouse, data.heavy.inputs[0]!.key) : data.tinyTemplates![0]!;
    await bench.baseline(probe);

    const timesBudget = (d: BucketData, mb: number): string => `${(d.uncompressedBytes / (mb * MB)).toFixed(1)}x the budget`;
    if (data.heavy && has('heavy')) await bench.bucket('heavy', data.heavy, opts.memoryMb, timesBudget(data.heavy, opts.memoryMb));
    const memoryCase = data.memory ?? data.heavy;
    if (memoryCase && has('memory')) {
      await bench.bucket('memory', memoryCase, opts.memoryCaseMb, `${timesBudget(memoryCase, opts.memoryCaseMb)}: bounded memory`);
    }
    if (data.weekly && has('weekly')) {
      await bench.bucket('weekly', data.weekly, opts.memoryMb, `last week's output + ${data.weekly.inputs.length - 1} new parts`);
    }
    if (data.recent && has('recent')) {
      await bench.bucket('recent', data.recent, opts.memoryMb, `last week's output + ${data.recent.inputs.length - 1} parts of recent acquisitions`);
    }
    if (data.tinyTemplates) await bench.tiny(data.tinyTemplates);

    const title =
      `bench ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores, load ${load1!.toFixed(2)} at start; ` +
      `memory budget ${opts.memoryMb} MB (memory case ${opts.memoryCaseMb} MB), threads ${opts.threads}${opts.quick ? ' (--quick)' : ''}`;
    process.stdout.write(`\n${title}\n\n${formatTable(bench.rows)}\n\n`);
    for (const n of bench.notes) process.stdout.write(`- ${n}\n`);
    process.stdout.write(`\n${worstRatioLine(bench.rows)}\n`);
    if (bench.failed) process.exitCode = 1;
  } finally {
    await fs.rm(runs, { recursive: true, force: true });
    if (!opts.keep) await fs.rm(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  if (err instanceof UsageError) {
    log(err.message);
    process.exitCode = 2;
    return;
  }
  log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});

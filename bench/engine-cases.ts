/**
 * The cases that run the engine without Temporal, each inside its own case process: the idle
 * baseline, the copy floor, one real compactBucket, and a sample of tiny buckets.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { compactBucket, threadsFor, type BucketPhase } from '../activities/compaction/compact-bucket';
import { duckdbMemoryLimitMb } from '../activities';
import { DuckSessionPool } from '../activities/compaction/duckdb-pool';
import { openDuckSession, sqlString, sqlStringList } from '../activities/compaction/duckdb-session';
import { inputFootprint } from '../activities/compaction/input-footprint';
import { outputRowGroup } from '../activities/compaction/output-format';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import type { BucketResult, BucketTask } from '../workflows/contract';
import type { ChildJob, EngineSettings } from './child-jobs';
import type { Measured } from './measure';

/**
 * The thread count compactBucket gives DuckDB for a budget: the copy floor must run with the same
 * settings, or a small budget would compare 1 thread against 2.
 */
export function engineThreads(s: EngineSettings): number {
  return threadsFor({ threads: s.threads, memoryLimitMb: duckdbMemoryLimitMb(s.memoryMb) });
}

/** Node, tsx, the engine's modules and one open DuckDB instance that has read a Parquet footer: the fixed cost. */
export async function runBaseline(job: Extract<ChildJob, { kind: 'baseline' }>, m: Measured): Promise<void> {
  const s = job.settings;
  const session = await openDuckSession({ memoryLimitMb: duckdbMemoryLimitMb(s.memoryMb), threads: engineThreads(s), tempDir: path.join(s.scratch, 'spill') });
  try {
    await m.time(async () => {
      await session.rows(`SELECT count(*) AS n FROM read_parquet(${sqlString(job.probe)}, hive_partitioning = false)`);
    });
  } finally {
    session.close();
  }
}

/**
 * DuckDB reading the same inputs with the same session and read options as the engine and writing
 * them unchanged to one zstd file with the engine's row-group sizing: the least any compaction costs.
 */
export async function runCopyFloor(job: Extract<ChildJob, { kind: 'copy-floor' }>, m: Measured): Promise<void> {
  const s = job.settings;
  await m.time(async () => {
    const memoryLimitMb = duckdbMemoryLimitMb(s.memoryMb);
    const session = await openDuckSession({ memoryLimitMb, threads: engineThreads(s), tempDir: path.join(s.scratch, 'spill') });
    try {
      const inputs = job.inputs.map((p) => ({ key: p, path: p, size: 0 }));
      const { rowBytes } = await inputFootprint(session, inputs);
      // compactBucket's output row groups, for the same write cost per row.
      const rg = outputRowGroup(memoryLimitMb * 1024 * 1024, rowBytes);
      const [r] = await session.rows(
        `COPY (SELECT * FROM read_parquet(${sqlStringList(job.inputs)}, union_by_name = true, hive_partitioning = false))
           TO ${sqlString(job.out)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${rg.rows}, ROW_GROUP_SIZE_BYTES ${rg.bytes})`,
      );
      const rows = Number(r?.Count ?? r?.count ?? 0);
      m.set({ rowsIn: rows, rowsOut: rows, bytesOut: (await fs.stat(job.out)).size });
    } finally {
      session.close();
    }
  });
}

/** Seconds per phase of one compactBucket call, from its heartbeats; a phase entered twice is summed. */
class PhaseClock {
  private current: { phase: BucketPhase; since: number } | undefined;
  readonly peakRss = new Map<string, number>();

  constructor(private readonly sums: Map<string, number>) {}

  /** Notes the resident set against the phase now running (DuckDB works on its own threads meanwhile). */
  sampleRss(): void {
    if (!this.current) return;
    const mb = process.memoryUsage.rss() / (1024 * 1024);
    this.peakRss.set(this.current.phase, Math.max(this.peakRss.get(this.current.phase) ?? 0, mb));
  }

  mark(phase: BucketPhase | 'end'): void {
    const now = performance.now();
    if (this.current && phase === this.current.phase) return;
    if (this.current) this.sums.set(this.current.phase, (this.sums.get(this.current.phase) ?? 0) + (now - this.current.since) / 1000);
    this.current = phase === 'end' ? undefined : { phase, since: now };
  }
}

/** One real compaction of a bucket (verify, publish and delete included), with the time of each phase. */
export async function runCompact(job: Extract<ChildJob, { kind: 'compact' }>, m: Measured): Promise<void> {
  const s = job.settings;
  const store = new LocalWarehouseStore(job.warehouse);
  const sums = new Map<string, number>();
  const clock = new PhaseClock(sums);
  let result: BucketResult | undefined;
  let copied: { copiedRowGroups: number; copiedRows: number } | undefined;
  const sampler = setInterval(() => clock.sampleRss(), 200);
  try {
    await m.time(async () => {
      result = await compactBucket(
        store,
        { bucket: job.bucket, inputs: job.inputs, warehouse: job.warehouse, planId: `bench${Date.now()}` },
        {
          scratchDir: s.scratch,
          memoryLimitMb: duckdbMemoryLimitMb(s.memoryMb),
          threads: s.threads,
          heartbeat: (p) => {
            clock.sampleRss();
            clock.mark(p.phase);
            if (p.passthroughRowGroups !== undefined) copied = { copiedRowGroups: p.passthroughRowGroups, copiedRows: p.passthroughRows ?? 0 };
          },
        },
      );
      clock.mark('end');
    });
  } finally {
    clearInterval(sampler);
  }
  m.set({
    rowsIn: result?.rowsIn,
    rowsOut: result?.rowsOut,
    bytesOut: result?.bytesOut,
    phases: [...sums],
    phasePeakRssMb: [...clock.peakRss],
    ...copied,
  });
}

/** Tiny buckets compacted directly with the worker's concurrency: the engine's own cost per tiny bucket. */
export async function runTinyDirect(job: Extract<ChildJob, { kind: 'tiny-direct' }>, m: Measured): Promise<void> {
  const s = job.settings;
  const store = new LocalWarehouseStore(job.warehouse);
  const planId = `bench${Date.now()}`;
  let rowsIn = 0;
  let rowsOut = 0;
  let failed = 0;
  let seq = 0;
  const sums = new Map<string, number>();
  // As in the worker: one DuckDB session per lane, kept open between buckets.
  const sessions = new DuckSessionPool(path.join(s.scratch, 'duckdb'), job.parallel);
  const compactAll = async (tasks: readonly BucketTask[], count: boolean): Promise<void> => {
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < tasks.length) {
        const task = tasks[next++]!;
        const i = seq++;
        const clock = new PhaseClock(count ? sums : new Map());
        try {
          const r = await compactBucket(
            store,
            { ...task, warehouse: job.warehouse, planId },
            {
              scratchDir: path.join(s.scratch, String(i)),
              memoryLimitMb: duckdbMemoryLimitMb(s.memoryMb),
              threads: s.threads,
              sessions,
              heartbeat: (p) => clock.mark(p.phase),
            },
          );
          clock.mark('end');
          if (!count) continue;
          rowsIn += r.rowsIn;
          rowsOut += r.rowsOut;
        } catch (err) {
          failed++;
          if (failed === 1) console.error(`tiny bucket ${i} failed: ${(err as Error).message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(job.parallel, tasks.length) }, lane));
  };
  try {
    await compactAll(job.warmup, false);
    await m.time(() => compactAll(job.tasks, true));
  } finally {
    await sessions.close();
  }
  // Per bucket: the latency of each phase while `parallel` buckets share the cores.
  const phases = [...sums].map(([p, sec]): [string, number] => [p, sec / job.tasks.length]);
  m.set({ rowsIn, rowsOut, buckets: job.tasks.length, bucketsFailed: failed, phases });
}

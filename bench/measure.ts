/** Measurements taken inside a case process: wall time of the work, peak RSS, peak scratch usage. */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { ChildResult } from './child-jobs';

const MB = 1024 * 1024;

/** Bytes under a directory now; files may vanish while it is walked (DuckDB deletes spill files). */
export async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) total += await directoryBytes(full);
    else if (e.isFile()) total += (await fs.stat(full).catch(() => undefined))?.size ?? 0;
  }
  return total;
}

export class Measured {
  private seconds = 0;
  private cpuSeconds = 0;
  private startRss = process.memoryUsage().rss;
  private peakScratch = 0;
  private extra: Partial<ChildResult> = {};

  constructor(private readonly scratch: string) {}

  /** Times `work`, sampling the scratch directory's size meanwhile. */
  async time<T>(work: () => Promise<T>): Promise<T> {
    this.startRss = process.memoryUsage().rss;
    let sampling = false;
    const timer = setInterval(() => {
      if (sampling) return;
      sampling = true;
      void directoryBytes(this.scratch)
        .then((b) => (this.peakScratch = Math.max(this.peakScratch, b)))
        .finally(() => (sampling = false));
    }, 500);
    const started = performance.now();
    const cpu = process.cpuUsage();
    try {
      return await work();
    } finally {
      this.seconds = (performance.now() - started) / 1000;
      const used = process.cpuUsage(cpu);
      this.cpuSeconds = (used.user + used.system) / 1e6;
      clearInterval(timer);
    }
  }

  set(patch: Partial<ChildResult>): void {
    Object.assign(this.extra, patch);
  }

  result(): ChildResult {
    return {
      ...this.extra,
      seconds: this.seconds,
      cpuSeconds: this.cpuSeconds,
      // ru_maxrss is in kilobytes on Linux.
      maxRssMb: process.resourceUsage().maxRSS / 1024,
      startRssMb: this.startRss / MB,
      peakScratchMb: this.peakScratch / MB,
    };
  }
}

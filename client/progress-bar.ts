/**
 * Renders compaction progress: a redrawn bar on a terminal; otherwise (a log file, a pipe) a line per
 * phase change, and while buckets complete at most one line every LOG_LINE_EVERY_MS, so that a log of a
 * run of hours shows it moving.
 */
import type { CompactionProgress } from '../workflows/progress';

export const LOG_LINE_EVERY_MS = 30_000;

export function createProgressRenderer(stream: Pick<NodeJS.WriteStream, 'write' | 'isTTY' | 'columns'> = process.stderr, now: () => number = Date.now) {
  // Phase and the holder of a lock the run waits for: the holder is known a moment after the wait
  // begins, and a log that printed the phase without it would not say whom the run waits for.
  let lastState = '';
  let lastDone = -1;
  let lastLineAt = 0;
  let drawn = false;
  return {
    update(p: CompactionProgress): void {
      if (stream.isTTY) {
        stream.write(`\r\x1b[2K${progressLine(p, stream.columns ?? 100)}`);
        drawn = true;
        return;
      }
      const state = stateOf(p);
      if (state !== lastState || (p.bucketsDone !== lastDone && now() - lastLineAt >= LOG_LINE_EVERY_MS)) {
        stream.write(`${progressLine(p, 100)}\n`);
        lastDone = p.bucketsDone;
        lastLineAt = now();
      }
      lastState = state;
    },
    finish(): void {
      if (drawn) stream.write('\n');
    },
    /** A line of its own above the bar, which the next update draws again. */
    note(line: string): void {
      stream.write(drawn && stream.isTTY ? `\r\x1b[2K${line}\n` : `${line}\n`);
    },
  };
}

function stateOf(p: CompactionProgress): string {
  return `${p.phase} ${waitingFor(p)?.holder ?? ''}`;
}

function waitingFor(p: CompactionProgress) {
  return p.locks.find((l) => l.status === 'queued');
}

export function progressLine(p: CompactionProgress, width: number, closed = false): string {
  const total = Math.max(p.bucketsTotal, 1);
  const barWidth = Math.max(10, Math.min(40, width - 70));
  // Clamped: the counts come from a workflow, and a plan edited by hand once made done exceed total.
  const filled = Math.min(barWidth, Math.max(0, Math.round((p.bucketsDone / total) * barWidth)));
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]`;
  const waiting = waitingFor(p);
  // A run that ended early stopped in that phase; it is not still in it.
  const phase = closed ? (p.phase === 'done' ? p.phase : `last phase ${p.phase}`) : waiting ? `${p.phase} (held by ${waiting.holder ?? '?'})` : p.phase;
  return `${bar} ${p.bucketsDone}/${p.bucketsTotal} buckets · rows ${p.rowsBefore}→${p.rowsAfter} · failed ${p.bucketsFailed} · ${phase}`;
}

/**
 * DuckDB sessions of one worker, kept open between bucket attempts: opening an instance costs ~20 ms,
 * about as much as compacting a tiny bucket, and most buckets are tiny. A session goes back to the pool
 * only after an attempt that ended without an error and left no tables behind; anything else is
 * closed. At most one idle session per concurrent bucket is kept, so whatever memory an idle session
 * still holds is within the memory the worker already grants that many buckets.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { openDuckSession, type DuckSession } from './duckdb-session';

export interface PooledSessionSettings {
  memoryLimitMb: number;
  threads: number;
}

interface Idle {
  key: string;
  session: DuckSession;
  spillDir: string;
}

export interface LeasedSession {
  session: DuckSession;
  /** Returns the session: `reusable` only when the attempt ended without an error. */
  release(reusable: boolean): Promise<void>;
}

export class DuckSessionPool {
  private readonly idle: Idle[] = [];

  /**
   * @param root directory for the sessions' spill directories
   * @param maxIdle sessions kept open while unused (0: every session is closed after use)
   */
  constructor(
    private readonly root: string,
    private readonly maxIdle: number,
  ) {}

  async acquire(settings: PooledSessionSettings): Promise<LeasedSession> {
    const key = `${settings.memoryLimitMb}:${settings.threads}`;
    const i = this.idle.findIndex((s) => s.key === key);
    const entry = i >= 0 ? this.idle.splice(i, 1)[0]! : await this.open(key, settings);
    return { session: entry.session, release: (reusable) => this.release(entry, reusable) };
  }

  private async open(key: string, settings: PooledSessionSettings): Promise<Idle> {
    const spillDir = path.join(this.root, `session-${randomUUID().slice(0, 8)}`);
    const session = await openDuckSession({ ...settings, tempDir: spillDir });
    return { key, session, spillDir };
  }

  private async release(entry: Idle, reusable: boolean): Promise<void> {
    if (reusable && this.idle.length < this.maxIdle && (await this.isClean(entry.session))) {
      this.idle.push(entry);
      return;
    }
    await this.discard(entry);
  }

  private async isClean(session: DuckSession): Promise<boolean> {
    try {
      const [r] = await session.rows('SELECT count(*) AS tables FROM duckdb_tables()');
      return Number(r?.tables) === 0;
    } catch {
      return false;
    }
  }

  private async discard(entry: Idle): Promise<void> {
    entry.session.close();
    await fs.rm(entry.spillDir, { recursive: true, force: true });
  }

  /** Sessions open and unused right now. */
  get idleCount(): number {
    return this.idle.length;
  }

  /** Closes the idle sessions (worker shutdown). */
  async close(): Promise<void> {
    for (const entry of this.idle.splice(0)) await this.discard(entry);
  }
}

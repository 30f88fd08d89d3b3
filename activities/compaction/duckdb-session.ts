/**
 * One DuckDB instance with the settings every Parquet job of this project needs: a memory limit,
 * a thread count, an explicit spill directory, and no GeoParquet conversion (the geometry column must
 * stay WKB BLOB and DuckDB must not add a `geo` key of its own).
 */
import { promises as fs } from 'node:fs';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import type { JS } from '@duckdb/node-api';

export interface DuckSessionOptions {
  memoryLimitMb?: number;
  threads?: number;
  /**
   * Spill directory; created if needed. Without it DuckDB would spill into '.tmp' of the cwd. Tables of
   * the in-memory database spill here too (measured: faster and with far less resident memory than a
   * disk-backed database file for the same work).
   */
  tempDir: string;
}

export interface DuckSession {
  readonly conn: DuckDBConnection;
  /** Runs a statement and returns its rows as plain JS objects. */
  rows(sql: string): Promise<Record<string, JS>[]>;
  /** Runs a statement whose result is ignored. */
  exec(sql: string): Promise<void>;
  close(): void;
}

export async function openDuckSession(opts: DuckSessionOptions): Promise<DuckSession> {
  await fs.mkdir(opts.tempDir, { recursive: true });
  const config: Record<string, string> = { temp_directory: opts.tempDir };
  if (opts.memoryLimitMb) config.memory_limit = `${Math.max(16, Math.floor(opts.memoryLimitMb))}MB`;
  if (opts.threads) config.threads = String(Math.max(1, Math.floor(opts.threads)));
  const instance = await DuckDBInstance.create(':memory:', config);
  const conn = await instance.connect();
  const session: DuckSession = {
    conn,
    async rows(sql) {
      const reader = await conn.runAndReadAll(sql);
      return reader.getRowObjectsJS();
    },
    async exec(sql) {
      await conn.run(sql);
    },
    close() {
      conn.closeSync();
      instance.closeSync();
    },
  };
  try {
    // As a setting, not in the instance's config: there DuckDB 1.5 left its default in place (measured).
    await session.exec(`SET max_temp_directory_size = '${await spillCap(opts.tempDir)}'`);
    await session.exec('SET enable_geoparquet_conversion = false');
    // Parquet timestamps are UTC instants; a fixed zone keeps casts to text identical on every machine.
    await session.exec("SET TimeZone = 'UTC'");
    // Lets big sorts and joins spill instead of keeping insertion order in memory.
    await session.exec('SET preserve_insertion_order = false');
    // Every file is read once or twice, and the cache's blocks come on top of the memory budget
    // (measured: peak RSS 1.13 GB with it, 0.72 GB without, on the 4M-row bench bucket at 256 MB).
    await session.exec('SET enable_external_file_cache = false');
  } catch (err) {
    session.close();
    throw err;
  }
  return session;
}

/**
 * The whole size of the spill directory's filesystem, so that only the filesystem limits the spill. DuckDB's
 * default cap is 90 % of the space free when it first spills, frozen for the instance's life: a pooled
 * session that first spilled while the disk was nearly full kept a cap of a few MB after space was freed,
 * and going over it reads "Out of Memory Error" (measured on a filled tmpfs), which sent the operator to
 * the memory budget. A full disk now fails as the operating system's "No space left on device", naming
 * the spill file, and the same session spills again once there is room.
 */
async function spillCap(dir: string): Promise<string> {
  const { blocks, bsize } = await fs.statfs(dir);
  return `${Math.max(1, Math.ceil((blocks * bsize) / 1048576))}MiB`;
}

/** DuckDB ran out of its memory_limit (its own error, not the operating system's, nor the cap on its spill files). */
export function isOutOfMemory(err: unknown): boolean {
  return err instanceof Error && /\bOut of Memory Error\b/.test(err.message) && !/\bmax_temp_directory_size\b/.test(err.message);
}

/**
 * Runs a statement that leaves nothing behind when it fails (CREATE TABLE AS, a query); when DuckDB runs
 * out of memory, runs it once more on one thread, then gives the session its threads back. Spilling
 * aggregates keep state per thread, and near a small memory_limit two threads now and then outgrow it
 * where one does not (measured on the 4M-row bench bucket at 256 MB: the dedup's GROUP BY failed in 1 of
 * 5 runs on two threads, none of 8 on one, which takes 17 s against 10 s for the whole dedup).
 */
export async function onOneThreadIfOutOfMemory<T>(session: DuckSession, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (!isOutOfMemory(err)) throw err;
    const [setting] = await session.rows("SELECT current_setting('threads') AS threads");
    const threads = Number(setting?.threads);
    if (!(threads > 1)) throw err;
    await session.exec('SET threads = 1');
    try {
      return await run();
    } finally {
      await session.exec(`SET threads = ${threads}`);
    }
  }
}

/** A SQL string literal: single quotes doubled, so any key, path or value is safe to embed. */
export function sqlString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** A quoted SQL identifier (column names such as `proj:code` contain punctuation). */
export function sqlIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** `[...]` list of string literals, for read_parquet over several files. */
export function sqlStringList(values: readonly string[]): string {
  return `[${values.map(sqlString).join(', ')}]`;
}

/** A numeric cell as a JS number (DuckDB returns BIGINT and HUGEINT as bigint); NULL is 0. */
export function toNumber(v: unknown): number {
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'number') return v;
  return Number(v ?? 0);
}

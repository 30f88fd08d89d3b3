/**
 * The one interface every warehouse backend implements. Keys are always relative to the warehouse
 * root and use '/' separators; a backend must refuse a key that escapes the root.
 */
export interface StoredObject {
  key: string;
  size: number;
  /**
   * Changes whenever the object's bytes are replaced (S3: the ETag; local: inode, size and mtime), so a
   * bucket never deletes an input that was rewritten after it was read.
   */
  version: string;
}

/** For the transfers of a bucket's bytes, which can run for minutes. */
export interface TransferOptions {
  /**
   * Abandons the transfer (no retry) when aborted: a cancelled attempt stops within moments instead of
   * after its download or upload. A local backend's transfers are instant and ignore it.
   */
  signal?: AbortSignal;
}

export interface WarehouseStore {
  /** Normalized location of the root: an absolute path or s3://bucket/prefix. */
  readonly root: string;
  /**
   * Every object below `prefix` (recursively), in no particular order. `prefix` '' lists the whole root.
   * A key no method of the store addresses (isSafeKey: a backslash, a `.` or `..` segment) is not
   * yielded but passed to `onUnaddressable`, so that callers can count or name it instead of missing it.
   */
  list(prefix: string, onUnaddressable?: (key: string) => void): AsyncIterable<StoredObject>;
  /** Size of one object, or undefined when it does not exist. */
  stat(key: string): Promise<StoredObject | undefined>;
  /**
   * A local file with the object's bytes for DuckDB to read. A local backend returns the file
   * itself; a remote one streams it into `scratchDir`. The caller never modifies the returned file.
   * With `version`, a remote backend fetches exactly that version and fails if the object was replaced
   * since (a local backend's file is read in place, so its caller compares versions after reading).
   */
  materialize(key: string, scratchDir: string, version?: string, opts?: TransferOptions): Promise<string>;
  /**
   * Publishes a finished local file under `key` only if no object exists there yet (atomic: readers see
   * the whole object or none). Returns 'exists' when something is already there; never overwrites.
   * The local file is consumed (moved or deleted) when 'created'.
   */
  publishIfAbsent(localFile: string, key: string, opts?: TransferOptions): Promise<'created' | 'exists'>;
  /** Where a writer of `key` should build its file so that publishIfAbsent is cheap (same filesystem). */
  scratchPathFor(key: string, scratchDir: string, tag: string): string;
  /** Reads bytes [start, end) of an object (footers of Parquet files). */
  readRange(key: string, start: number, end: number): Promise<Uint8Array>;
  /** Reads a whole small object (plans, catalog.db), or undefined when absent. */
  readSmall(key: string): Promise<{ body: Buffer; version: string } | undefined>;
  /**
   * Writes a small object. `ifVersion` undefined = unconditional; null = only if absent; a string =
   * only if the current version equals it. Returns the new version, or 'conflict'.
   */
  writeSmall(key: string, body: Buffer, ifVersion?: string | null): Promise<string | 'conflict'>;
  /** Deletes objects; a key that does not exist is not an error. */
  deleteMany(keys: string[]): Promise<void>;
  /**
   * Removes the folder `prefix` if it is empty (a filesystem keeps folders that an object store does not
   * have). Only for folders no one writes into any more: a writer between its mkdir and its write would fail.
   */
  removeEmptyFolder?(prefix: string): Promise<void>;
  /** Removes leftovers of interrupted writes below `prefix` (incomplete multipart uploads). */
  abortIncompleteWrites(prefix: string): Promise<number>;
  /** The URI of a key as registered in the Iceberg catalog. */
  uri(key: string): string;
  /** Releases clients and handles. */
  close(): Promise<void>;
}

/** Thrown by a backend for permanent storage errors; the message names the object. */
export class StorageError extends Error {
  constructor(
    message: string,
    readonly kind: 'denied' | 'no-credentials' | 'not-found' | 'invalid-key' | 'corrupt',
  ) {
    super(message);
    this.name = 'StorageError';
  }
}

/** A refusal of the operating system (no access, an immutable file, a read-only mount): permanent, unlike EMFILE, EIO or ESTALE. */
export function isRefusal(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EACCES' || code === 'EPERM' || code === 'EROFS';
}

/** The object is not there: a backend's not-found, or a local file system's ENOENT. */
export function isNotFound(err: unknown): boolean {
  return (err instanceof StorageError && err.kind === 'not-found') || (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/**
 * Runs `fn` over `items`, at most `limit` at a time (store requests: a few dozen in flight, not thousands).
 * The first failure stops further items from starting and is rethrown.
 */
export async function forEachBounded<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

import { createHash, randomUUID } from 'node:crypto';
import { promises as fs, type BigIntStats } from 'node:fs';
import * as path from 'node:path';
import type { StoredObject, WarehouseStore } from './warehouse-store';
import { isRefusal, StorageError } from './warehouse-store';
import { assertSafeKey, inCellFolder, isOutputName, isSafeKey, isTempArtifactName, parseDataFileKey, tempNameFor } from './warehouse-layout';

/** A warehouse in a local directory. Publishing uses link(2), which fails instead of replacing. */
export class LocalWarehouseStore implements WarehouseStore {
  constructor(readonly root: string) {}

  private abs(key: string): string {
    assertSafeKey(key);
    const full = path.resolve(this.root, key);
    if (full !== this.root && !full.startsWith(this.root + path.sep)) {
      throw new StorageError(`key escapes the warehouse root ${this.root}: ${key}`, 'invalid-key');
    }
    return full;
  }

  async *list(prefix: string, onUnaddressable?: (key: string) => void): AsyncIterable<StoredObject> {
    const start = prefix ? this.abs(prefix.replace(/\/+$/, '')) : this.root;
    const rootStat = await fs.stat(this.root).catch(() => undefined);
    if (!rootStat?.isDirectory()) {
      throw new StorageError(`warehouse ${this.root} does not exist or is not a directory`, 'not-found');
    }
    const stack = [start];
    while (stack.length) {
      const dir = stack.pop()!;
      let entries: import('node:fs').Dirent[];
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
        throw listingError(dir, err);
      }
      for (const e of entries) {
        const full = path.join(dir, e.name);
        const key = path.relative(this.root, full).split(path.sep).join('/');
        if (e.isSymbolicLink() && inCellFolder(key) && (parseDataFileKey(key) || (await fs.stat(full).catch(() => undefined))?.isDirectory())) {
          // A linked folder or data file is not followed (a link can loop, or show one file under two keys),
          // and not skipped either: the rebuild would drop its files from the table without a word. Other
          // links (a _SUCCESS marker, a dangling one) are passed over as before.
          throw new StorageError(
            `${full} is a symbolic link: the warehouse's data folders and files are listed without following links, so its ` +
              'files would be left out of the table. Put the folder or file itself there (or mount the volume at that path)',
            'invalid-key',
          );
        }
        if (e.isDirectory()) stack.push(full);
        else if (e.isFile() && !isSafeKey(key)) onUnaddressable?.(key);
        else if (e.isFile()) {
          const st = await fs.stat(full, { bigint: true }).catch(() => undefined);
          if (st) yield { key, size: Number(st.size), version: fileVersion(st) };
        }
      }
    }
  }

  async stat(key: string): Promise<StoredObject | undefined> {
    const st = await fs.stat(this.abs(key), { bigint: true }).catch(() => undefined);
    return st?.isFile() ? { key, size: Number(st.size), version: fileVersion(st) } : undefined;
  }

  async materialize(key: string): Promise<string> {
    const full = this.abs(key);
    await fs.access(full).catch(() => {
      throw new StorageError(`object ${full} does not exist`, 'not-found');
    });
    return full;
  }

  scratchPathFor(key: string, _scratchDir: string, tag: string): string {
    const planId = path.basename(key).replace(/^compacted_/, '').replace(/\.parquet$/, '');
    return path.join(path.dirname(this.abs(key)), tempNameFor(planId, tag));
  }

  async publishIfAbsent(localFile: string, key: string): Promise<'created' | 'exists'> {
    const target = this.abs(key);
    // A read-only or immutable warehouse is denied (not retried): the run fails naming it.
    await makeDirectory(path.dirname(target)).catch((err: unknown) => {
      throw localError(`create the folder of ${target}`, err);
    });
    // On disk before it has a name: the bucket's inputs are deleted once it is published, and after a
    // crash a name whose data never reached the disk (ext4 allocates it late) would be all that is left.
    await syncPath(localFile);
    try {
      await fs.link(localFile, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return 'exists';
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      // Another filesystem: copy next to the target, then link that (still atomic and exclusive).
      const staged = `${target}.${randomUUID()}.staging`;
      try {
        // Inside the try: a copy that fails half-way (a full disk) leaves no staging file behind.
        await fs.copyFile(localFile, staged).catch((copyErr: unknown) => {
          throw localError(`copy ${localFile} to ${target}`, copyErr);
        });
        await syncPath(staged);
        await fs.link(staged, target);
      } catch (stagedErr) {
        // Only the link can find the target there already; a failed copy was named above.
        if ((stagedErr as NodeJS.ErrnoException).code === 'EEXIST') return 'exists';
        throw stagedErr;
      } finally {
        await fs.rm(staged, { force: true });
      }
    }
    await syncPath(path.dirname(target));
    await fs.rm(localFile, { force: true });
    return 'created';
  }

  async readRange(key: string, start: number, end: number): Promise<Uint8Array> {
    const handle = await fs.open(this.abs(key), 'r');
    try {
      const buf = Buffer.alloc(end - start);
      const { bytesRead } = await handle.read(buf, 0, end - start, start);
      return buf.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  async readSmall(key: string): Promise<{ body: Buffer; version: string } | undefined> {
    const body = await fs.readFile(this.abs(key)).catch((err: NodeJS.ErrnoException) => {
      // ENOTDIR: a folder of the key is a file (the warehouse path names a file); list() then says so.
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
      throw err;
    });
    return body ? { body, version: contentVersion(body) } : undefined;
  }

  async writeSmall(key: string, body: Buffer, ifVersion?: string | null): Promise<string | 'conflict'> {
    const target = this.abs(key);
    await makeDirectory(path.dirname(target)).catch((err: unknown) => {
      throw localError(`create the folder of ${target}`, err);
    });
    const staged = `${target}.${randomUUID()}.staging`;
    try {
      // Inside the try: a write that fails half-way (a full disk) leaves no staging file behind.
      await fs.writeFile(staged, body).catch((err: unknown) => {
        throw localError(`write ${target}`, err);
      });
      // A plan or lock object is whole after a crash, or absent: never a name without its bytes.
      await syncPath(staged);
      if (ifVersion === null) {
        try {
          await fs.link(staged, target);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') return 'conflict';
          throw err;
        }
      } else {
        if (typeof ifVersion === 'string') {
          const current = await this.readSmall(key);
          if (!current || current.version !== ifVersion) return 'conflict';
        }
        await fs.rename(staged, target);
      }
      await syncPath(path.dirname(target));
      return contentVersion(body);
    } finally {
      await fs.rm(staged, { force: true });
    }
  }

  async deleteMany(keys: string[]): Promise<void> {
    for (const key of keys) {
      // unlink, not rm: rm reports an immutable file as "ENOTDIR: scandir", which hides the refusal.
      await fs.unlink(this.abs(key)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw localError(`delete ${this.abs(key)}`, err);
      });
    }
  }

  async removeEmptyFolder(prefix: string): Promise<void> {
    await fs.rmdir(this.abs(prefix)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' && err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw localError(`remove the empty folder ${this.abs(prefix)}`, err);
    });
  }

  /**
   * Staging copies of an interrupted cross-filesystem publish (see publishIfAbsent): only of this tool's
   * own names, as on S3. An ingest may stage its files under a similar suffix before renaming them.
   */
  async abortIncompleteWrites(prefix: string): Promise<number> {
    let removed = 0;
    for await (const obj of this.list(prefix)) {
      const staged = STAGING.exec(path.posix.basename(obj.key));
      if (staged && (isOutputName(staged[1]!) || isTempArtifactName(staged[1]!))) {
        await fs.rm(this.abs(obj.key), { force: true });
        removed++;
      }
    }
    return removed;
  }

  uri(key: string): string {
    return this.abs(key);
  }

  async close(): Promise<void> {}
}

/** Flushes a file's bytes, or a directory's entries, to stable storage. */
export async function syncPath(p: string): Promise<void> {
  const handle = await fs.open(p, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** `<name>.<uuid>.staging`, capturing the name being published. */
const STAGING = /^(.+)\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.staging$/;

/**
 * A rewrite in place changes the size or the mtime (nanoseconds where the filesystem keeps them), a
 * replacement by rename the inode.
 */
function fileVersion(st: BigIntStats): string {
  return `${st.ino}-${st.size}-${st.mtimeNs}`;
}

function contentVersion(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 32);
}

export function listingError(dir: string, err: unknown): Error {
  return localError(`list ${dir}`, err);
}

/**
 * `fs.mkdir(dir, { recursive: true })`, whose error names the real cause: Node's recursive mkdir reports a
 * read-only filesystem (EROFS) as ENOENT, which reads as a missing folder and would be retried for ever.
 */
export async function makeDirectory(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true }).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    // The plain mkdir of the first missing folder says why: EROFS, EACCES, or ENOENT when even the root is gone.
    let first = dir;
    while (path.dirname(first) !== first && !(await fs.stat(path.dirname(first)).then(() => true, () => false))) first = path.dirname(first);
    await fs.mkdir(first).catch((plain: NodeJS.ErrnoException) => {
      throw plain.code === 'EEXIST' ? err : plain;
    });
    // That one could be made after all (the cause has gone since): the rest of the way down.
    await fs.mkdir(dir, { recursive: true });
  });
}

/**
 * Only a refusal is permanent (no access, an immutable file, a read-only mount): EMFILE, EIO or an NFS
 * server's ESTALE pass, so they stay plain errors that the activity retries instead of failing its
 * bucket (or the run's rebuild) for good.
 */
function localError(action: string, err: unknown): Error {
  const message = `cannot ${action}: ${(err as Error).message}`;
  return isRefusal(err) ? new StorageError(message, 'denied') : new Error(message);
}

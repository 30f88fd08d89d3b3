/**
 * Reading and writing Iceberg metadata files (JSON, manifests, manifest lists). A catalog backend gets
 * one of these for the place its metadata lives: local files here, S3 objects elsewhere.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { syncPath } from '../storage/local-store';

export interface MetadataFileIO {
  /** Throws MetadataFileMissingError when the file does not exist. */
  read(uri: string): Promise<Buffer>;
  /** Writes the whole object; a reader never sees a partial file. */
  write(uri: string, bytes: Buffer): Promise<void>;
  /** Deletes files; one that does not exist is not an error. */
  delete(uris: readonly string[]): Promise<void>;
  /** The files directly in a directory (none when it does not exist), as locations in its form. */
  list(dirUri: string): Promise<string[]>;
}

/** An old metadata file may be gone (cleaned up after a later commit): its readers tell that apart. */
export class MetadataFileMissingError extends Error {
  constructor(readonly uri: string) {
    super(`cannot read Iceberg metadata file ${uri}: it does not exist`);
    this.name = 'MetadataFileMissingError';
  }
}

/** Absolute paths and file:// URIs on this machine. */
export class LocalMetadataFileIO implements MetadataFileIO {
  private toPath(uri: string): string {
    if (uri.startsWith('file:')) return fileURLToPath(uri);
    if (!path.isAbsolute(uri)) throw new Error(`metadata location is not a local absolute path: ${uri}`);
    return uri;
  }

  async read(uri: string): Promise<Buffer> {
    try {
      return await fs.readFile(this.toPath(uri));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new MetadataFileMissingError(uri);
      throw new Error(`cannot read Iceberg metadata file ${uri}: ${(err as Error).message}`);
    }
  }

  async delete(uris: readonly string[]): Promise<void> {
    for (const uri of uris) {
      // URL parsing resolves '%2e%2e' to '..' and removes it: the location is judged as written.
      if (!plainLocation(uri)) throw new Error(`refusing to delete Iceberg metadata file ${uri}: not a plain path`);
      const target = this.toPath(uri);
      try {
        await fs.rm(target, { force: true });
      } catch (err) {
        throw new Error(`cannot delete Iceberg metadata file ${uri}: ${(err as Error).message}`);
      }
    }
  }

  async list(dirUri: string): Promise<string[]> {
    const dir = dirUri.replace(/\/+$/, '');
    try {
      return (await fs.readdir(this.toPath(dir), { withFileTypes: true })).filter((e) => e.isFile()).map((e) => `${dir}/${e.name}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new Error(`cannot list Iceberg metadata directory ${dirUri}: ${(err as Error).message}`);
    }
  }

  async write(uri: string, bytes: Buffer): Promise<void> {
    const target = this.toPath(uri);
    await fs.mkdir(path.dirname(target), { recursive: true });
    const staged = `${target}.${randomUUID()}.tmp`;
    try {
      await fs.writeFile(staged, bytes);
      // On disk before it has its name: the catalog's commit that follows is durable, and after a power
      // loss it must not point at a metadata file or manifest whose blocks were never written.
      await syncPath(staged);
      await fs.rename(staged, target);
      await syncPath(path.dirname(target));
    } catch (err) {
      await fs.rm(staged, { force: true });
      throw new Error(`cannot write Iceberg metadata file ${uri}: ${(err as Error).message}`);
    }
  }
}

const HAS_SCHEME = /^[a-z][a-z0-9+.-]*:/i;

/**
 * Resolves a metadata location that may be relative (the Python pipeline recorded "./earthcatalog/...")
 * against `base`, a local directory or a URI of a directory.
 */
export function resolveLocation(location: string, base: string): string {
  if (HAS_SCHEME.test(location) || path.isAbsolute(location)) return location;
  if (HAS_SCHEME.test(base)) {
    const m = /^([a-z][a-z0-9+.-]*:\/\/[^/]*)(\/.*)?$/i.exec(base);
    if (!m) throw new Error(`cannot resolve ${location} against ${base}`);
    const joined = path.posix.normalize(`${m[2] ?? ''}/${location}`);
    if (joined.startsWith('/..')) throw new Error(`metadata location ${location} escapes ${base}`);
    return `${m[1]}${joined.startsWith('/') ? joined : '/' + joined}`;
  }
  return path.resolve(base, location);
}

/**
 * A location that means what it says: no `.` or `..` segment, no percent-encoded dot, slash or
 * backslash, no backslash. A manifest list written by hand or by another engine could otherwise name
 * `<metadata dir>/../../x.avro`, which starts with the directory yet lies outside it.
 */
export function plainLocation(location: string): boolean {
  return !/%2e|%2f|%5c|\\/i.test(location) && !location.split('/').some((seg) => seg === '.' || seg === '..');
}

/** The directory part of a path or URI (no trailing slash). */
export function parentOf(location: string): string {
  const i = location.lastIndexOf('/');
  if (i <= 0) throw new Error(`metadata location has no directory: ${location}`);
  return location.slice(0, i);
}

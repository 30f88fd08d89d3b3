/**
 * The SQLite catalog when catalog.db or the Iceberg metadata lives in S3.
 *
 * A catalog.db kept in S3 is downloaded to a private temporary file (its ETag remembered), changed
 * there by the ordinary SQLite backend, and uploaded back with a conditional write on the ETag that
 * was read (If-None-Match when it did not exist). Someone else's upload in between is detected and
 * reported as a CatalogConflictError, never overwritten; the rebuild is then retried from the start.
 * Metadata files (JSON, manifests, manifest lists) are read and written as S3 objects.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { IcebergCatalogBackend, TableHandle, TablePointer } from './catalog-backend';
import { CatalogAbsentError, CatalogConflictError } from './catalog-backend';
import type { MetadataFileIO } from './metadata-file-io';
import { LocalMetadataFileIO, MetadataFileMissingError, parentOf } from './metadata-file-io';
import { SqliteCatalogBackend } from './sqlite-catalog';
import { StorageError } from '../storage/warehouse-store';
import { createS3Client, type S3ClientSettings } from '../storage/s3-client';
import { isS3Uri, parseS3Uri, s3Uri } from '../storage/s3-location';
import { describeS3Error, isNoSuchKey, permanentError } from '../storage/s3-errors';
import type { RetryPolicy } from '../storage/s3-retry';
import { DEFAULT_RETRY, withRetries } from '../storage/s3-retry';
import { downloadToFile, headEtag, NoSuchObjectError, readBody } from '../storage/s3-transfer';
import { S3WarehouseStore, conditionalPut } from '../storage/s3-store';

const BODY_IDLE_TIMEOUT_MS = 60_000;

export interface S3MetadataFileIOOptions {
  retry?: RetryPolicy;
  /**
   * Write new files with If-None-Match (they have unique names, so an existing object is never
   * ours to replace). Off for S3 Tables' table buckets, whose object API documents no conditional writes.
   */
  createOnly?: boolean;
}

/** Metadata files as S3 objects; local paths (a local table next to an S3 catalog.db) stay local. */
export class S3MetadataFileIO implements MetadataFileIO {
  private readonly local = new LocalMetadataFileIO();
  private readonly retry: RetryPolicy;
  private readonly createOnly: boolean;

  constructor(
    private readonly client: S3Client,
    opts: S3MetadataFileIOOptions = {},
  ) {
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.createOnly = opts.createOnly ?? true;
  }

  async read(uri: string): Promise<Buffer> {
    if (!isS3Uri(uri)) return this.local.read(uri);
    const loc = parseS3Uri(uri);
    try {
      return await withRetries(this.retry, async () => {
        const res = await this.client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
        const body = res.Body ? await readBody(res.Body as Readable, BODY_IDLE_TIMEOUT_MS) : Buffer.alloc(0);
        if (res.ContentLength !== undefined && body.length !== res.ContentLength) {
          throw Object.assign(new Error(`read of ${uri} ended early`), { code: 'ECONNRESET' });
        }
        return body;
      });
    } catch (err) {
      if (isNoSuchKey(err)) throw new MetadataFileMissingError(uri);
      throw permanentError(err, uri) ?? new Error(`cannot read Iceberg metadata file ${uri} (${describeS3Error(err)})`);
    }
  }

  async write(uri: string, bytes: Buffer): Promise<void> {
    if (!isS3Uri(uri)) return this.local.write(uri, bytes);
    const result = await conditionalPut(this.client, parseS3Uri(uri), bytes, this.createOnly ? null : undefined, this.retry);
    if (result === 'conflict') throw new Error(`Iceberg metadata file ${uri} already exists; not overwritten`);
  }

  async delete(uris: readonly string[]): Promise<void> {
    const byBucket = new Map<string, string[]>();
    const local: string[] = [];
    for (const uri of uris) {
      if (!isS3Uri(uri)) {
        local.push(uri);
        continue;
      }
      const loc = parseS3Uri(uri);
      byBucket.set(loc.bucket, [...(byBucket.get(loc.bucket) ?? []), loc.key]);
    }
    await this.local.delete(local);
    // The warehouse store's batched, retried DeleteObjects over this client; never closed, which would destroy the client.
    for (const [bucket, keys] of byBucket) await new S3WarehouseStore(this.client, bucket, '', { retry: this.retry }).deleteMany(keys);
  }

  async list(dirUri: string): Promise<string[]> {
    if (!isS3Uri(dirUri)) return this.local.list(dirUri);
    const loc = parseS3Uri(dirUri.replace(/\/+$/, ''));
    const prefix = `${loc.key}/`;
    const found: string[] = [];
    // Keys a warehouse store cannot address (`?`, `#`, control characters) are no files this rebuild wrote.
    for await (const obj of new S3WarehouseStore(this.client, loc.bucket, '', { retry: this.retry }).list(prefix)) {
      if (!obj.key.slice(prefix.length).includes('/')) found.push(s3Uri({ bucket: loc.bucket, key: obj.key }));
    }
    return found;
  }
}

export interface S3CatalogDbOptions {
  /** SDK client to use (the backend then does not destroy it); by default one from the environment. */
  client?: S3Client;
  clientSettings?: S3ClientSettings;
  /** Where the private copy of catalog.db lives while the backend is open. */
  scratchDir?: string;
  retry?: RetryPolicy;
  /** Opened only to be read (verify): an absent catalog.db is CatalogAbsentError instead of a catalog to create. */
  readOnly?: boolean;
}

/** catalog.db at s3://bucket/key/catalog.db, worked on as a local copy and uploaded back conditionally. */
export class S3CatalogDbBackend implements IcebergCatalogBackend {
  readonly description: string;
  private inner: SqliteCatalogBackend | undefined;

  private constructor(
    private readonly catalogUri: string,
    private readonly client: S3Client,
    private readonly ownsClient: boolean,
    private readonly localDir: string,
    private readonly localDb: string,
    /** The ETag of the version the local copy came from; null when catalog.db did not exist. */
    private version: string | null,
    /** A copy of that version as downloaded, which assertWritable uploads unchanged (the SQLite backend works on the other). */
    private readonly downloaded: string | undefined,
    private readonly makeInner: () => SqliteCatalogBackend,
    private readonly retry: RetryPolicy,
  ) {
    this.inner = makeInner();
    this.description = this.inner.description;
  }

  static async open(catalogUri: string, warehouseRootUri: string, catalogName: string, opts: S3CatalogDbOptions = {}): Promise<S3CatalogDbBackend> {
    const loc = parseS3Uri(catalogUri);
    if (!loc.key || loc.key.endsWith('/')) throw new StorageError(`catalog ${catalogUri} must name the catalog.db object`, 'invalid-key');
    const client = opts.client ?? (await createS3Client(opts.clientSettings));
    const retry = opts.retry ?? DEFAULT_RETRY;
    const base = opts.scratchDir ?? path.join(os.tmpdir(), 'earthcatalog-catalog');
    await fs.mkdir(base, { recursive: true });
    const localDir = await fs.mkdtemp(path.join(base, 'catalog-'));
    const localDb = path.join(localDir, 'catalog.db');
    try {
      let version: string | null;
      try {
        version = (await downloadToFile(client, loc, localDb, { retry, bodyIdleTimeoutMs: BODY_IDLE_TIMEOUT_MS })).etag;
      } catch (err) {
        if (!(err instanceof NoSuchObjectError)) throw err;
        if (opts.readOnly) throw new CatalogAbsentError(catalogUri);
        // A first rebuild creates catalog.db; the upload then insists that it still does not exist.
        await fs.rm(localDb, { force: true });
        version = null;
      }
      const downloaded = version === null ? undefined : path.join(localDir, 'downloaded.db');
      if (downloaded) await fs.copyFile(localDb, downloaded);
      const io = new S3MetadataFileIO(client, { retry });
      const makeInner = () =>
        new SqliteCatalogBackend({
          catalogDbPath: localDb,
          catalogName,
          warehouseRootUri,
          io,
          // Relative metadata locations of the Python pipeline resolve against catalog.db's S3 directory.
          relativeBase: parentOf(catalogUri),
          displayName: catalogUri,
          readOnly: opts.readOnly,
        });
      return new S3CatalogDbBackend(catalogUri, client, !opts.client, localDir, localDb, version, downloaded, makeInner, retry);
    } catch (err) {
      await fs.rm(localDir, { recursive: true, force: true });
      if (!opts.client) client.destroy();
      throw err;
    }
  }

  private db(): SqliteCatalogBackend {
    return (this.inner ??= this.makeInner());
  }

  findTable(namespace: string, table: string): Promise<TablePointer | undefined> {
    return this.db().findTable(namespace, table);
  }

  openTable(namespace: string, table: string): Promise<TableHandle> {
    return this.db().openTable(namespace, table);
  }

  readFile(uri: string): Promise<Buffer> {
    return this.db().readFile(uri);
  }

  writeFile(uri: string, bytes: Buffer): Promise<void> {
    return this.db().writeFile(uri, bytes);
  }

  deleteFiles(uris: readonly string[]): Promise<void> {
    return this.db().deleteFiles(uris);
  }

  listFiles(dirUri: string): Promise<string[]> {
    return this.db().listFiles(dirUri);
  }

  /**
   * Swaps the pointer in the local copy (compare-and-swap there), then publishes the copy only if
   * catalog.db in S3 is still the version that was downloaded.
   */
  async commit(namespace: string, table: string, newMetadataLocation: string, expected: TablePointer | undefined): Promise<void> {
    const db = this.db();
    await db.commit(namespace, table, newMetadataLocation, expected);
    // Closing checkpoints any write-ahead log into the file, so the upload holds the whole database.
    await db.close();
    this.inner = undefined;
    const bytes = await fs.readFile(this.localDb);
    const result = await conditionalPut(this.client, parseS3Uri(this.catalogUri), bytes, this.version, this.retry);
    if (result === 'conflict') {
      throw new CatalogConflictError(`catalog.db at ${this.catalogUri} was changed by someone else since it was read; not overwritten`);
    }
    this.version = result;
  }

  /**
   * The pre-flight's proof that the commit's upload will be allowed: the downloaded bytes are put back
   * unchanged, only if catalog.db is still that version, so its content stays what it was (the object's
   * other attributes change as at every commit's upload: see the README). A policy without
   * s3:PutObject on the key would otherwise be found at the commit, after every bucket had deleted its
   * inputs. A catalog.db that does not exist yet has no table that could point at deleted files, so
   * nothing is written for it; one changed meanwhile answers 412, which S3 gives only to a request it
   * has authorized.
   */
  async assertWritable(): Promise<void> {
    await this.db().assertWritable();
    if (this.version === null || !this.downloaded) return;
    try {
      const bytes = await fs.readFile(this.downloaded);
      const result = await conditionalPut(this.client, parseS3Uri(this.catalogUri), bytes, this.version, this.retry);
      // Same bytes, same MD5 ETag; under SSE-KMS the ETag is not the MD5 and changes.
      if (result !== 'conflict' && result) this.version = result;
    } catch (err) {
      if (!(err instanceof StorageError) || err.kind !== 'denied') throw err;
      throw new StorageError(
        `catalog ${this.catalogUri} cannot be written (${err.message}): the run would compact buckets and then fail to ` +
          'point the table at their outputs; nothing was changed. Give the worker s3:PutObject on it',
        'denied',
      );
    }
  }

  async changedSinceRead(): Promise<boolean> {
    return ((await headEtag(this.client, parseS3Uri(this.catalogUri))) ?? null) !== this.version;
  }

  async close(): Promise<void> {
    await this.inner?.close();
    this.inner = undefined;
    await fs.rm(this.localDir, { recursive: true, force: true });
    if (this.ownsClient) this.client.destroy();
  }
}

/** A local catalog.db whose tables live in an S3 warehouse: metadata files are S3 objects. */
export class LocalCatalogDbWithS3Metadata implements IcebergCatalogBackend {
  readonly description: string;

  private constructor(
    private readonly inner: SqliteCatalogBackend,
    private readonly client: S3Client,
  ) {
    this.description = inner.description;
  }

  static async open(
    catalogDbPath: string,
    warehouseRootUri: string,
    catalogName: string,
    opts: { settings?: S3ClientSettings; readOnly?: boolean } = {},
  ): Promise<LocalCatalogDbWithS3Metadata> {
    const client = await createS3Client(opts.settings);
    try {
      const inner = new SqliteCatalogBackend({ catalogDbPath, catalogName, warehouseRootUri, io: new S3MetadataFileIO(client), readOnly: opts.readOnly });
      return new LocalCatalogDbWithS3Metadata(inner, client);
    } catch (err) {
      client.destroy();
      throw err;
    }
  }

  findTable(namespace: string, table: string): Promise<TablePointer | undefined> {
    return this.inner.findTable(namespace, table);
  }

  openTable(namespace: string, table: string): Promise<TableHandle> {
    return this.inner.openTable(namespace, table);
  }

  readFile(uri: string): Promise<Buffer> {
    return this.inner.readFile(uri);
  }

  writeFile(uri: string, bytes: Buffer): Promise<void> {
    return this.inner.writeFile(uri, bytes);
  }

  deleteFiles(uris: readonly string[]): Promise<void> {
    return this.inner.deleteFiles(uris);
  }

  listFiles(dirUri: string): Promise<string[]> {
    return this.inner.listFiles(dirUri);
  }

  commit(namespace: string, table: string, newMetadataLocation: string, expected: TablePointer | undefined): Promise<void> {
    return this.inner.commit(namespace, table, newMetadataLocation, expected);
  }

  assertWritable(): Promise<void> {
    return this.inner.assertWritable();
  }

  async close(): Promise<void> {
    await this.inner.close();
    this.client.destroy();
  }
}

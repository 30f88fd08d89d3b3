/**
 * A warehouse in S3 (`s3://bucket/prefix`). Listing is paginated, downloads stream to scratch files,
 * large outputs go up in parts, and every write that must not replace anything is conditional
 * (If-None-Match / If-Match), so a retried or zombie attempt can never overwrite another's object.
 * The client comes from the worker's environment (see s3-client.ts), never from workflow input.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { StoredObject, TransferOptions, WarehouseStore } from './warehouse-store';
import { StorageError } from './warehouse-store';
import { assertSafeKey, isOutputName, isSafeKey, isTempArtifactName } from './warehouse-layout';
import type { S3ClientSettings } from './s3-client';
import { createS3Client } from './s3-client';
import type { S3Location } from './s3-location';
import { parseS3Uri, s3Uri } from './s3-location';
import {
  describeS3Error,
  errorCode,
  httpStatus,
  isConditionalConflict,
  isDeniedCode,
  isNoSuchKey,
  isPreconditionFailed,
  isTransient,
  permanentError,
  sdkAttempts,
} from './s3-errors';
import type { RetryPolicy } from './s3-retry';
import { DEFAULT_RETRY, sleep, withRetries } from './s3-retry';
import { downloadToFile, readBody, uploadFileIfAbsent } from './s3-transfer';

export interface S3StoreOptions {
  /** Keys per ListObjectsV2 page (S3's maximum is 1000; tests use less to exercise paging). */
  listPageSize?: number;
  /** Files up to this size are uploaded in one PutObject (default 64 MiB). */
  multipartThresholdBytes?: number;
  /** Part size of multipart uploads (default 16 MiB; S3's minimum is 5 MiB). */
  partSizeBytes?: number;
  /** Parts in flight per upload (default 4): memory is partSize × this. */
  partConcurrency?: number;
  /** Keys per DeleteObjects request (S3's maximum and the default is 1000). */
  deleteBatchSize?: number;
  /** Our retries around what the SDK cannot retry (broken bodies, part sequences). */
  retry?: RetryPolicy;
  /** A response body that delivers nothing for this long is abandoned (default 60 s). */
  bodyIdleTimeoutMs?: number;
  /** SDK client settings when the store creates its own client. */
  client?: S3ClientSettings;
}

const MIB = 1024 * 1024;
/** A body that sends nothing for this long is abandoned (and the request retried). */
const DEFAULT_BODY_IDLE_TIMEOUT_MS = 60_000;

export class S3WarehouseStore implements WarehouseStore {
  readonly root: string;
  private readonly base: string;
  private readonly listPageSize: number;
  private readonly deleteBatchSize: number;
  private readonly retry: RetryPolicy;
  private readonly bodyIdleTimeoutMs: number;
  private readonly upload: { multipartThresholdBytes: number; partSizeBytes: number; partConcurrency: number };
  private bucketChecked = false;

  /** `prefix` without leading or trailing slashes ('' = the bucket root). The store owns `client`. */
  constructor(
    private readonly client: S3Client,
    readonly bucket: string,
    prefix: string,
    opts: S3StoreOptions = {},
  ) {
    const clean = prefix.replace(/^\/+|\/+$/g, '');
    this.base = clean ? `${clean}/` : '';
    this.root = s3Uri({ bucket, key: clean });
    this.listPageSize = opts.listPageSize ?? 1000;
    this.deleteBatchSize = Math.min(opts.deleteBatchSize ?? 1000, 1000);
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.bodyIdleTimeoutMs = opts.bodyIdleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS;
    this.upload = {
      multipartThresholdBytes: opts.multipartThresholdBytes ?? 64 * MIB,
      partSizeBytes: opts.partSizeBytes ?? 16 * MIB,
      partConcurrency: opts.partConcurrency ?? 4,
    };
  }

  static async fromUri(uri: string, opts: S3StoreOptions = {}): Promise<S3WarehouseStore> {
    const { bucket, key } = parseS3Uri(uri);
    return new S3WarehouseStore(await createS3Client(opts.client), bucket, key, opts);
  }

  /** The full object key of a warehouse key, refusing keys that escape the root. */
  private objectKey(key: string): string {
    try {
      assertSafeKey(key);
    } catch (err) {
      throw new StorageError(`${(err as Error).message} (warehouse ${this.root})`, 'invalid-key');
    }
    if (key === '' || key.endsWith('/')) throw new StorageError(`not an object key: ${JSON.stringify(key)} (warehouse ${this.root})`, 'invalid-key');
    return this.base + key;
  }

  private loc(key: string): S3Location {
    return { bucket: this.bucket, key: this.objectKey(key) };
  }

  private listPrefix(prefix: string): string {
    if (!prefix) return this.base;
    try {
      assertSafeKey(prefix.replace(/\/+$/, ''));
    } catch (err) {
      throw new StorageError(`${(err as Error).message} (warehouse ${this.root})`, 'invalid-key');
    }
    return this.base + prefix;
  }

  /** A permanent error naming `uri`, or the error itself. */
  private fail(err: unknown, uri: string): unknown {
    return permanentError(err, uri) ?? err;
  }

  async *list(prefix: string, onUnaddressable?: (key: string) => void): AsyncIterable<StoredObject> {
    const full = this.listPrefix(prefix);
    const where = s3Uri({ bucket: this.bucket, key: full });
    let token: string | undefined;
    do {
      let page;
      try {
        // A listing body cut off mid-way is not retried by the SDK; the page is simply asked for again.
        page = await withRetries(this.retry, () =>
          this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: full, ContinuationToken: token, MaxKeys: this.listPageSize })),
        );
      } catch (err) {
        throw this.fail(err, where);
      }
      for (const obj of page.Contents ?? []) {
        const key = obj.Key?.slice(this.base.length);
        // Folder markers are not warehouse files.
        if (!key || key.endsWith('/')) continue;
        if (!isSafeKey(key)) {
          onUnaddressable?.(key);
          continue;
        }
        yield { key, size: obj.Size ?? 0, version: obj.ETag ?? '' };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async stat(key: string): Promise<StoredObject | undefined> {
    const loc = this.loc(key);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      return { key, size: head.ContentLength ?? 0, version: head.ETag ?? '' };
    } catch (err) {
      if (isNoSuchKey(err)) {
        // HEAD cannot tell a missing object from a missing bucket.
        await this.assertBucketExists();
        return undefined;
      }
      throw this.fail(err, s3Uri(loc));
    }
  }

  private async assertBucketExists(): Promise<void> {
    if (this.bucketChecked) return;
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      this.bucketChecked = true;
    } catch (err) {
      if (httpStatus(err) === 404) throw new StorageError(`warehouse bucket s3://${this.bucket} does not exist`, 'not-found');
      throw this.fail(err, `s3://${this.bucket}`);
    }
  }

  async materialize(key: string, scratchDir: string, version?: string, opts: TransferOptions = {}): Promise<string> {
    const loc = this.loc(key);
    await fs.mkdir(scratchDir, { recursive: true });
    // Not the key's own name: S3 allows 1,024 bytes, a local file name 255 (a longer one failed the bucket for good).
    const file = path.join(scratchDir, `${randomUUID()}.parquet`);
    try {
      await downloadToFile(this.client, loc, file, {
        retry: this.retry,
        bodyIdleTimeoutMs: this.bodyIdleTimeoutMs,
        version: version || undefined,
        signal: opts.signal,
      });
      return file;
    } catch (err) {
      await fs.rm(file, { force: true });
      throw this.fail(err, s3Uri(loc));
    }
  }

  /** The output is built in the attempt's own scratch directory and uploaded from there. */
  scratchPathFor(key: string, scratchDir: string, tag: string): string {
    this.objectKey(key);
    return path.join(scratchDir, `${tag}-${path.posix.basename(key)}`);
  }

  async publishIfAbsent(localFile: string, key: string, opts: TransferOptions = {}): Promise<'created' | 'exists'> {
    const result = await uploadFileIfAbsent(this.client, this.loc(key), localFile, { ...this.upload, retry: this.retry, signal: opts.signal });
    if (result === 'created') await fs.rm(localFile, { force: true });
    return result;
  }

  async readRange(key: string, start: number, end: number): Promise<Uint8Array> {
    if (end <= start) return new Uint8Array(0);
    const loc = this.loc(key);
    try {
      return await withRetries(this.retry, async () => {
        const res = await this.client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key, Range: `bytes=${start}-${end - 1}` }));
        return res.Body ? new Uint8Array(await readBody(res.Body as Readable, this.bodyIdleTimeoutMs)) : new Uint8Array(0);
      });
    } catch (err) {
      if (errorCode(err) === 'InvalidRange') return new Uint8Array(0);
      if (isNoSuchKey(err)) throw new StorageError(`object ${s3Uri(loc)} does not exist`, 'not-found');
      throw this.fail(err, s3Uri(loc));
    }
  }

  async readSmall(key: string): Promise<{ body: Buffer; version: string } | undefined> {
    const loc = this.loc(key);
    try {
      return await withRetries(this.retry, async () => {
        const res = await this.client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
        const body = res.Body ? await readBody(res.Body as Readable, this.bodyIdleTimeoutMs) : Buffer.alloc(0);
        if (res.ContentLength !== undefined && body.length !== res.ContentLength) {
          throw Object.assign(new Error(`read of ${s3Uri(loc)} ended early`), { code: 'ECONNRESET' });
        }
        return { body, version: res.ETag ?? '' };
      });
    } catch (err) {
      if (isNoSuchKey(err)) return undefined;
      throw this.fail(err, s3Uri(loc));
    }
  }

  async writeSmall(key: string, body: Buffer, ifVersion?: string | null): Promise<string | 'conflict'> {
    return conditionalPut(this.client, this.loc(key), body, ifVersion, this.retry);
  }

  async deleteMany(keys: string[]): Promise<void> {
    const unique = [...new Set(keys.map((k) => this.objectKey(k)))];
    for (let i = 0; i < unique.length; i += this.deleteBatchSize) {
      await this.deleteBatch(unique.slice(i, i + this.deleteBatchSize));
    }
  }

  /** One DeleteObjects request; keys that failed for a transient reason are sent again. */
  private async deleteBatch(batch: string[]): Promise<void> {
    let pending = batch;
    for (let attempt = 1; pending.length; attempt++) {
      let res;
      try {
        res = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: pending.map((Key) => ({ Key })), Quiet: true } }),
        );
      } catch (err) {
        throw this.fail(err, s3Uri({ bucket: this.bucket, key: pending[0]! }) + (pending.length > 1 ? ` (and ${pending.length - 1} more)` : ''));
      }
      const errors = (res.Errors ?? []).filter((e) => e.Key !== undefined && e.Code !== 'NoSuchKey');
      const denied = errors.find((e) => isDeniedCode(e.Code));
      if (denied) {
        throw new StorageError(
          `cannot delete ${s3Uri({ bucket: this.bucket, key: denied.Key! })} (${denied.Code})` +
            (errors.length > 1 ? ` and ${errors.length - 1} more object(s)` : ''),
          'denied',
        );
      }
      pending = errors.map((e) => e.Key!);
      if (pending.length && attempt >= this.retry.attempts) {
        throw new Error(
          `cannot delete ${pending.length} object(s), first ${s3Uri({ bucket: this.bucket, key: pending[0]! })} (${errors[0]!.Code}), after ${attempt} attempts`,
        );
      }
      if (pending.length) await sleep(this.retry.baseDelayMs * attempt);
    }
  }

  /**
   * Aborts incomplete multipart uploads of this tool's own objects (compaction outputs and temporary
   * artifacts) below `prefix`. Uploads of any other name may be a live ingest and are left alone.
   */
  async abortIncompleteWrites(prefix: string): Promise<number> {
    const full = this.listPrefix(prefix);
    const where = s3Uri({ bucket: this.bucket, key: full });
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: full, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
      } catch (err) {
        throw this.fail(err, where);
      }
      for (const upload of page.Uploads ?? []) {
        const name = upload.Key ? path.posix.basename(upload.Key) : '';
        if (!isOutputName(name) && !isTempArtifactName(name)) continue;
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId }));
          aborted++;
        } catch (err) {
          if (errorCode(err) !== 'NoSuchUpload') throw this.fail(err, s3Uri({ bucket: this.bucket, key: upload.Key! }));
        }
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return aborted;
  }

  uri(key: string): string {
    return s3Uri(this.loc(key));
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/**
 * PutObject guarded by the object's version: `ifVersion` undefined = unconditional, null = only if
 * absent, an ETag = only if unchanged. Returns the new ETag or 'conflict'. A 412 after the SDK
 * retried may be our own first attempt having landed: the object's bytes tell (these bodies are small),
 * not its ETag, which is the body's MD5 only without SSE-KMS or SSE-C, so the caller is not told
 * "conflict" about its own write.
 */
export async function conditionalPut(
  client: S3Client,
  loc: S3Location,
  body: Buffer,
  ifVersion: string | null | undefined,
  retry: RetryPolicy,
): Promise<string | 'conflict'> {
  const uri = s3Uri(loc);
  // The SDK leaves out an empty If-Match: "only if unchanged" would silently become an overwrite.
  if (ifVersion === '') throw new Error(`cannot write ${uri} only if unchanged: its version (ETag) is unknown`);
  let tries = 0;
  try {
    const res = await withRetries(
      retry,
      (attempt) => {
        tries = attempt;
        return client.send(
          new PutObjectCommand({
            Bucket: loc.bucket,
            Key: loc.key,
            Body: body,
            IfNoneMatch: ifVersion === null ? '*' : undefined,
            IfMatch: typeof ifVersion === 'string' ? ifVersion : undefined,
          }),
        );
      },
      (err) => isConditionalConflict(err) || isTransient(err),
    );
    return res.ETag ?? '';
  } catch (err) {
    if (isPreconditionFailed(err) || (typeof ifVersion === 'string' && isNoSuchKey(err))) {
      if (tries > 1 || sdkAttempts(err) > 1) {
        const ours = await etagIfBody(client, loc, body);
        if (ours) return ours;
      }
      return 'conflict';
    }
    const permanent = permanentError(err, uri);
    if (permanent) throw permanent;
    throw new Error(`write of ${uri} failed (${describeS3Error(err)})`);
  }
}

/** The object's ETag when it holds exactly `body`, else undefined (absent or other bytes). */
async function etagIfBody(client: S3Client, loc: S3Location, body: Buffer): Promise<string | undefined> {
  try {
    const res = await client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
    const current = res.Body ? await readBody(res.Body as Readable, DEFAULT_BODY_IDLE_TIMEOUT_MS) : Buffer.alloc(0);
    return res.ETag && current.equals(body) ? res.ETag : undefined;
  } catch (err) {
    if (isNoSuchKey(err)) return undefined;
    throw err;
  }
}


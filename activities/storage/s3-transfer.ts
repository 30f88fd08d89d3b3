/**
 * Moving whole objects between S3 and local files without holding them in memory: downloads stream
 * to disk and resume after a broken body; large uploads go in parts, each part a buffer the SDK can
 * resend. Both sides are conditional so a retry never mixes two versions of an object and never
 * replaces someone else's.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import { StorageError } from './warehouse-store';
import type { S3Location } from './s3-location';
import { s3Uri } from './s3-location';
import { describeS3Error, errorCode, isNoSuchKey, isPreconditionFailed, isTransient, permanentError, sdkAttempts, TruncatedBodyError } from './s3-errors';
import type { RetryPolicy } from './s3-retry';
import { backoffMs, sleep, withRetries } from './s3-retry';

/** The object (not its bucket) does not exist. */
export class NoSuchObjectError extends StorageError {
  constructor(uri: string) {
    super(`object ${uri} does not exist`, 'not-found');
  }
}

/** The object is no longer the version the caller asked for. Not permanent: a caller that lists again may read the new one. */
export class ObjectReplacedError extends Error {
  constructor(uri: string, version: string) {
    super(`object ${uri} was replaced since it was listed (version ${version} is gone)`);
    this.name = 'ObjectReplacedError';
  }
}

export interface DownloadOptions {
  retry: RetryPolicy;
  /** A body that delivers nothing for this long is abandoned and resumed. */
  bodyIdleTimeoutMs: number;
  /** Read exactly this version (ETag); fail with ObjectReplacedError instead of starting over on a newer one. */
  version?: string;
  /** Abandons the download when aborted: the request, the body and the wait before a retry. */
  signal?: AbortSignal;
}

/**
 * Streams an object into `file` (created or truncated). A body that breaks is resumed from the bytes
 * already on disk with a ranged GET pinned to the first response's ETag; if the object was replaced
 * meanwhile, the download starts over. Returns the size (checked against Content-Length) and the ETag
 * of the version that was read. With `version`, only that version is read.
 */
export async function downloadToFile(
  client: S3Client,
  loc: S3Location,
  file: string,
  opts: DownloadOptions,
): Promise<{ size: number; etag: string }> {
  const uri = s3Uri(loc);
  const handle = await fs.open(file, 'w');
  let etag: string | undefined = opts.version;
  let total = 0;
  let written = 0;
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await client.send(
          new GetObjectCommand({
            Bucket: loc.bucket,
            Key: loc.key,
            IfMatch: etag,
            Range: written > 0 ? `bytes=${written}-` : undefined,
          }),
          { abortSignal: opts.signal },
        );
        if (written === 0) {
          etag = res.ETag;
          total = res.ContentLength ?? 0;
        }
        if (!res.Body) throw new TruncatedBodyError(uri, written, total);
        await forEachChunk(res.Body as Readable, opts.bodyIdleTimeoutMs, opts.signal, async (chunk) => {
          await handle.write(chunk, 0, chunk.length, written);
          written += chunk.length;
        });
        if (written !== total) throw new TruncatedBodyError(uri, written, total);
        return { size: written, etag: etag ?? '' };
      } catch (err) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? err;
        const permanent = permanentError(err, uri);
        if (permanent) throw permanent;
        if (isNoSuchKey(err)) throw new NoSuchObjectError(uri);
        const replaced = isPreconditionFailed(err) && etag !== undefined;
        if (replaced && opts.version !== undefined) throw new ObjectReplacedError(uri, opts.version);
        // As in withRetries: an error the SDK already retried goes up to the activity's retries.
        if (!replaced && (!isTransient(err) || sdkAttempts(err) > 1)) throw err;
        if (attempt >= opts.retry.attempts) {
          throw new Error(`download of ${uri} failed after ${attempt} attempts (${describeS3Error(err)})`);
        }
        if (replaced) {
          // Replaced while we were reading it: the bytes on disk belong to the old version.
          etag = undefined;
          written = 0;
          await handle.truncate(0);
        }
        await sleep(backoffMs(opts.retry, attempt), opts.signal);
      }
    }
  } finally {
    await handle.close();
  }
}

/** Reads a whole (small) body with the same protection against a stalled or broken stream. */
export async function readBody(body: Readable, idleTimeoutMs: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await forEachChunk(body, idleTimeoutMs, undefined, async (c) => {
    chunks.push(c);
  });
  return Buffer.concat(chunks);
}

async function forEachChunk(
  body: Readable,
  idleTimeoutMs: number,
  signal: AbortSignal | undefined,
  onChunk: (chunk: Buffer) => Promise<void>,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => body.destroy(Object.assign(new Error(`response body idle for ${idleTimeoutMs} ms`), { code: 'ETIMEDOUT' })), idleTimeoutMs);
  };
  // The SDK's abort signal covers the request, not a body that is already being read.
  const abort = () => body.destroy(signal?.reason instanceof Error ? signal.reason : new Error('transfer aborted'));
  signal?.addEventListener('abort', abort, { once: true });
  try {
    signal?.throwIfAborted();
    arm();
    for await (const chunk of body) {
      arm();
      await onChunk(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', abort);
    body.destroy();
  }
}

export interface UploadOptions {
  /** Files up to this size go in one PutObject. */
  multipartThresholdBytes: number;
  partSizeBytes: number;
  partConcurrency: number;
  retry: RetryPolicy;
  /** Abandons the upload when aborted (a multipart upload is then aborted as after any failure). */
  signal?: AbortSignal;
}

const MAX_PARTS = 10_000;

/**
 * Uploads `file` to `loc` only if no object exists there (If-None-Match: *, on PutObject or on
 * CompleteMultipartUpload). 'exists' when something was there first; a failed multipart upload is
 * aborted so no parts are left behind.
 */
export async function uploadFileIfAbsent(client: S3Client, loc: S3Location, file: string, opts: UploadOptions): Promise<'created' | 'exists'> {
  const uri = s3Uri(loc);
  const size = (await fs.stat(file)).size;
  try {
    if (size <= opts.multipartThresholdBytes) {
      const body = await fs.readFile(file);
      await client.send(new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: body, IfNoneMatch: '*' }), { abortSignal: opts.signal });
      return 'created';
    }
    // Not needed for correctness (the completion is conditional) but saves uploading a large file for nothing.
    if (await exists(client, loc, opts.signal)) return 'exists';
    return await multipartIfAbsent(client, loc, file, size, opts);
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? err;
    if (isPreconditionFailed(err)) {
      // After a retry the object there may be our own first attempt (its response was lost).
      if (size <= opts.multipartThresholdBytes && sdkAttempts(err) > 1) {
        const md5 = createHash('md5').update(await fs.readFile(file)).digest('hex');
        if ((await headEtag(client, loc)) === `"${md5}"`) return 'created';
      }
      return 'exists';
    }
    throw permanentError(err, uri) ?? err;
  }
}

async function exists(client: S3Client, loc: S3Location, abortSignal?: AbortSignal): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }), { abortSignal });
    return true;
  } catch (err) {
    if (isNoSuchKey(err)) return false;
    throw err;
  }
}

async function multipartIfAbsent(client: S3Client, loc: S3Location, file: string, size: number, opts: UploadOptions): Promise<'created' | 'exists'> {
  const partSize = Math.max(opts.partSizeBytes, Math.ceil(size / MAX_PARTS));
  const partCount = Math.ceil(size / partSize);
  const created = await client.send(
    new CreateMultipartUploadCommand({ Bucket: loc.bucket, Key: loc.key, ChecksumAlgorithm: 'CRC32' }),
    { abortSignal: opts.signal },
  );
  const uploadId = created.UploadId!;
  let completed = false;
  const handle = await fs.open(file, 'r');
  try {
    const parts: CompletedPart[] = new Array(partCount);
    const md5s: Buffer[] = new Array(partCount);
    let next = 0;
    let failed = false;
    const worker = async (): Promise<void> => {
      while (!failed && next < partCount) {
        const index = next++;
        const start = index * partSize;
        const length = Math.min(partSize, size - start);
        const body = Buffer.alloc(length);
        const { bytesRead } = await handle.read(body, 0, length, start);
        if (bytesRead !== length) throw new Error(`${file} changed while it was being uploaded to ${s3Uri(loc)}`);
        md5s[index] = createHash('md5').update(body).digest();
        // The body is a buffer, so the SDK can resend it; our loop adds retries for what the SDK gives up on.
        const res = await withRetries(
          opts.retry,
          () =>
            client.send(
              new UploadPartCommand({
                Bucket: loc.bucket,
                Key: loc.key,
                UploadId: uploadId,
                PartNumber: index + 1,
                Body: body,
                ChecksumAlgorithm: 'CRC32',
              }),
              { abortSignal: opts.signal },
            ),
          undefined,
          opts.signal,
        );
        parts[index] = { PartNumber: index + 1, ETag: res.ETag, ChecksumCRC32: res.ChecksumCRC32 };
      }
    };
    // Every worker settles before the file is closed and the upload aborted.
    const settled = await Promise.allSettled(
      Array.from({ length: Math.max(1, Math.min(opts.partConcurrency, partCount)) }, () =>
        worker().catch((err: unknown) => {
          failed = true;
          throw err;
        }),
      ),
    );
    const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (rejected) throw rejected.reason;
    const expectedEtag = `"${createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${partCount}"`;
    try {
      // Not abortable: a completion whose answer we abandon may still land, and then the
      // object is ours without our knowing it. Completing takes moments.
      await withRetries(opts.retry, () =>
        client.send(
          new CompleteMultipartUploadCommand({
            Bucket: loc.bucket,
            Key: loc.key,
            UploadId: uploadId,
            IfNoneMatch: '*',
            MultipartUpload: { Parts: parts },
          }),
        ),
      );
      completed = true;
      return 'created';
    } catch (err) {
      // A completion whose response was lost and was then retried meets our own object (412) or
      // finds the upload gone (NoSuchUpload). The ETag of a multipart object is the MD5 of its parts'
      // MD5s, so it tells whether the object there is ours.
      if (isPreconditionFailed(err) || errorCode(err) === 'NoSuchUpload') {
        const etag = await headEtag(client, loc);
        if (etag === expectedEtag) {
          completed = true;
          return 'created';
        }
        if (etag !== undefined) return 'exists';
      }
      throw err;
    }
  } finally {
    await handle.close();
    if (!completed) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: loc.bucket, Key: loc.key, UploadId: uploadId })).catch(() => undefined);
    }
  }
}

/** The current ETag of an object, or undefined when it does not exist. */
export async function headEtag(client: S3Client, loc: S3Location): Promise<string | undefined> {
  try {
    return (await client.send(new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }))).ETag;
  } catch (err) {
    if (isNoSuchKey(err)) return undefined;
    throw err;
  }
}

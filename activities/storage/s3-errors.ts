/**
 * What an SDK error means for us: a permanent failure (fail fast, name the object), a precondition
 * that did not hold, an absent object, or something transient worth another attempt. Messages carry
 * the error code and HTTP status only: the SDK attaches request details (for InvalidAccessKeyId, the
 * access key id itself) to error objects, so those objects are never serialized into our errors.
 */
import * as os from 'node:os';
import { StorageError } from './warehouse-store';

interface SdkErrorShape {
  name?: string;
  Code?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number; requestId?: string };
  $fault?: 'client' | 'server';
}

function shape(err: unknown): SdkErrorShape {
  return typeof err === 'object' && err !== null ? (err as SdkErrorShape) : {};
}

export function errorCode(err: unknown): string | undefined {
  const e = shape(err);
  return e.Code ?? e.name ?? e.code;
}

export function httpStatus(err: unknown): number | undefined {
  return shape(err).$metadata?.httpStatusCode;
}

/** How many attempts the SDK made before giving up with this error. */
export function sdkAttempts(err: unknown): number {
  return shape(err).$metadata?.attempts ?? 1;
}

/** "AccessDenied, HTTP 403": enough to act on, nothing from the request. */
export function describeS3Error(err: unknown): string {
  const code = errorCode(err) ?? 'error';
  const status = httpStatus(err);
  return status ? `${code}, HTTP ${status}` : code;
}

export function isPreconditionFailed(err: unknown): boolean {
  return errorCode(err) === 'PreconditionFailed' || httpStatus(err) === 412;
}

/** The object (not the bucket) does not exist. HEAD responses have no body, hence 'NotFound'. */
export function isNoSuchKey(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'NoSuchKey' || (code === 'NotFound' && httpStatus(err) === 404);
}

/** A concurrent conditional write to the same key is in flight (AWS answers 409): try again. */
export function isConditionalConflict(err: unknown): boolean {
  return errorCode(err) === 'ConditionalRequestConflict';
}

const DENIED = new Set([
  'AccessDenied',
  'AllAccessDisabled',
  'AccountProblem',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'InvalidToken',
  'InvalidPayer',
  'Forbidden',
]);

/** An S3 error code that means the credentials or policies refuse the request. */
export function isDeniedCode(code: string | undefined): boolean {
  return code !== undefined && DENIED.has(code);
}

/**
 * The SDK's default chain found no credentials for `uri`. Not denied outright: on EC2 or EKS the chain
 * ends at the instance metadata service, whose timeouts and throttling look the same as having no
 * credentials at all, so the activity retries it a few times (toActivityFailure) before it gives up.
 */
export function noCredentialsError(err: unknown, uri: string): StorageError | undefined {
  if (errorCode(err) !== 'CredentialsProviderError') return undefined;
  // Shown wherever the failure ends up (a compaction's in the CLI that started it), so it names the process
  // whose environment lacks them: a worker's for a compaction, the command's own for `verify`.
  return new StorageError(
    `no AWS credentials found for ${uri} by the AWS SDK's default chain in process ${process.pid} on ${os.hostname()} ` +
      `(a worker's environment for a compaction, the command's own for verify)`,
    'no-credentials',
  );
}

/** Whose AWS credentials a refused request used: the message reaches the CLI of a compaction and verify's alike. */
const WHOSE_CREDENTIALS = "the process that asked (a worker's for a compaction, the command's own for verify)";

/** Temporary credentials (an STS session) that ran out; the provider chain may refresh them for the next attempt. */
const EXPIRED = new Set(['ExpiredToken', 'ExpiredTokenException', 'TokenRefreshRequired']);

/**
 * An SDK error reduced to what is safe to log: name, code, status and request id. S3 echoes parts of
 * the request in its error bodies (ExpiredToken the session token, SignatureDoesNotMatch the string to
 * sign) and the SDK copies them onto the error object, which the worker's logger prints whole. The
 * message is the server's own text too, and an S3-compatible server may fill it with the request it got
 * (its Authorization and session-token headers), so it is left out.
 */
export function withoutRequestDetails(err: unknown): unknown {
  if (!(err instanceof Error) || shape(err).$metadata === undefined) return err;
  const requestId = shape(err).$metadata?.requestId;
  // The SDK puts $metadata on errors of the connection too (refused, reset, a name that does not resolve),
  // where no server answered: their message is the system's (`connect ECONNREFUSED 10.0.0.5:9000`), which
  // names the address and holds nothing of the request.
  const unanswered = httpStatus(err) === undefined && (/^E[A-Z_]+$/.test(shape(err).code ?? '') || err.name === 'TimeoutError');
  const clean = new Error(
    unanswered
      ? `the connection to the storage service failed: ${err.message}`
      : `the storage service answered with an error (${describeS3Error(err)}${requestId ? `, request id ${requestId}` : ''})`,
  );
  clean.name = err.name;
  const frames = err.stack?.split('\n').filter((line) => /^\s+at /.test(line)) ?? [];
  clean.stack = [`${clean.name}: ${clean.message}`, ...frames].join('\n');
  return clean;
}

/**
 * A StorageError for failures that no retry of the request can fix, naming `uri`; undefined for anything else.
 * NoSuchKey is left to the caller (absent is often a normal answer).
 */
export function permanentError(err: unknown, uri: string): StorageError | undefined {
  if (err instanceof StorageError) return err;
  const code = errorCode(err);
  const missing = noCredentialsError(err, uri);
  if (missing) return missing;
  if (code !== undefined && EXPIRED.has(code)) {
    return new StorageError(`the AWS credentials for ${uri} have expired (${describeS3Error(err)}); check how the session credentials of ${WHOSE_CREDENTIALS} are refreshed`, 'no-credentials');
  }
  if (code === 'InvalidObjectState') {
    // A 403 too, but no policy is at fault: a lifecycle rule moved the object to Glacier or Deep Archive.
    return new StorageError(`${uri} is in an archive storage class (${describeS3Error(err)}); restore it before its bucket can be compacted`, 'denied');
  }
  if (isDeniedCode(code) || httpStatus(err) === 403) {
    return new StorageError(`access to ${uri} denied (${describeS3Error(err)}); check the AWS credentials and policies of ${WHOSE_CREDENTIALS}`, 'denied');
  }
  if (code === 'NoSuchBucket') {
    // Led by the bucket: the object asked for first may be one the user never named (a plan's manifest).
    const bucket = /^s3:\/\/([^/]+)/.exec(uri)?.[1];
    return new StorageError(`bucket ${bucket ? `s3://${bucket}` : `of ${uri}`} does not exist (${describeS3Error(err)}; asked for ${uri})`, 'not-found');
  }
  if (code === 'InvalidBucketName') {
    return new StorageError(`invalid bucket name in ${uri} (${describeS3Error(err)})`, 'invalid-key');
  }
  return undefined;
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EAI_AGAIN',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'InternalError',
  'ServiceUnavailable',
]);

/** Worth another attempt: network failures, throttling, server-side errors, truncated bodies. */
export function isTransient(err: unknown): boolean {
  if (err instanceof StorageError) return false;
  if (err instanceof TruncatedBodyError) return true;
  const status = httpStatus(err);
  if (status !== undefined && status >= 500) return true;
  if (status === 429 || isConditionalConflict(err)) return true;
  const code = errorCode(err);
  if (code && NETWORK_CODES.has(code)) return true;
  const message = err instanceof Error ? err.message : '';
  // Node reports a socket closed mid-body as a plain Error('aborted') or a premature close.
  return /aborted|socket hang up|premature close|ECONNRESET|timed? ?out/i.test(message);
}

/** A response body that ended before Content-Length bytes arrived. */
export class TruncatedBodyError extends Error {
  constructor(uri: string, got: number, expected: number) {
    super(`download of ${uri} ended after ${got} of ${expected} bytes`);
    this.name = 'TruncatedBodyError';
  }
}

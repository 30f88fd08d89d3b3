/**
 * An HTTP proxy on 127.0.0.1 in front of the S3 server that injects faults at the wire level, the way
 * S3 and networks fail: 500 InternalError and 503 SlowDown with S3's XML error bodies, connections
 * reset before an answer, a response body cut in the middle, an upload cut in the middle, stalls
 * longer than the client's timeout, added latency, permanent 403s for chosen requests, answers lost after
 * the request landed, and HEAD ETags that are not MD5s (SSE-KMS).
 *
 * Bounded: a budget of faults in total, and at most `maxConsecutive` faults in a row for the same
 * request (so a client that retries always gets through). Deterministic for a seed and a request order.
 */
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { createPrng } from '../../client/demo/sample-warehouse';

export type FaultKind = 'error500' | 'slowDown503' | 'reset' | 'midBodyReset' | 'uploadReset' | 'stall';

export interface ProxyRequestInfo {
  method: string;
  bucket: string;
  key: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
}

export interface FaultPlan {
  /** Probability per eligible request of each fault (checked in this order, one fault at most). */
  rates?: Partial<Record<FaultKind, number>>;
  /** Added before every forwarded request. */
  latencyMs?: number;
  /** How long a stalled request is held before its connection is dropped (longer than the client timeout). */
  stallMs?: number;
  /** Total faults this plan may inject; afterwards everything passes. */
  maxFaults?: number;
  /** Faults in a row for one request (method, path, range, part); the next try passes. Default 2. */
  maxConsecutive?: number;
  /** Which requests may get a random fault (default: all). */
  eligible?: (req: ProxyRequestInfo) => boolean;
  /** Requests answered with a permanent 403, whatever the budget. */
  deny?: (req: ProxyRequestInfo) => boolean;
  /**
   * Error code of a denial: AccessDenied (default), InvalidAccessKeyId (whose body names the key id, as
   * AWS does), ExpiredToken (HTTP 400, whose body echoes the request's session token, as AWS does) or
   * InvalidObjectState (an object archived by a lifecycle rule), BadRequest (HTTP 400, a request refused as
   * malformed), or EchoedRequest (HTTP 400, a code no AWS service uses, whose message repeats the request's
   * Authorization and session-token headers, as an S3-compatible server did).
   */
  denyCode?: 'AccessDenied' | 'InvalidAccessKeyId' | 'ExpiredToken' | 'InvalidObjectState' | 'BadRequest' | 'EchoedRequest';
  /** Requests forwarded whose answer is then lost (the connection dropped): the write landed, the client does not know. */
  loseResponse?: (req: ProxyRequestInfo) => boolean;
  /** HEAD answers with an ETag that is not the MD5 of the body, as for SSE-KMS or SSE-C objects. */
  opaqueHeadEtags?: boolean;
}

export interface FaultStats {
  requests: number;
  injected: Record<FaultKind | 'denied', number>;
  /** Requests that carried these headers (a resumed download is a ranged GET with If-Match). */
  withHeader: { range: number; 'if-match': number; 'if-none-match': number };
}

export interface FaultProxy {
  endpoint: string;
  stats(): FaultStats;
  /** Replaces the plan (and resets the budget and the consecutive counters). */
  setPlan(plan: FaultPlan): void;
  stop(): Promise<void>;
}

const KINDS: FaultKind[] = ['error500', 'slowDown503', 'reset', 'midBodyReset', 'uploadReset', 'stall'];


function describe(req: http.IncomingMessage): ProxyRequestInfo {
  const url = new URL(req.url ?? '/', 'http://proxy');
  const [, bucket = '', ...rest] = url.pathname.split('/');
  return { method: req.method ?? 'GET', bucket: decodeURIComponent(bucket), key: decodeURIComponent(rest.join('/')), query: url.searchParams, headers: req.headers };
}

function identity(info: ProxyRequestInfo): string {
  return [info.method, info.bucket, info.key, info.headers.range ?? '', info.query.get('partNumber') ?? '', info.query.get('uploadId') ?? '', [...info.query.keys()].sort().join(',')].join('|');
}

function s3ErrorXml(code: string, message: string, resource: string, extra = ''): string {
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message>` +
    `<Resource>${resource}</Resource>${extra}<RequestId>${randomUUID().slice(0, 16)}</RequestId></Error>`
  );
}

/** The key id from a SigV4 Authorization header (Credential=AKIA.../date/region/s3/aws4_request). */
function accessKeyIdOf(headers: http.IncomingHttpHeaders): string {
  return /Credential=([^/,\s]+)/.exec(headers.authorization ?? '')?.[1] ?? '';
}

/** The service a request is signed for (the credential scope's fourth part): s3, or s3tables for the S3 Tables API. */
function serviceOf(headers: http.IncomingHttpHeaders): string {
  return /Credential=[^/,\s]+\/[^/]+\/[^/]+\/([^/,\s]+)\//.exec(headers.authorization ?? '')?.[1] ?? '';
}

export async function startFaultProxy(target: string, initial: FaultPlan = {}, seed = 1): Promise<FaultProxy> {
  const upstream = new URL(target);
  let plan = initial;
  let random = createPrng(seed);
  let budget = plan.maxFaults ?? Infinity;
  let consecutive = new Map<string, number>();
  const stats: FaultStats = {
    requests: 0,
    injected: { error500: 0, slowDown503: 0, reset: 0, midBodyReset: 0, uploadReset: 0, stall: 0, denied: 0 },
    withHeader: { range: 0, 'if-match': 0, 'if-none-match': 0 },
  };
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const pickFault = (info: ProxyRequestInfo): FaultKind | undefined => {
    if (budget <= 0 || (plan.eligible && !plan.eligible(info))) return undefined;
    const id = identity(info);
    const inARow = consecutive.get(id) ?? 0;
    if (inARow >= (plan.maxConsecutive ?? 2)) {
      consecutive.delete(id);
      return undefined;
    }
    const hasBody = Number(info.headers['content-length'] ?? 0) > 0;
    for (const kind of KINDS) {
      const rate = plan.rates?.[kind] ?? 0;
      if (rate <= 0 || random() >= rate) continue;
      if (kind === 'uploadReset' && !hasBody) continue;
      if (kind === 'midBodyReset' && info.method !== 'GET') continue;
      budget--;
      consecutive.set(id, inARow + 1);
      stats.injected[kind]++;
      return kind;
    }
    consecutive.delete(id);
    return undefined;
  };

  const answerError = (req: http.IncomingMessage, res: http.ServerResponse, status: number, code: string, message: string, extra = '') => {
    const send = () => {
      // The S3 Tables API is REST-JSON: its SDK reads the error's name from a header, not from XML.
      if (serviceOf(req.headers) === 's3tables') {
        const body = JSON.stringify({ message });
        const name = code.endsWith('Exception') ? code : `${code}Exception`;
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-amzn-errortype': name });
        res.end(body);
        return;
      }
      const body = req.method === 'HEAD' ? '' : s3ErrorXml(code, message, req.url ?? '/', extra);
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), 'x-amz-request-id': randomUUID().slice(0, 16) });
      res.end(body);
    };
    // Read the upload first, as S3 does, so the client sees the answer rather than a broken pipe.
    if (req.readableEnded) send();
    else {
      req.on('end', send);
      req.resume();
    }
  };

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, fault: FaultKind | undefined, lose = false) => {
    const out = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        up.on('error', () => req.socket.destroy());
        if (fault === 'midBodyReset') {
          const length = Number(up.headers['content-length'] ?? 0);
          if (length >= 2) {
            res.writeHead(up.statusCode ?? 502, up.headers);
            let sent = 0;
            const cut = Math.floor(length / 2);
            up.on('data', (chunk: Buffer) => {
              if (sent >= cut) return;
              const piece = chunk.subarray(0, cut - sent);
              sent += piece.length;
              res.write(piece);
              if (sent >= cut) {
                up.destroy();
                req.socket.destroy();
              }
            });
            return;
          }
        }
        if (fault === 'stall') {
          // Headers and nothing more: the client's idle timeout must notice.
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.destroy();
          later(plan.stallMs ?? 30_000, () => req.socket.destroy());
          return;
        }
        if (lose) {
          up.resume();
          up.on('end', () => req.socket.destroy());
          return;
        }
        const headers = plan.opaqueHeadEtags && req.method === 'HEAD' && up.headers.etag ? { ...up.headers, etag: `"${randomUUID().replace(/-/g, '')}"` } : up.headers;
        res.writeHead(up.statusCode ?? 502, headers);
        up.pipe(res);
      },
    );
    out.on('error', () => req.socket.destroy());
    req.pipe(out);
  };

  const server = http.createServer((req, res) => {
    stats.requests++;
    // Broken connections are what this proxy is for; they must not surface as uncaught errors.
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    for (const h of ['range', 'if-match', 'if-none-match'] as const) if (req.headers[h] !== undefined) stats.withHeader[h]++;
    const info = describe(req);
    if (plan.deny?.(info)) {
      stats.injected.denied++;
      const code = plan.denyCode ?? 'AccessDenied';
      if (code === 'InvalidAccessKeyId') {
        answerError(req, res, 403, code, 'The AWS Access Key Id you provided does not exist in our records.', `<AWSAccessKeyId>${accessKeyIdOf(req.headers)}</AWSAccessKeyId>`);
      } else if (code === 'InvalidObjectState') {
        answerError(req, res, 403, code, 'The operation is not valid for the object\'s storage class', '<StorageClass>GLACIER</StorageClass>');
      } else if (code === 'BadRequest') {
        answerError(req, res, 400, code, 'The request is not valid.');
      } else if (code === 'EchoedRequest') {
        const echoed = `authorization: ${req.headers.authorization ?? ''} x-amz-security-token: ${String(req.headers['x-amz-security-token'] ?? '')}`;
        answerError(req, res, 400, code, `Cannot serve ${req.method} with headers ${echoed}`);
      } else if (code === 'ExpiredToken') {
        answerError(req, res, 400, code, 'The provided token has expired.', `<Token-0>${String(req.headers['x-amz-security-token'] ?? '')}</Token-0>`);
      } else {
        answerError(req, res, 403, code, 'Access Denied');
      }
      return;
    }
    const fault = pickFault(info);
    const go = () => {
      switch (fault) {
        case 'error500':
          return answerError(req, res, 500, 'InternalError', 'We encountered an internal error. Please try again.');
        case 'slowDown503':
          return answerError(req, res, 503, 'SlowDown', 'Please reduce your request rate.');
        case 'reset':
          return req.socket.destroy();
        case 'uploadReset': {
          const half = Math.max(1, Math.floor(Number(req.headers['content-length'] ?? 2) / 2));
          let got = 0;
          req.on('data', (c: Buffer) => {
            got += c.length;
            if (got >= half) req.socket.destroy();
          });
          return;
        }
        default:
          return forward(req, res, fault, plan.loseResponse?.(info) ?? false);
      }
    };
    if (plan.latencyMs) later(plan.latencyMs, go);
    else go();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    stats: () => ({ requests: stats.requests, injected: { ...stats.injected }, withHeader: { ...stats.withHeader } }),
    setPlan: (next) => {
      plan = next;
      budget = next.maxFaults ?? Infinity;
      consecutive = new Map();
      random = createPrng(seed);
    },
    stop: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

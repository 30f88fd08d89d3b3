/**
 * A real S3 / S3 Tables API server (moto) on loopback for the tests, on a free port, stopped by the
 * harness. The process environment is pointed at it the way an operator points the worker at an
 * S3-compatible server: AWS_ENDPOINT_URL, AWS_REGION and (fake, per-run) credentials.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { relativeFiles } from './files';
import { pythonExecutable } from '../../client/temporal-cli';

export interface MotoServer {
  endpoint: string;
  port: number;
  /** The fake credentials this run put into process.env (the secrets test looks for them). */
  accessKeyId: string;
  secretAccessKey: string;
  /** The variables a child process (a worker, pyiceberg) needs to reach the server. */
  env: Record<string, string>;
  /** A client straight to moto (not through any proxy), for test setup and inspection. */
  client: S3Client;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function fakeKeyId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  return 'AKIA' + [...randomBytes(16)].map((b) => alphabet[b % alphabet.length]).join('');
}

async function waitUntilAnswering(endpoint: string, child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`moto server exited with ${child.exitCode}: ${output().slice(-2000)}`);
    try {
      const res = await fetch(`${endpoint}/moto-api/data.json`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`moto server did not answer on ${endpoint} within ${timeoutMs} ms: ${output().slice(-2000)}`);
}

export async function startMoto(): Promise<MotoServer> {
  const python = pythonExecutable();
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const child = spawn(python, ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // moto's own defaults; nothing of the parent's AWS configuration is needed by the server.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', MOTO_PORT: String(port) },
  });
  let out = '';
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  try {
    await waitUntilAnswering(endpoint, child, () => out, 30_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }

  const accessKeyId = fakeKeyId();
  const secretAccessKey = randomBytes(30).toString('base64').replace(/[^A-Za-z0-9]/g, 'x');
  const env: Record<string, string> = {
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: accessKeyId,
    AWS_SECRET_ACCESS_KEY: secretAccessKey,
  };
  for (const name of ['AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL_S3TABLES', 'AWS_DEFAULT_REGION']) delete process.env[name];
  Object.assign(process.env, env);
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } });
  return {
    endpoint,
    port,
    accessKeyId,
    secretAccessKey,
    env,
    client,
    createBucket: async (name) => {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    stop: async () => {
      client.destroy();
      process.off('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Copies every file under `dir` to s3://bucket/prefix/<relative path> (test setup). */
export async function uploadDirectory(client: S3Client, bucket: string, prefix: string, dir: string): Promise<string[]> {
  const files = await relativeFiles(dir);
  const base = prefix ? `${prefix.replace(/\/+$/, '')}/` : '';
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < files.length) {
        const rel = files[next++]!;
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: base + rel, Body: await fs.readFile(path.join(dir, rel)) }));
      }
    }),
  );
  return files.sort();
}

/** Every key below s3://bucket/prefix/, relative to the prefix, sorted. */
export async function listKeys(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const base = prefix ? `${prefix.replace(/\/+$/, '')}/` : '';
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: base, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.push(o.Key!.slice(base.length));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}

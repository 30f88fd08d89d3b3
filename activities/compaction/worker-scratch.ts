/**
 * A worker's own scratch directory, and the sweep of those that dead workers left behind.
 *
 * Heavy buckets are exactly the ones that get a worker OOM-killed, and such a worker leaves its
 * materialized inputs, partial outputs and DuckDB spill files (gigabytes) in the scratch directory.
 * Nothing else would ever remove them, so every worker claims `worker-<id>/` under the scratch root,
 * keeps its `owner.json` fresh, and at start removes the claims whose owner is gone:
 *   - same host and PID namespace, and that process no longer exists; or
 *   - the owner has not refreshed its claim for STALE_AFTER_MS (another host sharing the volume, or a
 *     PID reused by an unrelated process).
 * Only `worker-*` directories are ever touched: the scratch root may be a shared directory.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hasGlobCharacter } from '../../workflows/contract';
import { makeDirectory } from '../storage/local-store';

const OWNER_FILE = 'owner.json';
const CLAIM_PREFIX = 'worker-';
/** How often a live worker refreshes its claim; a claim is stale after several missed refreshes. */
const REFRESH_EVERY_MS = 60_000;
export const STALE_AFTER_MS = 10 * REFRESH_EVERY_MS;

interface Owner {
  host: string;
  /** PIDs only compare within one PID namespace (containers sharing a volume have their own). */
  pidNamespace: string;
  pid: number;
  startedAt: string;
}

export interface SweptClaim {
  dir: string;
  bytes: number;
  reason: 'owner exited' | 'claim not refreshed';
}

export interface WorkerScratch {
  /** This worker's directory; everything the worker writes locally goes below it. */
  dir: string;
  /** Claims of dead workers removed when this one was claimed. */
  swept: SweptClaim[];
  /** Stops refreshing the claim and removes the directory (graceful shutdown). */
  release(): Promise<void>;
}

async function pidNamespace(): Promise<string> {
  try {
    return await fs.readlink('/proc/self/ns/pid');
  } catch {
    return ''; // not Linux: PIDs are compared per host only
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readOwner(dir: string): Promise<{ owner: Owner; refreshedAt: number } | undefined> {
  try {
    const file = path.join(dir, OWNER_FILE);
    const [text, stat] = await Promise.all([fs.readFile(file, 'utf8'), fs.stat(file)]);
    return { owner: JSON.parse(text) as Owner, refreshedAt: stat.mtimeMs };
  } catch {
    return undefined;
  }
}

async function diskBytes(dir: string): Promise<number> {
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  let total = 0;
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await diskBytes(p);
    else if (e.isFile()) total += await fs.stat(p).then((s) => s.size, () => 0);
  }
  return total;
}

/** Why a claim may be removed, or undefined while its owner may still be using it. */
async function abandonment(dir: string, self: Omit<Owner, 'startedAt'>, now: number): Promise<SweptClaim['reason'] | undefined> {
  const found = await readOwner(dir);
  if (!found) {
    // Being claimed right now (the owner file follows the mkdir), or a claim that never finished.
    const stat = await fs.stat(dir).catch(() => undefined);
    return stat && now - stat.mtimeMs > STALE_AFTER_MS ? 'claim not refreshed' : undefined;
  }
  const { owner, refreshedAt } = found;
  const sameProcessSpace = owner.host === self.host && owner.pidNamespace === self.pidNamespace;
  if (sameProcessSpace && owner.pid !== self.pid && !processExists(owner.pid)) return 'owner exited';
  return now - refreshedAt > STALE_AFTER_MS ? 'claim not refreshed' : undefined;
}

async function sweepAbandonedClaims(root: string, self: Omit<Owner, 'startedAt'>, keep: string): Promise<SweptClaim[]> {
  const entries = await fs.readdir(root, { withFileTypes: true }).catch(() => []);
  const swept: SweptClaim[] = [];
  for (const entry of entries) {
    const dir = path.join(root, entry.name);
    if (!entry.isDirectory() || !entry.name.startsWith(CLAIM_PREFIX) || dir === keep) continue;
    const reason = await abandonment(dir, self, Date.now());
    if (!reason) continue;
    const bytes = await diskBytes(dir);
    await fs.rm(dir, { recursive: true, force: true });
    swept.push({ dir, bytes, reason });
  }
  return swept;
}

/** Files downloaded from S3 are read by DuckDB from the scratch directory: a pattern would read the wrong files or none. */
export function refuseGlobScratch(root: string, fix?: string): void {
  if (hasGlobCharacter(root)) throw new Error(`scratch directory ${root} must not contain * ? [ ] { } (DuckDB reads them as a glob pattern)${fix ? `; ${fix}` : ''}`);
}

export async function claimWorkerScratch(root: string): Promise<WorkerScratch> {
  refuseGlobScratch(root);
  const self = { host: os.hostname(), pidNamespace: await pidNamespace(), pid: process.pid };
  const dir = path.join(root, `${CLAIM_PREFIX}${randomUUID().slice(0, 8)}`);
  const ownerFile = path.join(dir, OWNER_FILE);
  const owner: Owner = { ...self, startedAt: new Date().toISOString() };
  try {
    await makeDirectory(dir);
    await fs.writeFile(ownerFile, JSON.stringify(owner));
  } catch (err) {
    // A claim without its owner would be swept only once it looks stale (a full disk leaves an empty owner.json).
    await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw new Error(`scratch directory ${root} cannot be used: ${(err as Error).message}`);
  }
  const swept = await sweepAbandonedClaims(root, self, dir);
  const refresh = setInterval(() => {
    const t = new Date();
    fs.utimes(ownerFile, t, t).catch(() => undefined);
  }, REFRESH_EVERY_MS);
  refresh.unref();
  return {
    dir,
    swept,
    release: async () => {
      clearInterval(refresh);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

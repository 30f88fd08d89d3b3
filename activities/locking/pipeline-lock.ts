/**
 * `--use-lock`: for mixed deployments, also honour the lock object of the Python pipeline, so a
 * Python ingest or compaction and this workflow never write the warehouse at the same time.
 * The object is the one earthcatalog's `S3Lock` writes (JSON: `owner`, `pid`, `hostname`, `acquired`,
 * `ttl_hours`; stale `ttl_hours` after `acquired`, 12 by default), created only if absent (conditional
 * write). We write that shape too, so the pipeline honours ours, plus `expires_at`, which earlier
 * releases of this tool read. A stale one may be taken over, and so may one whose owner is a workflow
 * of ours that is no longer running (terminated or timed out: it could not release it), instead of
 * blocking the Python pipeline and every later run until it expires. One that is neither shape is
 * honoured, not taken over: it may be a pipeline's we do not know. The workflow-level lock remains the
 * primary mutual exclusion.
 */
import * as os from 'node:os';
import type { WarehouseStore } from '../storage/warehouse-store';

/**
 * Where releases before the Python pipeline's shape kept the object, under the warehouse root: a run
 * upgraded while it held one there releases it there too (no Python pipeline ever read it).
 */
export const EARLIER_RELEASES_LOCK_KEY = '_lock/compaction.lock';

/** How long our object lasts without a renewal: a run renews it after every page of its plan. */
const TTL_HOURS = 24;
/** The Python pipeline's default, for an object without `ttl_hours`. */
const PYTHON_TTL_HOURS = 12;

interface PipelineLockBody {
  owner: string;
  pid: number;
  hostname: string;
  /** ISO 8601 with an offset, which Python's datetime.fromisoformat reads as an aware time. */
  acquired: string;
  ttl_hours: number;
  expires_at: string;
}

/** A lock object as read: its owner, and when it goes stale. */
interface HeldLock {
  owner: string;
  expiresAt: number;
  /** Where its owner ran, when the object says (the Python pipeline's and ours do): ` on HOST`, or ''. */
  where: string;
}

export class PipelineLockBusyError extends Error {}

/**
 * Why the owner of a lock object can no longer release it ('TERMINATED', ...), or undefined when it
 * may still be working (a running workflow of ours, or not one of ours at all: the Python pipeline).
 */
export type AbandonedOwner = (owner: string) => Promise<string | undefined>;

/**
 * Takes the lock object for `owner`, or renews it (another TTL from now) when `owner` holds it; returns
 * a note when it took over an abandoned or expired one.
 */
export async function acquirePipelineLock(
  store: WarehouseStore,
  owner: string,
  abandoned: AbandonedOwner,
  key: string,
): Promise<string | undefined> {
  const now = Date.now();
  const body: PipelineLockBody = {
    owner,
    pid: process.pid,
    hostname: os.hostname(),
    acquired: isoWithOffset(now),
    ttl_hours: TTL_HOURS,
    expires_at: new Date(now + TTL_HOURS * 3600_000).toISOString(),
  };
  const bytes = Buffer.from(JSON.stringify(body));
  if ((await store.writeSmall(key, bytes, null)) !== 'conflict') return undefined;
  const current = await store.readSmall(key);
  if (!current) return acquirePipelineLock(store, owner, abandoned, key);
  const held = parseLock(current.body);
  if (!held) {
    throw new PipelineLockBusyError(
      `pipeline lock ${store.uri(key)} is not a lock object this tool can read (JSON with owner, and acquired or expires_at): ` +
        'it is honoured as held; if no pipeline holds it, delete it',
    );
  }
  if (held.owner === owner) {
    // Its owner taking it again renews it (a run longer than the TTL does so after every plan page):
    // `acquired` moves too, as the Python pipeline counts the TTL from it.
    if ((await store.writeSmall(key, bytes, current.version)) === 'conflict') {
      throw new PipelineLockBusyError(`pipeline lock ${store.uri(key)} changed while ${owner} renewed it`);
    }
    return undefined;
  }
  const why = await whyFree(held, abandoned, now);
  if (!why) throw new PipelineLockBusyError(heldBy(store.uri(key), held));
  if ((await store.writeSmall(key, bytes, current.version)) === 'conflict') {
    throw new PipelineLockBusyError(`pipeline lock ${store.uri(key)} changed while taking it over`);
  }
  // Whose it was: a stale Python pipeline's object may be a job that crashed on that host.
  return `took over pipeline lock ${store.uri(key)} from ${held.owner}${held.where}: ${why}`;
}

/**
 * What a run of `owner` would find at `key`, for a dry run, which takes nothing: undefined when it would
 * take the object at once (absent, or its own), else why it would wait or whose object it would take over.
 */
export async function inspectPipelineLock(
  store: WarehouseStore,
  owner: string,
  abandoned: AbandonedOwner,
  key: string,
  running: (owner: string) => Promise<boolean>,
): Promise<string | undefined> {
  const current = await store.readSmall(key);
  if (!current) return undefined;
  const held = parseLock(current.body);
  if (!held) return `pipeline lock ${store.uri(key)} is not a lock object this tool can read: a run would honour it as held and fail; if no pipeline holds it, delete it`;
  if (held.owner === owner) return undefined;
  const why = await whyFree(held, abandoned, Date.now());
  if (why) return `a run would take over pipeline lock ${store.uri(key)} from ${held.owner}${held.where}: ${why}`;
  // A compaction of this warehouse holds the warehouse lock too, which a run waits for first; one of another
  // warehouse sharing the object (s3://bucket/.lock is per bucket) is waited for like the Python pipeline.
  if (await running(held.owner)) {
    return `${heldBy(store.uri(key), held)}, a compaction running now: a run of the same warehouse waits for it to end, one of another warehouse would wait for the object (about 5 minutes), then fail`;
  }
  return `${heldBy(store.uri(key), held)}: a run would wait for it (about 5 minutes), then fail`;
}

/** Why another owner's object may be taken over (stale, or its owner a workflow that has closed), or undefined. */
async function whyFree(held: HeldLock, abandoned: AbandonedOwner, now: number): Promise<string | undefined> {
  if (held.expiresAt <= now) return `expired at ${new Date(held.expiresAt).toISOString()}`;
  const status = await abandoned(held.owner);
  return status ? `its owner, workflow ${held.owner}, is ${status.toLowerCase()}` : undefined;
}

function heldBy(uri: string, held: HeldLock): string {
  return `pipeline lock ${uri} is held by ${held.owner}${held.where} until ${new Date(held.expiresAt).toISOString()}`;
}

export async function releasePipelineLock(store: WarehouseStore, owner: string, key: string): Promise<void> {
  const current = await store.readSmall(key);
  if (current && parseLock(current.body)?.owner === owner) await store.deleteMany([key]);
}

/** Either shape: the Python pipeline's (`acquired` + `ttl_hours`) or an earlier release's (`expires_at`). */
function parseLock(body: Buffer): HeldLock | undefined {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (!parsed || typeof parsed !== 'object' || typeof parsed.owner !== 'string') return undefined;
  const where = typeof parsed.hostname === 'string' && parsed.hostname ? ` on ${parsed.hostname}` : '';
  const expires = typeof parsed.expires_at === 'string' ? Date.parse(parsed.expires_at) : NaN;
  if (Number.isFinite(expires)) return { owner: parsed.owner, expiresAt: expires, where };
  const acquired = typeof parsed.acquired === 'string' ? Date.parse(parsed.acquired) : NaN;
  const ttlHours = typeof parsed.ttl_hours === 'number' && Number.isFinite(parsed.ttl_hours) ? parsed.ttl_hours : PYTHON_TTL_HOURS;
  return Number.isFinite(acquired) ? { owner: parsed.owner, expiresAt: acquired + ttlHours * 3600_000, where } : undefined;
}

/** `2026-12-06T10:00:00.123+00:00`: Python before 3.11 reads no `Z` in datetime.fromisoformat. */
function isoWithOffset(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '+00:00');
}

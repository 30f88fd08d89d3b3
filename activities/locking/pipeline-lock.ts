/**
 * `--use-lock`: for mixed deployments, also honour the lock object of the Python pipeline, so a
 * Python ingest or compaction and this workflow never write the warehouse at the same time.
 * The object is JSON at the warehouse root; it is created only if absent (conditional write). An
 * expired one may be taken over, and so may one whose owner is a workflow of ours that is no longer
 * running (terminated or timed out: it could not release it), instead of blocking the Python pipeline
 * and every later run until it expires. The workflow-level lock remains the primary mutual exclusion.
 */
import type { WarehouseStore } from '../storage/warehouse-store';

export const DEFAULT_PIPELINE_LOCK_KEY = process.env.EARTHCATALOG_PIPELINE_LOCK_KEY ?? '_lock/compaction.lock';
const TTL_MS = 24 * 3600 * 1000;

interface PipelineLockBody {
  owner: string;
  acquired_at: string;
  expires_at: string;
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
  key = DEFAULT_PIPELINE_LOCK_KEY,
): Promise<string | undefined> {
  const now = Date.now();
  const body: PipelineLockBody = { owner, acquired_at: new Date(now).toISOString(), expires_at: new Date(now + TTL_MS).toISOString() };
  const bytes = Buffer.from(JSON.stringify(body));
  if ((await store.writeSmall(key, bytes, null)) !== 'conflict') return undefined;
  const current = await store.readSmall(key);
  if (!current) return acquirePipelineLock(store, owner, abandoned, key);
  const held = parseLock(current.body);
  if (held?.owner === owner) {
    // Its owner taking it again renews it (a run longer than the TTL does so after every plan page).
    const renewed: PipelineLockBody = { ...body, acquired_at: held.acquired_at };
    if ((await store.writeSmall(key, Buffer.from(JSON.stringify(renewed)), current.version)) === 'conflict') {
      throw new PipelineLockBusyError(`pipeline lock ${store.uri(key)} changed while ${owner} renewed it`);
    }
    return undefined;
  }
  let why = held ? undefined : 'unreadable';
  if (held && Date.parse(held.expires_at) <= now) why = `expired at ${held.expires_at}`;
  if (held && !why) {
    const status = await abandoned(held.owner);
    if (status) why = `its owner, workflow ${held.owner}, is ${status.toLowerCase()}`;
  }
  if (!why) throw new PipelineLockBusyError(`pipeline lock ${store.uri(key)} is held by ${held!.owner} until ${held!.expires_at}`);
  if ((await store.writeSmall(key, bytes, current.version)) === 'conflict') {
    throw new PipelineLockBusyError(`pipeline lock ${store.uri(key)} changed while taking it over`);
  }
  return `took over pipeline lock ${store.uri(key)}: ${why}`;
}

export async function releasePipelineLock(store: WarehouseStore, owner: string, key = DEFAULT_PIPELINE_LOCK_KEY): Promise<void> {
  const current = await store.readSmall(key);
  if (current && parseLock(current.body)?.owner === owner) await store.deleteMany([key]);
}

function parseLock(body: Buffer): PipelineLockBody | undefined {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as Partial<PipelineLockBody>;
    return typeof parsed.owner === 'string' && typeof parsed.expires_at === 'string' ? (parsed as PipelineLockBody) : undefined;
  } catch {
    return undefined;
  }
}

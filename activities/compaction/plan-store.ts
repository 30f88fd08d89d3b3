/**
 * The durable plan: pages of bucket tasks kept in the warehouse under the control prefix, written
 * before the manifest (the manifest is the commit marker), so a plan is either whole or absent.
 */
import type { BucketTask, CompactionSummary, PlanSummary } from '../../workflows/contract';
import { FailureTypes } from '../../workflows/contract';
import type { WarehouseStore } from '../storage/warehouse-store';
import { CONTROL_PREFIX } from '../storage/warehouse-layout';

/** Buckets per page: a page stays far below the 2 MB payload limit even with hundreds of inputs per bucket. */
export const PLAN_PAGE_SIZE = 200;

export interface PlanManifest {
  version: 1;
  summary: PlanSummary;
  createdAt: string;
  threshold: number;
  cells: string[] | null;
  years: number[] | null;
}

export interface PlanFinish {
  finishedAt: string;
  summary: CompactionSummary;
}

export class PlanNotFoundError extends Error {
  readonly type = FailureTypes.planNotFound;
}

const planDir = (planId: string) => `${CONTROL_PREFIX}/plans/${planId}`;
const manifestKey = (planId: string) => `${planDir(planId)}/manifest.json`;
const finishKey = (planId: string) => `${planDir(planId)}/finished.json`;
const pageKey = (planId: string, page: number) => `${planDir(planId)}/page-${String(page).padStart(6, '0')}.json`;

export async function writePlan(store: WarehouseStore, manifest: PlanManifest, tasks: BucketTask[]): Promise<void> {
  const { planId } = manifest.summary;
  for (let page = 0; page * PLAN_PAGE_SIZE < tasks.length; page++) {
    const body = JSON.stringify(tasks.slice(page * PLAN_PAGE_SIZE, (page + 1) * PLAN_PAGE_SIZE));
    await store.writeSmall(pageKey(planId, page), Buffer.from(body));
  }
  await store.writeSmall(manifestKey(planId), Buffer.from(JSON.stringify(manifest, null, 2)));
}

export async function readPlanManifest(store: WarehouseStore, planId: string): Promise<PlanManifest | undefined> {
  const found = await store.readSmall(manifestKey(planId));
  return found ? (JSON.parse(found.body.toString('utf8')) as PlanManifest) : undefined;
}

export async function readPlanPage(store: WarehouseStore, planId: string, page: number): Promise<BucketTask[]> {
  const found = await store.readSmall(pageKey(planId, page));
  if (!found) throw new PlanNotFoundError(`plan ${planId} has no page ${page} in ${store.uri(planDir(planId))}`);
  return JSON.parse(found.body.toString('utf8')) as BucketTask[];
}

export async function markPlanFinished(store: WarehouseStore, planId: string, summary: CompactionSummary): Promise<void> {
  const finish: PlanFinish = { finishedAt: new Date().toISOString(), summary };
  await store.writeSmall(finishKey(planId), Buffer.from(JSON.stringify(finish, null, 2)));
}

export interface PlanListing {
  planId: string;
  createdAt: string;
  finished: boolean;
  summary: PlanSummary;
}

/** Every plan recorded in the warehouse, oldest first. */
export async function listPlans(store: WarehouseStore): Promise<PlanListing[]> {
  const ids = new Set<string>();
  const finished = new Set<string>();
  for await (const obj of store.list(`${CONTROL_PREFIX}/plans/`)) {
    const m = /^[^/]+\/plans\/([^/]+)\/(manifest|finished)\.json$/.exec(obj.key);
    if (!m) continue;
    if (m[2] === 'manifest') ids.add(m[1]!);
    else finished.add(m[1]!);
  }
  const plans: PlanListing[] = [];
  for (const planId of ids) {
    const manifest = await readPlanManifest(store, planId);
    if (manifest) plans.push({ planId, createdAt: manifest.createdAt, finished: finished.has(planId), summary: manifest.summary });
  }
  return plans.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.planId.localeCompare(b.planId));
}

/**
 * The plan `resume` should finish: the newest plan, if it is unfinished. An older unfinished plan
 * behind a newer one is stale (the newer plan already took its files as inputs) and is never resumed.
 */
export async function findResumablePlan(store: WarehouseStore): Promise<PlanListing | undefined> {
  const plans = await listPlans(store);
  const newest = plans[plans.length - 1];
  return newest && !newest.finished ? newest : undefined;
}

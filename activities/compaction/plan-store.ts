/**
 * The durable plan: pages of bucket tasks kept in the warehouse under the control prefix, written
 * before the manifest (the manifest is the commit marker), so a plan is either whole or absent.
 */
import { randomUUID } from 'node:crypto';
import type { BucketTask, CompactionSummary, PlanSummary } from '../../workflows/contract';
import { bucketPrefix, FailureTypes } from '../../workflows/contract';
import { z } from 'zod';
import type { WarehouseStore } from '../storage/warehouse-store';
import { CONTROL_PREFIX } from '../storage/warehouse-layout';
import type { TableNumberTypes, TableRenames } from './table-types';

/** Most buckets per page: a page's buckets run before the next page loads, and each adds ~6 history events. */
export const PLAN_PAGE_SIZE = 200;

/**
 * Most bytes of JSON per page. A page is the result of the activity that loads it, so it must stay far
 * below Temporal's 2 MB payload limit whatever the buckets hold: 200 buckets of a warehouse that was
 * never compacted, with a file per daily ingest (365 a year, ~120 bytes each), would be ~9 MB.
 */
export const PLAN_PAGE_MAX_BYTES = 512 * 1024;

/**
 * Most bytes of JSON of one bucket's task (its inputs): the task is also the input of its compactBucket
 * activity. A bucket with more inputs (~8,000 files of ~120-byte keys) is compacted over several runs
 * (capBucketInputs).
 */
export const BUCKET_TASK_MAX_BYTES = 1024 * 1024;

/** The tasks cut into pages in plan order: at most PLAN_PAGE_SIZE buckets and PLAN_PAGE_MAX_BYTES each (a larger task alone). */
export function planPages(tasks: readonly BucketTask[]): BucketTask[][] {
  const pages: BucketTask[][] = [];
  let page: BucketTask[] = [];
  let bytes = 2;
  for (const task of tasks) {
    const size = Buffer.byteLength(JSON.stringify(task)) + 1;
    if (page.length && (page.length >= PLAN_PAGE_SIZE || bytes + size > PLAN_PAGE_MAX_BYTES)) {
      pages.push(page);
      page = [];
      bytes = 2;
    }
    page.push(task);
    bytes += size;
  }
  if (page.length) pages.push(page);
  return pages;
}

/**
 * The task with its inputs (in key order) cut to BUCKET_TASK_MAX_BYTES; `deferred` counts the files
 * left for a later run. Those files stay valid data the catalog lists; the next run compacts them with
 * this run's output, and deduplication then covers both.
 */
export function capBucketInputs(task: BucketTask): { task: BucketTask; deferred: number } {
  let bytes = Buffer.byteLength(JSON.stringify({ ...task, inputs: [] }));
  let n = 0;
  for (const input of task.inputs) {
    bytes += Buffer.byteLength(JSON.stringify(input)) + 1;
    if (bytes > BUCKET_TASK_MAX_BYTES) break;
    n++;
  }
  return n === task.inputs.length ? { task, deferred: 0 } : { task: { ...task, inputs: task.inputs.slice(0, n) }, deferred: task.inputs.length - n };
}

export interface PlanManifest {
  version: 1;
  summary: PlanSummary;
  createdAt: string;
  threshold: number;
  cells: string[] | null;
  years: number[] | null;
  /** Folder of the pages, unique to the planning attempt that wrote them (writePlan); absent in plans written before it, whose pages lie beside the manifest. */
  pagesDir?: string;
  /** The table's number types when the plan was made (tableTypeCasts); absent in plans made without the catalog (before it was read, or by tests). */
  tableTypes?: TableNumberTypes;
  /** The table's renamed columns when the plan was made (renamedColumnMerges); absent when it had none. */
  tableRenames?: TableRenames;
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
const pageKey = (planId: string, page: number, pagesDir: string | undefined) =>
  `${planDir(planId)}/${pagesDir ? `${pagesDir}/` : ''}page-${String(page).padStart(6, '0')}.json`;

/**
 * Records a plan: its pages in a folder of this attempt, then the manifest, created only if absent.
 * Two attempts of one planning activity can run at once (one outlived its timeout, or its worker lost
 * Temporal but not the warehouse). Writing the same page names, they would mix two listings, so a
 * bucket could land on two pages or on none. The first manifest written is the plan; a later attempt
 * removes its own pages and returns the plan's summary.
 */
export async function writePlan(store: WarehouseStore, manifest: PlanManifest, pages: readonly BucketTask[][]): Promise<PlanSummary> {
  const { planId } = manifest.summary;
  const pagesDir = `pages-${randomUUID().slice(0, 8)}`;
  const keys = pages.map((_, page) => pageKey(planId, page, pagesDir));
  for (const [page, tasks] of pages.entries()) await store.writeSmall(keys[page]!, Buffer.from(JSON.stringify(tasks)));
  const created = await store.writeSmall(manifestKey(planId), Buffer.from(JSON.stringify({ ...manifest, pagesDir }, null, 2)), null);
  if (created !== 'conflict') return manifest.summary;
  const plan = await readPlanManifest(store, planId);
  if (!plan) throw new Error(`plan ${planId}: its manifest ${store.uri(manifestKey(planId))} vanished while another attempt wrote it`);
  // Only another attempt's manifest makes these pages garbage: a "conflict" about our own write (a lost
  // answer the store could not recognise as ours) must not delete the pages the plan points at.
  if (plan.pagesDir !== pagesDir) await store.deleteMany(keys);
  return plan.summary;
}

export async function readPlanManifest(store: WarehouseStore, planId: string): Promise<PlanManifest | undefined> {
  const found = await store.readSmall(manifestKey(planId));
  return found ? parsePlanFile<PlanManifest>(store, manifestKey(planId), found.body) : undefined;
}

/** What the last run of the whole warehouse checked every output against (lastOutputCheck). */
export interface OutputCheck {
  types: TableNumberTypes;
  /**
   * Buckets whose outputs that run left unchecked: those that failed (their outputs stayed as they were)
   * and those whose output it cannot say has the types (CompactionSummary.untypedOutputs).
   */
  unchecked: Set<string>;
}

/**
 * The table types recorded by the newest finished plan before `planId` that covered the whole warehouse
 * (no `--cells` or `--years`: such a run reads only their outputs): every output was then written with or
 * checked against them (its run read the outputs again for any type that had changed), except in the
 * buckets it left unchecked. Undefined when there is no such plan or it recorded no types (made before they
 * were recorded, or without the catalog), so nothing is known of the outputs.
 */
export async function lastOutputCheck(store: WarehouseStore, planId: string): Promise<OutputCheck | undefined> {
  const finished: string[] = [];
  for await (const obj of store.list(`${CONTROL_PREFIX}/plans/`)) {
    const id = /^[^/]+\/plans\/([^/]+)\/finished\.json$/.exec(obj.key)?.[1];
    if (id !== undefined && id < planId) finished.push(id);
  }
  for (const id of finished.sort().reverse()) {
    let manifest: PlanManifest | undefined;
    let finish: PlanFinish | undefined;
    try {
      manifest = await readPlanManifest(store, id);
      const found = await store.readSmall(finishKey(id));
      finish = found ? parsePlanFile<PlanFinish>(store, finishKey(id), found.body) : undefined;
    } catch (err) {
      if (!(err instanceof PlanNotFoundError)) throw err;
    }
    if (!manifest || !finish || manifest.cells !== null || manifest.years !== null) continue;
    if (!manifest.tableTypes) return undefined;
    const failures = finish.summary?.failedBuckets ?? [];
    // A run with more failures than its summary names cannot tell which outputs it left unchecked.
    if ((finish.summary?.failedBucketsTotal ?? 0) > failures.length) continue;
    const untyped = finish.summary?.untypedOutputs ?? [];
    // Outputs written without the types may hold any column as the union typed it: an older plan's check does not cover them.
    if ((finish.summary?.untypedOutputsTotal ?? 0) > untyped.length) return undefined;
    return { types: manifest.tableTypes, unchecked: new Set([...failures.map((f) => f.bucket), ...untyped]) };
  }
  return undefined;
}

/** A plan file that is not JSON (cut short by a crash, edited by hand) cannot be resumed; no retry will change that. */
function parsePlanFile<T>(store: WarehouseStore, key: string, body: Buffer): T {
  try {
    return JSON.parse(body.toString('utf8')) as T;
  } catch (err) {
    throw new PlanNotFoundError(`plan file ${store.uri(key)} is damaged (${(err as Error).message}); start a new compaction instead of resuming this plan`);
  }
}

const planPageSchema = z.array(
  z
    .object({
      bucket: z.object({ cell: z.string().min(1), year: z.number().int() }).passthrough(),
      inputs: z.array(z.object({ key: z.string().min(1), size: z.number().int().nonnegative() }).passthrough()).min(1),
    })
    .passthrough(),
);

export async function readPlanPage(store: WarehouseStore, planId: string, page: number): Promise<BucketTask[]> {
  const manifest = await readPlanManifest(store, planId);
  if (!manifest) throw new PlanNotFoundError(`no plan ${planId} in ${store.root}`);
  const key = pageKey(planId, page, manifest.pagesDir);
  const found = await store.readSmall(key);
  if (!found) throw new PlanNotFoundError(`plan ${planId} has no page ${page} in ${store.uri(planDir(planId))}`);
  // Pages are ours, but a page edited by hand must not reach the buckets: one that lists a bucket twice
  // would compact it twice under one output name, from different inputs.
  const damaged = (why: string) => new PlanNotFoundError(`plan file ${store.uri(key)} is damaged (${why}); start a new compaction instead of resuming this plan`);
  const parsed = planPageSchema.safeParse(parsePlanFile<unknown>(store, key, found.body));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw damaged(`${issue.path.join('.') || 'the page'}: ${issue.message}`);
  }
  const seen = new Set<string>();
  for (const task of parsed.data) {
    const prefix = bucketPrefix(task.bucket);
    if (seen.has(prefix)) throw damaged(`it lists bucket ${prefix} twice`);
    seen.add(prefix);
  }
  return parsed.data;
}

export async function markPlanFinished(store: WarehouseStore, planId: string, summary: CompactionSummary): Promise<void> {
  const finish: PlanFinish = { finishedAt: new Date().toISOString(), summary };
  await store.writeSmall(finishKey(planId), Buffer.from(JSON.stringify(finish, null, 2)));
}

/**
 * Once `finishedPlanId` has finished: removes the pages of every finished plan (this run's and those
 * earlier versions left) and of every unfinished plan older than it (a terminated run's that the next
 * run superseded instead of resuming: resume takes only the newest plan). Nothing reads them again, and
 * the first compaction of a warehouse of daily parts writes hundreds of MB of them. Manifests and finish
 * records stay: they are small and say what each run planned and did. Pages of a newer unfinished plan
 * are left for its resume. Plan ids start with their creation time, so they sort in creation order.
 * Returns how many were removed.
 */
export async function removeSpentPlanPages(store: WarehouseStore, finishedPlanId: string): Promise<number> {
  const finished = new Set<string>();
  const pages = new Map<string, string[]>();
  for await (const obj of store.list(`${CONTROL_PREFIX}/plans/`)) {
    const m = /^[^/]+\/plans\/([^/]+)\/(?:(finished)\.json|(?:pages-[^/]+\/)?page-\d+\.json)$/.exec(obj.key);
    if (!m) continue;
    if (m[2]) finished.add(m[1]!);
    else pages.set(m[1]!, [...(pages.get(m[1]!) ?? []), obj.key]);
  }
  const keys = [...pages].filter(([planId]) => finished.has(planId) || planId < finishedPlanId).flatMap(([, planPages]) => planPages);
  if (keys.length) await store.deleteMany(keys);
  // A spent plan's pages folder is written no more; on a filesystem it would stay behind, empty, one per run.
  const folders = new Set(keys.filter((k) => /\/pages-[^/]+\/[^/]+$/.test(k)).map((k) => k.slice(0, k.lastIndexOf('/'))));
  for (const folder of folders) await store.removeEmptyFolder?.(folder);
  return keys.length;
}

export interface PlanListing {
  planId: string;
  createdAt: string;
  finished: boolean;
  summary: PlanSummary;
}

/** Every plan recorded in the warehouse, oldest first, and those whose manifest is damaged (parsePlanFile). */
export async function listPlans(store: WarehouseStore): Promise<{ plans: PlanListing[]; damaged: Map<string, PlanNotFoundError> }> {
  const ids = new Set<string>();
  const finished = new Set<string>();
  for await (const obj of store.list(`${CONTROL_PREFIX}/plans/`)) {
    const m = /^[^/]+\/plans\/([^/]+)\/(manifest|finished)\.json$/.exec(obj.key);
    if (!m) continue;
    if (m[2] === 'manifest') ids.add(m[1]!);
    else finished.add(m[1]!);
  }
  const plans: PlanListing[] = [];
  const damaged = new Map<string, PlanNotFoundError>();
  for (const planId of ids) {
    try {
      const manifest = await readPlanManifest(store, planId);
      if (manifest) plans.push({ planId, createdAt: manifest.createdAt, finished: finished.has(planId), summary: manifest.summary });
    } catch (err) {
      if (!(err instanceof PlanNotFoundError)) throw err;
      damaged.set(planId, err);
    }
  }
  return { plans: plans.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.planId.localeCompare(b.planId)), damaged };
}

/**
 * The newest plan, in creation order, and the ids of all plans. A damaged manifest newer than every
 * readable one is thrown (its id still starts with its creation time): the newest plan cannot be read.
 * An older damaged plan does not matter.
 */
async function newestPlan(store: WarehouseStore): Promise<{ newest: PlanListing | undefined; ids: Set<string> }> {
  const { plans, damaged } = await listPlans(store);
  const newest = plans[plans.length - 1];
  const newestDamaged = [...damaged.keys()].sort().pop();
  if (newestDamaged !== undefined && (!newest || newestDamaged > newest.planId)) throw damaged.get(newestDamaged)!;
  return { newest, ids: new Set([...plans.map((p) => p.planId), ...damaged.keys()]) };
}

/**
 * The plan `resume` should finish: the newest plan, if it is unfinished. An older unfinished plan
 * behind a newer one is stale (the newer plan already took its files as inputs) and is never resumed.
 * Without one, the error says what the newest plan is, so that a resume of a run that finished its plan
 * after all (it was still running, or ended just before it was terminated) does not read as a lost plan.
 */
export async function findResumablePlan(store: WarehouseStore): Promise<PlanListing> {
  const { newest } = await newestPlan(store);
  if (newest && !newest.finished) return newest;
  const why = newest ? `its newest plan, ${newest.planId} (made ${newest.createdAt}), has finished` : 'no compaction has made a plan there';
  throw new PlanNotFoundError(`no unfinished compaction plan to resume in ${store.root}: ${why}`);
}

/**
 * The plan `resume --plan` names, if it may be resumed: the newest, and unfinished. Resuming an older
 * one would compact files that a newer plan already replaced (its buckets would fail, not lose data,
 * but the run would be for nothing); a finished one has nothing left.
 */
export async function resumablePlanById(store: WarehouseStore, planId: string): Promise<PlanListing> {
  const { newest, ids } = await newestPlan(store);
  // No readable newest plan means no plan at all: newestPlan throws when damage hides it.
  if (!newest) throw new PlanNotFoundError(`no plan ${planId} in ${store.root}: no compaction has made a plan there`);
  if (!ids.has(planId)) {
    // A mistyped id, or one of another warehouse: the plan a resume could finish here, if any, is the newest.
    const there = newest.finished
      ? `its newest plan, ${newest.planId} (made ${newest.createdAt}), has finished`
      : `its newest plan, ${newest.planId} (made ${newest.createdAt}), is unfinished: resume --plan ${newest.planId} (or resume without --plan) finishes it`;
    throw new PlanNotFoundError(`no plan ${planId} in ${store.root}; ${there}`);
  }
  if (newest.planId !== planId) {
    throw new PlanNotFoundError(`plan ${planId} in ${store.root} is older than plan ${newest.planId}, which took its files as inputs; only the newest plan can be resumed`);
  }
  if (newest.finished) throw new PlanNotFoundError(`plan ${planId} in ${store.root} has finished`);
  return newest;
}

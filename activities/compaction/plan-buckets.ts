import type { BucketTask, PlanRequest, PlanSummary } from '../../workflows/contract';
import { bucketPrefix } from '../../workflows/contract';
import type { WarehouseStore } from '../storage/warehouse-store';
import { CONTROL_PREFIX, inCellFolder, isCompactableKey, isOutputKey, looksLikeParquet, parseDataFileKey, selectionFilter, selectionPrefixes, unopenableLocation } from '../storage/warehouse-layout';
import { bucketsReadersCannotRead } from './unreadable-files';
import type { TableNumberTypes, TableRenames } from './table-types';
import { capBucketInputs, lastOutputCheck, planPages, readPlanManifest, writePlan, type OutputCheck } from './plan-store';

const SAMPLE_SIZE = 20;

/**
 * Lists the warehouse, groups data files per (cell, year) and records the buckets to compact: those
 * with `threshold` files or more, and those below it holding a file readers cannot read as the table
 * (bucketsReadersCannotRead). `tableTypes` (the table's number types, read from the catalog) are
 * recorded in the plan: every bucket of it is written with them (tableTypeCasts), and so are its renamed
 * columns (renamedColumnMerges).
 * The plan is the only definition of a bucket's inputs: files that arrive later are not touched.
 * A dry run writes nothing. A retried attempt returns the plan an earlier attempt committed.
 */
export async function planBuckets(
  store: WarehouseStore,
  req: PlanRequest,
  heartbeat: (listed: number) => void,
  tableTypes?: TableNumberTypes,
  renames?: TableRenames,
): Promise<PlanSummary> {
  const tableRenames = renames && Object.keys(renames).length ? renames : undefined;
  if (!req.dryRun) {
    const existing = await readPlanManifest(store, req.planId);
    if (existing) return existing.summary;
  }
  const selection = { cells: req.cells, years: req.years };
  const selected = selectionFilter(selection);

  const byBucket = new Map<string, BucketTask>();
  let listed = 0;
  let ignoredObjects = 0;
  const parquetLike: string[] = [];
  let parquetLikeTotal = 0;
  // A data file of the layout that cannot be compacted (a glob character in its key) is still registered
  // by the rebuild unless readers could not open its location: its rows are in the table, so it is not
  // named among the files no reader sees.
  const countIgnored = (key: string, registered = false) => {
    if (!inCellFolder(key)) return;
    ignoredObjects++;
    if (!registered && looksLikeParquet(key) && parquetLikeTotal++ < SAMPLE_SIZE) parquetLike.push(key);
  };
  for (const prefix of selectionPrefixes(selection)) {
    for await (const obj of store.list(prefix, countIgnored)) {
      if (++listed % 1000 === 0) heartbeat(listed);
      if (obj.key.startsWith(`${CONTROL_PREFIX}/`)) continue;
      const parsed = parseDataFileKey(obj.key);
      if (!parsed || !isCompactableKey(obj.key)) {
        countIgnored(obj.key, parsed !== undefined && unopenableLocation(store.uri(obj.key)) === undefined);
        continue;
      }
      if (!selected(parsed.bucket)) continue;
      const name = bucketPrefix(parsed.bucket);
      let task = byBucket.get(name);
      if (!task) byBucket.set(name, (task = { bucket: parsed.bucket, inputs: [] }));
      task.inputs.push({ key: obj.key, size: obj.size });
    }
  }

  // Once more before anything is written: an attempt whose run is gone (terminated, timed out) stops here
  // instead of writing a plan that would then pass for the newest one.
  heartbeat(listed);
  const all = [...byBucket.values()].sort((a, b) => compareBuckets(a, b));
  for (const t of all) t.inputs.sort(inputOrder);
  // Largest first: the workflow lets its buckets in flight end before it continues as new (and runs
  // recorded before its window across pages did so before every page), so a heavy bucket that starts
  // late keeps every other slot idle while it runs. In size order the heavy buckets start first and the
  // last ones are short. Equal sizes keep (cell, year) order, so the plan is the same for the same listing.
  let inputsDeferred = 0;
  const capped = all.map((t) => {
    if (t.inputs.length < req.threshold) return t;
    const { task, deferred } = capBucketInputs(t);
    inputsDeferred += deferred;
    return task;
  });
  let footersRead = 0;
  const { nullTyped, retyped } = await bucketsReadersCannotRead(
    store,
    capped.filter((t) => t.inputs.length < req.threshold),
    tableTypes,
    tableTypes ? outputTypes(tableTypes, await lastOutputCheck(store, req.planId)) : () => ({}),
    () => void (++footersRead % 100 === 0 && heartbeat(listed)),
  );
  const bytes = new Map(capped.map((t) => [t, bytesOf(t)]));
  const due = capped.filter((t) => t.inputs.length >= req.threshold || nullTyped.has(t) || retyped.has(t)).sort((a, b) => bytes.get(b)! - bytes.get(a)!);
  const named = (set: Set<BucketTask>) => [...set].sort(compareBuckets).slice(0, SAMPLE_SIZE).map((t) => bucketPrefix(t.bucket));
  const pages = planPages(due);
  const summary: PlanSummary = {
    planId: req.planId,
    bucketsScanned: all.length,
    filesBefore: all.reduce((n, t) => n + t.inputs.length, 0),
    bucketsToCompact: due.length,
    filesToCompact: due.reduce((n, t) => n + t.inputs.length, 0),
    bytesToCompact: due.reduce((n, t) => n + bytes.get(t)!, 0),
    pages: pages.length,
    sample: due.slice(0, SAMPLE_SIZE).map((t) => bucketPrefix(t.bucket)),
    ignoredObjects,
    ...(parquetLikeTotal ? { ignoredParquetLike: parquetLike.sort(), ignoredParquetLikeTotal: parquetLikeTotal } : {}),
    ...(inputsDeferred ? { inputsDeferred } : {}),
    ...(nullTyped.size ? { nullTypedBuckets: named(nullTyped), nullTypedBucketsTotal: nullTyped.size } : {}),
    ...(retyped.size ? { retypedBuckets: named(retyped), retypedBucketsTotal: retyped.size } : {}),
  };
  if (req.dryRun) return summary;
  return writePlan(
    store,
    {
      version: 1,
      summary,
      createdAt: new Date().toISOString(),
      threshold: req.threshold,
      cells: req.cells ?? null,
      years: req.years ?? null,
      ...(tableTypes ? { tableTypes } : {}),
      ...(tableRenames ? { tableRenames } : {}),
    },
    pages,
  );
}

/**
 * What a bucket's earlier output is checked against: the types of `now` the last check lacked or gave
 * otherwise, and all of them where nothing is known (no such check, or the bucket was left unchecked in it).
 */
function outputTypes(now: TableNumberTypes, last: OutputCheck | undefined): (task: BucketTask) => TableNumberTypes {
  const changed = Object.fromEntries(Object.entries(now).filter(([name, type]) => !last || !Object.hasOwn(last.types, name) || last.types[name] !== type));
  return (task) => (last?.unchecked.has(bucketPrefix(task.bucket)) ? now : changed);
}

function compareBuckets(a: BucketTask, b: BucketTask): number {
  if (a.bucket.cell !== b.bucket.cell) return a.bucket.cell < b.bucket.cell ? -1 : 1;
  return a.bucket.year - b.bucket.year;
}

function bytesOf(t: BucketTask): number {
  return t.inputs.reduce((n, f) => n + f.size, 0);
}

/**
 * The order of a bucket's inputs: earlier outputs first, then the files delivered since, each group by
 * key. Between equal `updated` the later input wins, so a row delivered again since the last compaction
 * beats the version that compaction kept (with plain key order that depended on the file's name: `0001_…`
 * or `Part_…` sort before `compacted_…`), and a bucket capped to its first files keeps its earlier output.
 */
function inputOrder(a: { key: string }, b: { key: string }): number {
  const earlier = (k: string) => (isOutputKey(k) ? 0 : 1);
  return earlier(a.key) - earlier(b.key) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

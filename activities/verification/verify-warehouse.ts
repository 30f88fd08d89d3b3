/**
 * `verify`: checks a warehouse and its catalog against the contract and reports every violation, naming
 * its object. Read-only: it never writes the warehouse or the catalog (a missing catalog.db is reported,
 * not created). Used by the `verify` command and by the tests after every scenario.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeTable, type ColumnStats, type DescribedTable } from '../catalog/describe-table';
import { openCatalogBackend } from '../catalog/open-catalog';
import { CatalogAbsentError, CatalogBusyError, CatalogCorruptError, WarehouseMismatchError } from '../catalog/catalog-backend';
import { checkedTableSchema } from '../catalog/rebuild-catalog';
import { openDuckSession, type DuckSession } from '../compaction/duckdb-session';
import { openWarehouseStore } from '../storage/open-store';
import type { WarehouseStore } from '../storage/warehouse-store';
import { DEFAULT_CATALOG_NAME, DEFAULT_NAMESPACE, DEFAULT_TABLE, hasGlobCharacter, normalizeLocation, parseBucketSelection, type BucketRef, type BucketSelection } from '../../workflows/contract';
import { refuseGlobScratch } from '../compaction/worker-scratch';
import { parseDataFileKey, UNADDRESSABLE_KEY_REASON } from '../storage/warehouse-layout';
import { warehouseKeyOf } from '../catalog/catalog-locations';
import { checkSchemaFit, compareCatalogWithFiles, entriesInSelection } from './catalog-checks';
import { checkColumnMetrics, checkDuplicateIds, checkGeoMetadata, checkNullIds, checkPartitionValues, checkSortOrder, findUndecodable, readFooters, type LocalDataFile } from './parquet-checks';
import { currentSchema, defaultSpec } from '../catalog/table-metadata';
import { NAME_MAPPING_PROPERTY, type IcebergSchema, type PartitionField, type PartitionSpec } from '../catalog/iceberg-schema';
import { ViolationKinds, type VerifyReport, type Violation } from './report';
import { groupByBucket, listPhysicalDataFiles, type PhysicalDataFile } from './warehouse-files';
import { firstLine } from '../error-text';

export { ViolationKinds, type VerifyReport, type VerifyStats, type Violation, type ViolationKind } from './report';

export interface VerifyOptions {
  warehouse: string;
  catalog: string;
  namespace?: string;
  table?: string;
  catalogName?: string;
  /**
   * Only these buckets (absent: all): their files are checked, and the catalog's entries of them. The
   * table-wide checks (the catalog readable, one snapshot, entries outside the warehouse) still apply.
   */
  cells?: string[];
  years?: number[];
  /** DuckDB memory limit; verify reads one column at a time, so little is needed. Default 256 MB. */
  memoryLimitMb?: number;
  /** Where remote files are downloaded and DuckDB spills (in a fresh subdirectory, removed afterwards). Default: the OS temp dir. */
  scratchDir?: string;
  /** Bytes of files downloaded at a time (whole buckets); default VERIFY_BATCH_BYTES. */
  batchBytes?: number;
  /** Files checked at a time (whole buckets); default VERIFY_BATCH_FILES. */
  batchFiles?: number;
}

export async function verifyWarehouse(opts: VerifyOptions): Promise<VerifyReport> {
  const started = Date.now();
  const warehouse = normalizeLocation(opts.warehouse);
  const catalog = normalizeLocation(opts.catalog);
  const namespace = opts.namespace ?? DEFAULT_NAMESPACE;
  const tableName = opts.table ?? DEFAULT_TABLE;
  const catalogName = opts.catalogName ?? DEFAULT_CATALOG_NAME;
  const label = `${catalog} (${namespace}.${tableName})`;
  // A directory of its own, even inside a caller's scratch dir, so removing it afterwards removes only ours.
  const scratch = path.join(opts.scratchDir ?? os.tmpdir(), `earthcatalog-verify-${process.pid}-${randomUUID().slice(0, 8)}`);

  const selection = parseBucketSelection({ ...(opts.cells && { cells: opts.cells }), ...(opts.years && { years: opts.years }) });
  const selective = selection.cells !== undefined || selection.years !== undefined;

  const store = await openWarehouseStore(warehouse);
  try {
    const violations: Violation[] = [];
    const outsideLayout: string[] = [];
    const files = await listPhysicalDataFiles(
      store,
      selection,
      (key) => violations.push({ kind: ViolationKinds.unreadableFile, object: key, detail: `not compacted or catalogued: ${UNADDRESSABLE_KEY_REASON}` }),
      (key) => outsideLayout.push(key),
    );
    const table = await readCatalog(catalog, store, catalogName, namespace, tableName, label, violations);
    const keyOfPath = warehouseKeyOf(store.root);
    const entries = table && entriesInSelection(table, keyOfPath, selection);

    let rowsByKey: Map<string, number>;
    try {
      await fs.mkdir(scratch, { recursive: true });
      const session = await openDuckSession({ tempDir: path.join(scratch, 'spill'), memoryLimitMb: opts.memoryLimitMb ?? 256, threads: 2 });
      try {
        const stats = table && entries && catalogStats(table, entries, keyOfPath, label);
        const limits = { maxBytes: opts.batchBytes ?? VERIFY_BATCH_BYTES, maxFiles: opts.batchFiles ?? VERIFY_BATCH_FILES };
        rowsByKey = await checkFiles(session, store, files, scratch, limits, violations, stats);
      } finally {
        session.close();
      }
    } finally {
      await fs.rm(scratch, { recursive: true, force: true });
    }
    if (table && entries) violations.push(...compareCatalogWithFiles(table, entries, files, rowsByKey, keyOfPath, label));

    const buckets = groupByBucket(files);
    const unique = dedupe(violations);
    const unmatched = selective ? unmatchedSelection(selection, [...files.map((f) => f.parsed.bucket), ...bucketsOfEntries(entries ?? [], keyOfPath)]) : undefined;
    return {
      ok: unique.length === 0,
      warehouse,
      catalog,
      table: `${namespace}.${tableName}`,
      ...(selective ? { selection } : {}),
      ...(unmatched ? { unmatched } : {}),
      violations: unique,
      ...(outsideLayout.length ? { outsideLayout: outsideLayout.sort() } : {}),
      stats: {
        dataFiles: files.length,
        buckets: buckets.size,
        bucketsWithSeveralFiles: [...buckets.values()].filter((g) => g.length > 1).length,
        compactedFiles: files.filter((f) => f.compacted).length,
        rows: [...rowsByKey.values()].reduce((a, b) => a + b, 0),
        catalogFiles: entries ? entries.length : null,
        catalogRows: entries ? entries.reduce((n, f) => n + f.recordCount, 0) : null,
        snapshotCount: table ? table.snapshotCount : null,
        durationMs: Date.now() - started,
      },
    };
  } finally {
    await store.close();
  }
}

/** The buckets of the catalog entries that name a data file of the warehouse. */
function bucketsOfEntries(entries: DescribedTable['dataFiles'], keyOf: (p: string) => string | undefined): BucketRef[] {
  return entries.flatMap((entry) => {
    const key = keyOf(entry.path);
    const parsed = key === undefined ? undefined : parseDataFileKey(key);
    return parsed ? [parsed.bucket] : [];
  });
}

/**
 * The selected cells and years that no file and no catalog entry has: a mistyped `--cells` would
 * otherwise verify nothing and say OK. Undefined when every one of them matched something.
 */
export function unmatchedSelection(selection: BucketSelection, seen: readonly BucketRef[]): BucketSelection | undefined {
  const cells = selection.cells?.filter((c) => !seen.some((b) => b.cell === c));
  const years = selection.years?.filter((y) => !seen.some((b) => b.year === y));
  const out: BucketSelection = { ...(cells?.length ? { cells } : {}), ...(years?.length ? { years } : {}) };
  return out.cells || out.years ? out : undefined;
}

interface CatalogStatsByKey {
  schema: IcebergSchema;
  /** The table's name mapping (JSON text): a renamed column's files match it through its aliases. */
  nameMapping: string | undefined;
  partitionFields: PartitionField[];
  byKey: Map<string, ColumnStats>;
}

/** The column metrics the catalog records, by warehouse key (undefined when its schema is unreadable). */
function catalogStats(
  table: DescribedTable,
  entries: DescribedTable['dataFiles'],
  keyOf: (p: string) => string | undefined,
  label: string,
): CatalogStatsByKey | undefined {
  let schema: IcebergSchema;
  let spec: PartitionSpec;
  try {
    schema = currentSchema(table.metadata, label);
    spec = defaultSpec(table.metadata, label);
  } catch {
    return undefined; // reported by the catalog checks
  }
  const byKey = new Map<string, ColumnStats>();
  for (const entry of entries) {
    const key = keyOf(entry.path);
    if (key !== undefined && entry.stats) byKey.set(key, entry.stats);
  }
  return { schema, nameMapping: table.metadata.properties?.[NAME_MAPPING_PROPERTY], partitionFields: spec.fields, byKey };
}

/**
 * Bytes of files downloaded at a time (whole buckets, at least one): an S3 warehouse is checked a batch
 * at a time, each removed before the next is fetched, so verify needs local disk for a batch, not for
 * the warehouse. Every check is of one file or one bucket, so batches change no result.
 */
export const VERIFY_BATCH_BYTES = 1024 * 1024 * 1024;

/**
 * Files checked at a time (whole buckets, at least one): a query over thousands of files holds every
 * footer's metadata at once, so a warehouse of small wide files grew verify's memory with its file count
 * (1.15 GB of RSS for 6,000 stac-like files of 20 KB in one batch; 410 MB in batches of this size, 490 MB for 12,000 files).
 */
export const VERIFY_BATCH_FILES = 500;

export interface BatchLimits {
  maxBytes: number;
  maxFiles: number;
}

/** Whole buckets, in the files' order, a batch cut before the bucket that would take it past either limit. */
export function bucketBatches<T extends { bucket: string; size: number }>(files: readonly T[], limits: BatchLimits): T[][] {
  const batches: T[][] = [];
  let batch: T[] = [];
  let bytes = 0;
  for (const bucket of groupByBucket(files).values()) {
    const size = bucket.reduce((n, f) => n + f.size, 0);
    if (batch.length && (bytes + size > limits.maxBytes || batch.length + bucket.length > limits.maxFiles)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(...bucket);
    bytes += size;
  }
  if (batch.length) batches.push(batch);
  return batches;
}

/** The checks that read the files, a batch at a time; returns the row count of every readable file by key. */
async function checkFiles(
  session: DuckSession,
  store: WarehouseStore,
  files: readonly PhysicalDataFile[],
  scratch: string,
  limits: BatchLimits,
  violations: Violation[],
  stats: CatalogStatsByKey | undefined,
): Promise<Map<string, number>> {
  const rows = new Map<string, number>();
  const downloads = path.join(scratch, 'files');
  for (const batch of bucketBatches(files, limits)) {
    try {
      for (const [key, n] of await checkBatch(session, await materializeAll(store, batch, downloads, violations), violations, stats)) rows.set(key, n);
    } finally {
      await fs.rm(downloads, { recursive: true, force: true });
    }
  }
  return rows;
}

/** The checks of files on local disk (whole buckets); their row counts by key. */
async function checkBatch(session: DuckSession, local: LocalDataFile[], violations: Violation[], stats: CatalogStatsByKey | undefined): Promise<Map<string, number>> {
  const footers = await readFooters(session, local);
  violations.push(...footers.violations);
  // A file that cannot be read whole is named once and left out of the row checks, so the rest of its
  // bucket is still checked (its duplicates, say) rather than the bucket failing as a whole.
  const withFooters = local.filter((f) => footers.facts.has(f.key));
  const undecodable = await findUndecodable(session, withFooters);
  violations.push(...undecodable);
  const damaged = new Set(undecodable.map((v) => v.object));
  const readable = withFooters.filter((f) => !damaged.has(f.key));
  for (const f of readable) {
    const facts = footers.facts.get(f.key)!;
    const geo = checkGeoMetadata(f, facts);
    if (geo) violations.push(geo);
    if (!facts.columns.has('id')) violations.push({ kind: ViolationKinds.missingIdColumn, object: f.key, detail: 'the file has no `id` column' });
  }
  const withIds = readable.filter((f) => footers.facts.get(f.key)!.columns.has('id'));
  violations.push(...(await checkDuplicateIds(session, withIds, groupByBucket(withIds))));
  violations.push(...(await checkNullIds(session, withIds)));
  violations.push(...(await checkSortOrder(session, readable.filter((f) => f.compacted), footers.facts)));
  violations.push(...(await checkPartitionValues(session, readable, footers.facts)));
  if (stats) violations.push(...(await checkColumnMetrics(session, readable, footers.facts, stats.schema, (key) => stats.byKey.get(key))));
  if (stats) violations.push(...(await checkSchemaFit(readable, stats.schema, stats.nameMapping, stats.partitionFields)));
  return new Map([...footers.facts].map(([k, v]) => [k, v.rows]));
}

/** The table as its catalog describes it, or undefined after recording why it cannot be read. */
async function readCatalog(
  catalog: string,
  store: WarehouseStore,
  catalogName: string,
  namespace: string,
  tableName: string,
  label: string,
  violations: Violation[],
): Promise<DescribedTable | undefined> {
  let backend;
  try {
    backend = await openCatalogBackend(catalog, store.root, catalogName, { readOnly: true });
  } catch (err) {
    if (err instanceof CatalogAbsentError) {
      violations.push({ kind: ViolationKinds.catalogMissing, object: catalog, detail: err.message });
      return undefined;
    }
    if (!(err instanceof CatalogCorruptError)) throw err;
    violations.push({ kind: ViolationKinds.catalogUnreadable, object: catalog, detail: err.message });
    return undefined;
  }
  try {
    if (!(await backend.findTable(namespace, tableName))) {
      const detail = (await backend.tableWithoutMetadata?.(namespace, tableName))
        ? `the table ${namespace}.${tableName} has no metadata yet (made by create-table, or a first run stopped after creating it): a compaction gives it its first snapshot`
        : `the catalog has no table ${namespace}.${tableName}`;
      violations.push({ kind: ViolationKinds.tableMissing, object: label, detail });
      return undefined;
    }
    // As the compaction's pre-flight does: a --warehouse one folder off (or another warehouse's table)
    // would otherwise report every registered file as missing, which reads as data loss.
    const mismatch = await checkedTableSchema(backend, { warehouse: store.root, catalog, namespace, table: tableName, catalogName }, store.root).then(
      () => undefined,
      (err: unknown) => (err instanceof WarehouseMismatchError ? err : undefined),
    );
    if (mismatch) {
      violations.push({ kind: ViolationKinds.warehouseMismatch, object: label, detail: `${mismatch.message}; check --warehouse (nothing else was compared)` });
      return undefined;
    }
    return await describeTable(backend, namespace, tableName);
  } catch (err) {
    if (err instanceof CatalogBusyError) throw err;
    violations.push({ kind: ViolationKinds.catalogUnreadable, object: label, detail: `cannot read the table: ${firstLine(err)}` });
    return undefined;
  } finally {
    await backend.close();
  }
}

/**
 * Every file as a local path DuckDB reads as itself. A path with a glob character (`part [1].parquet`,
 * a warehouse under `g[1]/`) would be read as a pattern, so it is read through a link of our own naming
 * in the (glob-free) downloads directory; such keys are data too, catalogued though never compacted.
 */
async function materializeAll(store: WarehouseStore, files: readonly PhysicalDataFile[], downloads: string, violations: Violation[]): Promise<LocalDataFile[]> {
  const out: LocalDataFile[] = [];
  for (const f of files) {
    let local: string;
    try {
      local = await store.materialize(f.key, downloads);
    } catch (err) {
      violations.push({ kind: ViolationKinds.unreadableFile, object: f.key, detail: `cannot fetch the file: ${firstLine(err)}` });
      continue;
    }
    if (hasGlobCharacter(local)) {
      // Only now does the scratch directory's name matter (a local warehouse of plain keys never uses it).
      refuseGlobScratch(downloads, 'give verify --scratch-dir (or TMPDIR) without them');
      await fs.mkdir(downloads, { recursive: true });
      const link = path.join(downloads, `link-${out.length}.parquet`);
      await fs.symlink(local, link);
      local = link;
    }
    out.push({ key: f.key, path: local, bucket: f.bucket, compacted: f.compacted });
  }
  return out;
}

function dedupe(violations: readonly Violation[]): Violation[] {
  const seen = new Set<string>();
  return violations.filter((v) => {
    const id = `${v.kind}\0${v.object}\0${v.detail}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/**
 * Rebuilds the Iceberg table from the physical ground truth: every data file now in the warehouse,
 * registered once in exactly one new snapshot. New metadata is written first, then the catalog pointer
 * is swapped with a compare-and-swap, so concurrent readers see the old table or the new one.
 */
import type { CatalogRequest, CatalogResult, UnreadableFile } from '../../workflows/contract';
import type { WarehouseStore, StoredObject } from '../storage/warehouse-store';
import { forEachBounded, isNotFound, StorageError } from '../storage/warehouse-store';
import type { DataFileKey } from '../storage/warehouse-layout';
import { bucketKey, cellValueOf, isSafeKey, parseDataFileKey, UNADDRESSABLE_KEY_REASON, unopenableLocation } from '../storage/warehouse-layout';
import type { IcebergCatalogBackend, TableHandle, TablePointer } from './catalog-backend';
import { CatalogCommitNotAppliedError, CatalogConflictError, CatalogCorruptError, WarehouseMismatchError } from './catalog-backend';
import type { IcebergSchema, PartitionSpec } from './iceberg-schema';
import { NAME_MAPPING_PROPERTY, topLevelField } from './iceberg-schema';
import type { DataFileEntry, PartitionValue } from './manifest-writer';
import { ManifestWriter, newCommitUuid, partitionResultType, writeManifestList, type ManifestFileRecord } from './manifest-writer';
import { ParquetFooterError, readParquetFooter, type FooterColumn, type ParquetFooter } from './parquet-footer';
import { SchemaEvolution } from './schema-evolution';
import { columnMetrics, instantText, metricsModes, timestampRange, type ColumnMetrics } from './column-metrics';
import { currentSnapshot, liveDataFiles } from './describe-table';
import { warehouseKeyOf } from './catalog-locations';
import { removeExpiredMetadata } from './metadata-cleanup';
import { crashPoint } from '../compaction/crash-points';
import { MetadataFileMissingError } from './metadata-file-io';
import type { TableMetadataJson } from './table-metadata';
import {
  currentSchema,
  defaultSpec,
  initialTableMetadata,
  newSnapshotId,
  nextMetadataFileName,
  parseTableMetadata,
  rebuiltTableMetadata,
  serializeTableMetadata,
  REBUILD_SUMMARY_KEY,
} from './table-metadata';

export interface RebuildOptions {
  /** Called after each footer read (done of total data files). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Called with a commit's UUID before any file named with it is written. The activity heartbeats these,
   * so that the attempt after a killed one knows what it may find.
   */
  onCommitUuid?: (commitUuid: string) => void | Promise<void>;
  /** UUIDs of commits that earlier attempts began and may have left files of (a killed worker's). */
  abandonedCommits?: readonly string[];
  /** Footers read at once (default 16). */
  concurrency?: number;
  /**
   * Called just before the commit; a reason given means this attempt must not commit (the run that
   * asked for it has ended), and the commit is not applied.
   */
  commitRefusal?: () => Promise<string | undefined>;
  /**
   * Stops the attempt before its next footer read (a worker's shutdown past its grace): a worker that is
   * going away hands the rebuild back at once instead of being killed mid-way and waited for. Not looked
   * at once every footer is read, as committing then costs less than the retry's redo.
   */
  signal?: AbortSignal;
}

const DEFAULT_CONCURRENCY = 16;
/** Footers read before their entries go to the manifest writer (one manifest's worth). */
const FOOTER_WINDOW = 5_000;
/** Entries of a window registered between two turns of the event loop (0.1–0.2 s of work). */
const YIELD_EVERY = 500;
const EPOCH_YEAR = 1970;

/**
 * One attempt. A CatalogConflictError means another writer moved the pointer meanwhile: the caller
 * retries the whole rebuild (this function never loops).
 */
export async function rebuildCatalog(
  store: WarehouseStore,
  backend: IcebergCatalogBackend,
  req: CatalogRequest,
  opts: RebuildOptions = {},
): Promise<CatalogResult> {
  const nowMs = Date.now();
  const { handle, base, schema, spec, partitionOf } = await loadTable(backend, req, store.root, nowMs);

  const modeOf = metricsModes(base.properties ?? {});
  const unaddressable: UnreadableFile[] = [];
  const files = await listDataFiles(store, unaddressable);
  if (files.length === 0 && handle.pointer) await refuseEmptying(backend, req, base, handle.pointer.metadataLocation, store.root);
  // Only a year partition makes engines prune on the path's year (layoutOf refuses one of another column).
  const byYear = spec.fields.some((f) => f.transform === 'year');
  const byCell = spec.fields.some((f) => f.transform === 'identity');
  const snapshotId = newSnapshotId();
  const sequenceNumber = BigInt((base['last-sequence-number'] ?? 0) + 1);
  const evolution = new SchemaEvolution(schema, base['last-column-id'], base.schemas.map((x) => x['schema-id']), base.properties?.[NAME_MAPPING_PROPERTY], spec.fields);
  let pass: RegisteredFiles | undefined;
  for (let attempt = 1; !pass; attempt++) {
    pass = await registerFiles(store, backend, files, { snapshotId, sequenceNumber, spec, partitionOf, modeOf, byYear, byCell, evolution, metadataDir: handle.metadataDir }, opts);
    // A widened type whose narrower bounds were already written: once more with the wide type from the start.
    if (!pass && attempt >= MAX_REGISTER_PASSES) throw new Error(`the files' column types kept changing during ${attempt} passes of the rebuild; retrying`);
  }
  const { commitUuid, manifestList, manifests, totals, unreadable, misplaced, misfits } = pass;
  const replacedFiles = handle.pointer ? await replacedTableFiles(backend, store, base, handle.pointer.metadataLocation) : undefined;
  const dropped = replacedFiles?.dropped ?? { named: [], total: 0 };
  const gone = replacedFiles ? bucketsGone(replacedFiles.bucketRows, files, unaddressable) : undefined;
  const registeredAgain =
    replacedFiles?.keys && handle.pointer ? await reRegisteredFiles(backend, store, base, handle.pointer.metadataLocation, replacedFiles.keys, files) : [];

  const metadata = rebuiltTableMetadata(base, {
    ...(evolution.changed ? { schema: { schema: evolution.schema(), lastColumnId: evolution.lastColumnId } } : {}),
    snapshotId,
    manifestList,
    totals,
    previousMetadataLocation: handle.pointer?.metadataLocation,
    nowMs,
  });
  const metadataLocation = nextMetadataFileName(handle.metadataDir, handle.pointer?.metadataLocation, commitUuid);
  await backend.writeFile(metadataLocation, Buffer.from(serializeTableMetadata(metadata), 'utf8'));
  crashPoint('before-catalog-commit', req.table);
  try {
    const refusal = await opts.commitRefusal?.();
    if (refusal) throw new CatalogCommitNotAppliedError(`${req.namespace}.${req.table} not committed: ${refusal}`);
    await backend.commit(req.namespace, req.table, metadataLocation, handle.pointer);
  } catch (err) {
    // The pointer was not moved: nothing references what this attempt wrote, and the retry writes its
    // own. (Any other error may hide a commit that landed, so its files stay.)
    if (err instanceof CatalogConflictError || err instanceof CatalogCommitNotAppliedError) {
      await backend.deleteFiles?.([...manifests.map((m) => m.manifest_path), manifestList, metadataLocation]).catch(() => undefined);
    }
    throw err;
  }
  crashPoint('after-catalog-commit', req.table);

  const cleanup = await removeExpiredMetadata({
    backend,
    committed: { metadataLocation, metadata, manifestList, manifests: manifests.map((m) => m.manifest_path) },
    replaced: handle.pointer && { metadataLocation: handle.pointer.metadataLocation, metadata: base },
    abandonedCommits: opts.abandonedCommits,
  });

  // Their snapshots are not in the new table; they stay readable in the old metadata files (whose manifests the cleanup keeps).
  const droppedRefs = handle.pointer ? Object.keys(base.refs ?? {}).filter((name) => name !== 'main').sort() : [];
  // Row-level deletes another engine committed (Trino, Spark merge-on-read): the rebuild registers data files only.
  const deleteFilesDropped = handle.pointer ? Number(currentSnapshot(base, handle.pointer.metadataLocation)?.summary?.['total-delete-files'] ?? 0) : 0;
  return {
    snapshotId,
    metadataLocation,
    dataFiles: totals.dataFiles,
    totalRows: totals.records,
    totalBytes: totals.filesSize,
    unreadable: [...unaddressable, ...unreadable].sort(byKey),
    ...(misplaced.length ? { partitionMismatches: misplaced } : {}),
    ...(evolution.changed ? { schemaEvolved: { schemaId: evolution.schema()['schema-id'], added: evolution.added, widened: evolution.widened } } : {}),
    ...(misfits.length ? { schemaMismatches: misfits } : {}),
    ...(dropped.total ? { droppedRegistrations: dropped.named, droppedRegistrationsTotal: dropped.total } : {}),
    ...(gone?.buckets.length ? { bucketsGone: gone.buckets, bucketsGoneTotal: gone.buckets.length, rowsGone: gone.rows } : {}),
    ...(registeredAgain.length ? { registeredAgain, registeredAgainTotal: registeredAgain.length } : {}),
    createdTable: handle.pointer === undefined && !handle.existedWithoutMetadata,
    metadataFilesDeleted: cleanup.deleted,
    ...(cleanup.note ? { metadataCleanupNote: cleanup.note } : {}),
    ...(cleanup.error ? { metadataCleanupError: cleanup.error } : {}),
    ...(droppedRefs.length ? { droppedRefs } : {}),
    ...(deleteFilesDropped > 0 ? { deleteFilesDropped } : {}),
  };
}

interface RegisterContext {
  snapshotId: string;
  sequenceNumber: bigint;
  spec: PartitionSpec;
  partitionOf: (f: DataFileKey) => PartitionValue[];
  modeOf: ReturnType<typeof metricsModes>;
  byYear: boolean;
  /** The spec has identity(grid_partition) (partitionerFor refuses an identity of another column). */
  byCell: boolean;
  evolution: SchemaEvolution;
  metadataDir: string;
}

interface RegisteredFiles {
  commitUuid: string;
  manifestList: string;
  manifests: ManifestFileRecord[];
  totals: { dataFiles: number; records: number; filesSize: number; partitions: number };
  unreadable: UnreadableFile[];
  misplaced: UnreadableFile[];
  misfits: UnreadableFile[];
}

/** Passes over the files before the rebuild gives up (the second starts from every change the first saw; a third only if files changed meanwhile). */
const MAX_REGISTER_PASSES = 3;

/**
 * Writes the manifests and manifest list of every readable file, fitting the schema to the files as it
 * goes (`ctx.evolution`). Undefined when a type changed after files were written with the old one (a
 * widening after bounds of the narrower type, which Iceberg reads by the current type; a type first
 * taken from files without values): the manifests written are removed, and the next pass starts from
 * the schema every file of this pass asked for.
 */
async function registerFiles(
  store: WarehouseStore,
  backend: IcebergCatalogBackend,
  files: readonly ListedDataFile[],
  ctx: RegisterContext,
  opts: RebuildOptions,
): Promise<RegisteredFiles | undefined> {
  const { evolution } = ctx;
  const unreadable: UnreadableFile[] = [];
  const misplaced: UnreadableFile[] = [];
  const misfits: UnreadableFile[] = [];
  // A pass of its own: the manifests of an abandoned pass are never overwritten, only removed.
  const commitUuid = newCommitUuid();
  await opts.onCommitUuid?.(commitUuid);
  const write = (uri: string, bytes: Buffer) => backend.writeFile(uri, bytes);
  const snapshotId = BigInt(ctx.snapshotId);
  const manifestWriter = new ManifestWriter({ schema: evolution.schema(), spec: ctx.spec, snapshotId, sequenceNumber: ctx.sequenceNumber, metadataDir: ctx.metadataDir, commitUuid, write });
  const totals = { dataFiles: 0, records: 0, filesSize: 0, partitions: 0 };
  const partitions = new Set<string>();
  const bounded = new Set<number>();
  // Once the types of files already written change, the rest is only admitted (no manifests), so that the
  // next pass starts from every change at once.
  let abandoned = false;
  let done = 0;
  // A window of footers at a time, added in key order: memory holds one window's column metrics and one
  // manifest's entries, not the whole warehouse's (~20 KB a file for the 28-column table).
  for (let start = 0; start < files.length; start += FOOTER_WINDOW) {
    const window = files.slice(start, start + FOOTER_WINDOW);
    const footers: Array<{ obj: StoredObject; footer: ParquetFooter } | undefined> = new Array(window.length);
    await forEachBounded(window, opts.concurrency ?? DEFAULT_CONCURRENCY, async ({ obj }, i) => {
      opts.signal?.throwIfAborted();
      footers[i] = await readFooter(store, obj, unreadable);
      opts.onProgress?.(++done, files.length);
    });
    for (const [i, read] of footers.entries()) {
      // A window is ~1–2 s of synchronous work (bench/MEASUREMENTS.md, session 46): given back in slices, the
      // heartbeats of this activity and of the buckets this worker runs beside it go out on time.
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise((resolve) => setImmediate(resolve));
      if (!read) continue;
      const { obj, footer } = read;
      const parsed = window[i]!.parsed;
      const admission = evolution.admit(footer.columns);
      if (admission.problem) misfits.push({ key: obj.key, reason: admission.problem });
      abandoned ||= admission.retypedProvisional || admission.widened.some((id) => bounded.has(id));
      if (abandoned) continue;
      const schema = evolution.schema();
      const metrics = columnMetrics(footer.columns, schema, ctx.modeOf, evolution.aliases);
      for (const id of metrics.lowerBounds.keys()) bounded.add(id);
      for (const id of metrics.upperBounds.keys()) bounded.add(id);
      const disagreements = [
        ctx.byYear ? yearDisagreement(footer.columns, metrics, schema, parsed.bucket.year) : undefined,
        ctx.byCell ? cellDisagreement(footer.columns, cellValueOf(parsed.bucket.cell)) : undefined,
      ].filter((d) => d !== undefined);
      if (disagreements.length) misplaced.push({ key: obj.key, reason: disagreements.join('; ') });
      const entry: DataFileEntry = { path: store.uri(obj.key), recordCount: footer.numRows, sizeBytes: obj.size, partition: ctx.partitionOf(parsed), metrics };
      await manifestWriter.add(entry);
      totals.dataFiles++;
      totals.records += entry.recordCount;
      totals.filesSize += entry.sizeBytes;
      partitions.add(JSON.stringify(entry.partition));
    }
  }
  if (abandoned) {
    const written = await manifestWriter.finish();
    await backend.deleteFiles?.(written.map((m) => m.manifest_path));
    return undefined;
  }
  totals.partitions = partitions.size;
  for (const list of [unreadable, misplaced, misfits]) list.sort(byKey);
  const manifests = await manifestWriter.finish();
  const manifestList = await writeManifestList(manifests, { snapshotId, sequenceNumber: ctx.sequenceNumber, metadataDir: ctx.metadataDir, commitUuid, write });
  return { commitUuid, manifestList, manifests, totals, unreadable, misplaced, misfits };
}

/**
 * A data file's footer, or undefined when the file is reported unreadable (pushed onto `unreadable`).
 * A footer that does not parse is read once more if the file was replaced since it was listed (an ingest
 * writing the same name again): the listed size no longer locates the new file's footer.
 */
async function readFooter(
  store: WarehouseStore,
  obj: StoredObject,
  unreadable: UnreadableFile[],
  relisted = false,
): Promise<{ obj: StoredObject; footer: ParquetFooter } | undefined> {
  const unopenable = unopenableLocation(store.uri(obj.key));
  if (unopenable) {
    unreadable.push({ key: obj.key, reason: unopenable });
    return undefined;
  }
  try {
    const footer = await readParquetFooter(store, obj.key, obj.size);
    if (!footer.columns.some((c) => c.name === 'id')) {
      const spelled = footer.columns.find((c) => c.name.toLowerCase() === 'id')?.name;
      const reason = spelled ? `the file has no id column (it has '${spelled}', and readers look columns up by exact name)` : 'the file has no id column';
      unreadable.push({ key: obj.key, reason });
      return undefined;
    }
    return { obj, footer };
  } catch (err) {
    // Bad bytes are the file's problem, and so is a read refused where its stat is not (an object a
    // lifecycle rule archived); anything else (throttled, cut off, denied to the stat as well, expired
    // credentials) fails the attempt, which is retried, rather than leave a readable file out of the table.
    const refused = err instanceof StorageError && err.kind === 'denied';
    if (err instanceof ParquetFooterError || refused) {
      const now = relisted ? obj : await store.stat(obj.key);
      if (now && now.version !== obj.version) return readFooter(store, now, unreadable, true);
      const reason = err instanceof ParquetFooterError ? err.reason : err.message;
      unreadable.push({ key: obj.key, reason: now ? reason : 'the file disappeared during the rebuild' });
    } else if (isNotFound(err)) unreadable.push({ key: obj.key, reason: 'the file disappeared during the rebuild' });
    else throw err;
    return undefined;
  }
}

/**
 * Why a file's `datetime` values do not fit the year of its path, which the file is registered under
 * (year(datetime) = the path's year): rows without a datetime, or outside that UTC year, are skipped by
 * engines that prune on the partition. Told from the footer's metrics; a file without them says nothing.
 */
function yearDisagreement(columns: readonly FooterColumn[], metrics: ColumnMetrics, schema: IcebergSchema, year: number): string | undefined {
  const field = schema.fields.find((f) => f.name === 'datetime');
  if (!field || (field.type !== 'timestamptz' && field.type !== 'timestamp')) return undefined;
  // Readers read a column the file lacks as null, and one that holds no time has no year either.
  const own = columns.find((c) => c.name === field.name);
  if (!own) return `the file has no datetime column, registered under year ${year}`;
  if (own.physicalType !== 'INT96' && !/^(TIMESTAMP|DATE)/.test(own.logicalType ?? '')) {
    return `its datetime column is ${[own.physicalType, own.logicalType].filter(Boolean).join(' ') || 'a group'}, not a timestamp, registered under year ${year}`;
  }
  const nulls = metrics.nullValueCounts.get(field.id) ?? 0n;
  if (nulls > 0n) return `${nulls} row(s) without a datetime, registered under year ${year}`;
  // Bounds in the manifest mean readers read the file's column as the field; the values are taken from
  // the footer, since a nanosecond maximum's bound is rounded up, into the next year at a year's end.
  if (!metrics.lowerBounds.has(field.id) || !metrics.upperBounds.has(field.id)) return undefined;
  const range = timestampRange(own);
  if (!range) return undefined;
  if (range.from.getUTCFullYear() === year && range.to.getUTCFullYear() === year) return undefined;
  return `datetimes from ${instantText(range.from)} to ${instantText(range.to)}, registered under year ${year}`;
}

/**
 * Why a file's `grid_partition` values are not the cell of its path, which the file is registered under:
 * readers read the column where the file has it (the partition's value only where it has none), so rows
 * of another cell or without one are skipped by engines that prune on it. Told from the footer's statistics.
 */
function cellDisagreement(columns: readonly FooterColumn[], cell: string): string | undefined {
  const totals = columns.find((c) => c.name === 'grid_partition' && c.physicalType === 'BYTE_ARRAY')?.totals;
  if (!totals) return undefined;
  if (totals.nullCount) return `${totals.nullCount} row(s) without a grid_partition, registered under cell ${cell}`;
  if (!(totals.min instanceof Uint8Array) || !(totals.max instanceof Uint8Array)) return undefined;
  const [min, max] = [totals.min, totals.max].map((b) => Buffer.from(b).toString('utf8'));
  if (min === cell && max === cell) return undefined;
  return `grid_partition values from ${JSON.stringify(min)} to ${JSON.stringify(max)}, registered under cell ${cell}`;
}

/** Registered files the rebuild names; more are counted only. */
const MAX_DROPPED_NAMED = 1_000;

/**
 * Files the replaced table registered that the rebuild does not, although they may still hold rows:
 * ones another writer registered outside the layout (a subfolder of a bucket, a key the store cannot
 * address, a location outside the warehouse). Files of the layout that are gone (compacted inputs) are
 * not among them. Best effort: a replaced table whose manifests cannot be read says nothing.
 */
async function replacedTableFiles(
  backend: IcebergCatalogBackend,
  store: WarehouseStore,
  base: TableMetadataJson,
  metadataLocation: string,
): Promise<{ dropped: { named: UnreadableFile[]; total: number }; bucketRows: Map<string, number>; keys?: Set<string> }> {
  const current = currentSnapshot(base, metadataLocation);
  const named: UnreadableFile[] = [];
  const bucketRows = new Map<string, number>();
  const keys = new Set<string>();
  let total = 0;
  if (!current) return { dropped: { named, total }, bucketRows, keys };
  const keyOf = warehouseKeyOf(store.root);
  const drop = (file: UnreadableFile) => {
    if (++total <= MAX_DROPPED_NAMED) named.push(file);
  };
  try {
    for await (const f of liveDataFiles(backend, current)) {
      const key = keyOf(f.file_path);
      const parsed = key === undefined ? undefined : parseDataFileKey(key);
      if (key !== undefined && parsed && isSafeKey(key)) {
        keys.add(key);
        const bucket = bucketKey(parsed.bucket);
        bucketRows.set(bucket, (bucketRows.get(bucket) ?? 0) + Number(f.record_count));
        continue;
      }
      if (key === undefined) {
        drop({ key: f.file_path, reason: 'registered outside the warehouse; the rebuilt table registers only its data files' });
      } else if (!isSafeKey(key)) {
        drop({ key: f.file_path, reason: 'registered by another writer, but its key cannot be addressed here (a backslash, or a . or .. segment)' });
      } else if (await store.stat(key)) {
        drop({ key: f.file_path, reason: 'registered by another writer, but not a data file of the layout (grid_partition=<cell>/year=<year>/<name>.parquet)' });
      }
    }
  } catch {
    // The rebuild does not need the replaced table's manifests (damaged, another codec, a stat refused):
    // what could be read is reported, and the rebuild goes on. Only a whole list of its files tells which
    // files another writer took out (reRegisteredFiles).
    return { dropped: { named, total }, bucketRows };
  }
  return { dropped: { named, total }, bucketRows, keys };
}

/**
 * Data files this tool's last rebuild registered that a later commit of another writer took out of the
 * table (a delete through it: pyiceberg's, or an engine's copy-on-write, whose rewritten file lies outside
 * the layout) and that the warehouse still holds: this rebuild registers them again, since the files are
 * the table (SPEC), and the rows deleted through the table come back. Empty when the current snapshot is
 * that rebuild's own, or when it cannot be read.
 */
async function reRegisteredFiles(
  backend: IcebergCatalogBackend,
  store: WarehouseStore,
  base: TableMetadataJson,
  metadataLocation: string,
  currentKeys: ReadonlySet<string>,
  files: readonly ListedDataFile[],
): Promise<string[]> {
  const current = currentSnapshot(base, metadataLocation);
  const ours = (base.snapshots ?? [])
    .filter((s) => s.summary?.[REBUILD_SUMMARY_KEY] === 'true')
    .sort((a, b) => Number(b['sequence-number'] ?? 0) - Number(a['sequence-number'] ?? 0))[0];
  if (!current || !ours || ours['snapshot-id'] === current['snapshot-id']) return [];
  const listed = new Set(files.map((f) => f.obj.key));
  const keyOf = warehouseKeyOf(store.root);
  const again: string[] = [];
  try {
    for await (const f of liveDataFiles(backend, ours)) {
      const key = keyOf(f.file_path);
      if (key !== undefined && listed.has(key) && !currentKeys.has(key)) again.push(key);
    }
  } catch {
    // Its manifests expired or unreadable: nothing to tell.
    return [];
  }
  return again.sort();
}

/**
 * The buckets the replaced table listed files in that the warehouse no longer has any data file in
 * (deleted by hand, or by another tool): their rows leave the table with this rebuild, which the run's
 * summary says. A compaction never empties a bucket, so this is never the run's own doing.
 */
function bucketsGone(
  bucketRows: ReadonlyMap<string, number>,
  files: readonly ListedDataFile[],
  unaddressable: readonly UnreadableFile[],
): { buckets: string[]; rows: number } {
  // Unaddressable data files (listed only as such) still hold their bucket's rows.
  const unlisted = unaddressable.map((u) => parseDataFileKey(u.key)).filter((p): p is DataFileKey => Boolean(p));
  const present = new Set([...files.map((f) => f.parsed), ...unlisted].map((p) => bucketKey(p.bucket)));
  const buckets = [...bucketRows.keys()].filter((b) => !present.has(b)).sort();
  return { buckets, rows: buckets.reduce((n, b) => n + bucketRows.get(b)!, 0) };
}

export interface LoadedTable {
  handle: TableHandle;
  base: TableMetadataJson;
  schema: IcebergSchema;
  spec: PartitionSpec;
  partitionOf: (f: DataFileKey) => PartitionValue[];
}

/** Opens the table (creating it where the backend must) and reads what the rebuild keeps of it (schema, spec, properties). */
async function loadTable(backend: IcebergCatalogBackend, req: CatalogRequest, warehouseRoot: string, nowMs: number): Promise<LoadedTable> {
  const handle = await backend.openTable(req.namespace, req.table);
  const base = handle.pointer ? await readTableMetadata(backend, req, handle.pointer) : initialTableMetadata(handle.defaultLocation, nowMs);
  const layout = layoutOf(backend, req, base);
  if (handle.pointer) await assertSameWarehouse(backend, req, base, handle.pointer.metadataLocation, warehouseRoot);
  return { handle, base, ...layout };
}

/**
 * The pre-flight check before any bucket is touched: a catalog that cannot be read, a table whose
 * schema or spec the rebuild could not keep, or one that registers another warehouse's files fails the
 * run early. Creates nothing.
 */
export async function checkTable(backend: IcebergCatalogBackend, req: CatalogRequest, warehouseRoot: string): Promise<{ tableExists: boolean }> {
  return { tableExists: (await checkedTableSchema(backend, req, warehouseRoot)) !== undefined || (await tableWithoutMetadata(backend, req)) };
}

/** An S3 Tables table made without metadata (tableWithoutMetadata): there, though it has no schema yet. */
export async function tableWithoutMetadata(backend: IcebergCatalogBackend, req: Pick<CatalogRequest, 'namespace' | 'table'>): Promise<boolean> {
  return (await backend.tableWithoutMetadata?.(req.namespace, req.table)) ?? false;
}

/**
 * checkTable's checks of an existing table, and its current schema (undefined when there is no such table),
 * from one read of its metadata. `warehouseEmpty`: the warehouse holds no data file, which the rebuild
 * refuses for a table that registers some (refuseEmptying); a dry run learns it only after its listing.
 */
export async function checkedTableSchema(
  backend: IcebergCatalogBackend,
  req: CatalogRequest,
  warehouseRoot: string,
  opts: { warehouseEmpty?: boolean } = {},
): Promise<TableSchemaRead | undefined> {
  const pointer = await backend.findTable(req.namespace, req.table);
  if (!pointer) return undefined;
  const base = await readTableMetadata(backend, req, pointer);
  layoutOf(backend, req, base);
  await assertSameWarehouse(backend, req, base, pointer.metadataLocation, warehouseRoot);
  if (opts.warehouseEmpty) await refuseEmptying(backend, req, base, pointer.metadataLocation, warehouseRoot);
  return schemaRead(base, pointer.metadataLocation);
}

/** The table's current schema and name mapping (its renamed columns' old names). */
export interface TableSchemaRead {
  schema: IcebergSchema;
  nameMapping?: string;
}

function schemaRead(base: TableMetadataJson, metadataLocation: string): TableSchemaRead {
  const nameMapping = base.properties?.[NAME_MAPPING_PROPERTY];
  return { schema: currentSchema(base, metadataLocation), ...(nameMapping ? { nameMapping } : {}) };
}

/** The table's current schema; undefined when the catalog has no such table (yet). */
export async function tableSchema(backend: IcebergCatalogBackend, req: CatalogRequest): Promise<TableSchemaRead | undefined> {
  const pointer = await backend.findTable(req.namespace, req.table);
  if (!pointer) return undefined;
  return schemaRead(await readTableMetadata(backend, req, pointer), pointer.metadataLocation);
}

/**
 * The rebuild replaces the table's files with the warehouse's: a mistyped --warehouse, or a staging
 * copy run against the production catalog, would replace the production table with other files or
 * none. The data files of the current snapshot tell which warehouse the table is of (a sample of them).
 */
async function assertSameWarehouse(backend: IcebergCatalogBackend, req: CatalogRequest, base: TableMetadataJson, metadataLocation: string, warehouseRoot: string): Promise<void> {
  let samples: string[];
  try {
    samples = await registeredSamples(backend, base, metadataLocation, WAREHOUSE_SAMPLES);
  } catch {
    // A snapshot or manifests that cannot be read do not tell; the rebuild, which does not need them, may go on.
    return;
  }
  // A relative path (as a tool that registered files from its working directory may have written) does not tell either.
  const absolute = samples.filter((p) => /^[a-z][a-z0-9+.-]*:/i.test(p) || p.startsWith('/'));
  const keyOf = warehouseKeyOf(warehouseRoot);
  // One data file of the warehouse is enough: another writer may have registered a few files elsewhere
  // (named when the rebuild drops them). Inside it is not: from a parent of the warehouse (`/data` for
  // `/data/wh`) no key parses as a data file, and the rebuild would replace every file of the table with none.
  if (absolute.length === 0 || absolute.some((p) => parseDataFileKey(keyOf(p) ?? ''))) return;
  const sample = absolute[0]!;
  if (keyOf(sample) !== undefined) {
    throw new WarehouseMismatchError(
      `${req.namespace}.${req.table} in ${backend.description} registers ${sample}, which is not a data file ` +
        `(grid_partition=<cell>/year=<year>/<name>.parquet) directly under the warehouse ${warehouseRoot}; rebuilding it from ` +
        `${warehouseRoot} would drop such files. Is --warehouse a parent or a subfolder of the warehouse? Check --warehouse and --catalog`,
    );
  }
  throw new WarehouseMismatchError(
    `${req.namespace}.${req.table} in ${backend.description} registers files outside the warehouse ${warehouseRoot} (e.g. ${sample}); ` +
      `rebuilding it from ${warehouseRoot} would replace them. Check --warehouse and --catalog; if the warehouse moved, drop the table or give another --table`,
  );
}

/** Registered files the warehouse check looks at: enough that a few files another writer registered elsewhere do not decide it. */
const WAREHOUSE_SAMPLES = 100;

/** Up to `limit` data files the table's current snapshot registers (none: an empty array); throws when its manifests cannot be read. */
async function registeredSamples(backend: IcebergCatalogBackend, base: TableMetadataJson, metadataLocation: string, limit: number): Promise<string[]> {
  const current = currentSnapshot(base, metadataLocation);
  const out: string[] = [];
  for await (const f of current ? liveDataFiles(backend, current) : []) {
    out.push(f.file_path);
    if (out.length >= limit) break;
  }
  return out;
}

/**
 * A warehouse without a single data file, against a table that registers some, is far likelier an
 * unmounted volume or a moved prefix than a warehouse emptied on purpose; rebuilt, the table would be
 * empty for every reader, and the check above has no file of the warehouse to compare.
 */
async function refuseEmptying(backend: IcebergCatalogBackend, req: CatalogRequest, base: TableMetadataJson, metadataLocation: string, warehouseRoot: string): Promise<void> {
  const registered = Number(currentSnapshot(base, metadataLocation)?.summary?.['total-data-files'] ?? Number.NaN);
  // Manifests that cannot be read do not tell; the summary's count, when there is one, still does.
  const some = (await registeredSamples(backend, base, metadataLocation, 1).catch((): string[] => []))[0];
  if (some === undefined && !(registered > 0)) return;
  const count = registered > 0 ? `${registered} data files` : 'data files';
  throw new WarehouseMismatchError(
    `the warehouse ${warehouseRoot} holds no data files, but ${req.namespace}.${req.table} in ${backend.description} registers ${count}` +
      `${some ? ` (e.g. ${some})` : ''}; rebuilt, the table would be empty. Is the warehouse's volume mounted, or did it move? Nothing was changed. ` +
      'To empty the table on purpose, drop it',
  );
}

async function readTableMetadata(backend: IcebergCatalogBackend, req: CatalogRequest, pointer: TablePointer): Promise<TableMetadataJson> {
  let text: string;
  try {
    text = (await backend.readFile(pointer.metadataLocation)).toString('utf8');
  } catch (err) {
    if (!(err instanceof MetadataFileMissingError)) throw err;
    // Another writer may have committed and cleaned this file up since the pointer was read: a retry
    // reads its new one. A pointer still naming a missing file stays so: retried, the run would wait for ever.
    const now = await backend.findTable(req.namespace, req.table);
    if (now?.metadataLocation !== pointer.metadataLocation || (await backend.changedSinceRead?.()) === true) {
      throw new CatalogConflictError(`${req.namespace}.${req.table} in ${backend.description} moved on while its metadata file ${pointer.metadataLocation} was read`);
    }
    throw new CatalogCorruptError(
      `${req.namespace}.${req.table} in ${backend.description}: its current metadata file ${pointer.metadataLocation} does not exist (deleted or moved?). ` +
        'Nothing was changed. Restore the file (a backup, an earlier version of the object); failing that, drop the table so that the next run creates it again, without its snapshot history',
    );
  }
  return unlessCorrupt(backend, req, () => parseTableMetadata(text, pointer.metadataLocation));
}

function layoutOf(backend: IcebergCatalogBackend, req: CatalogRequest, base: TableMetadataJson): Omit<LoadedTable, 'handle' | 'base'> {
  return unlessCorrupt(backend, req, () => {
    const label = `${req.namespace}.${req.table}`;
    const schema = currentSchema(base, label);
    const spec = defaultSpec(base, label);
    return { schema, spec, partitionOf: partitionerFor(spec, schema, label) };
  });
}

function unlessCorrupt<T>(backend: IcebergCatalogBackend, req: CatalogRequest, read: () => T): T {
  try {
    return read();
  } catch (err) {
    // Retrying cannot help: the table's metadata is unreadable or incompatible with the warehouse layout.
    throw new CatalogCorruptError(`${req.namespace}.${req.table} in ${backend.description}: ${(err as Error).message}`);
  }
}

function byKey(a: { key: string }, b: { key: string }): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

interface ListedDataFile {
  obj: StoredObject;
  parsed: DataFileKey;
}

/**
 * Every data file of the layout, sorted by key (the manifests come out the same for the same warehouse);
 * those whose key the store cannot address are pushed onto `unaddressable` instead.
 */
async function listDataFiles(store: WarehouseStore, unaddressable: UnreadableFile[]): Promise<ListedDataFile[]> {
  const out: ListedDataFile[] = [];
  const skipped = (key: string) => {
    if (parseDataFileKey(key)) unaddressable.push({ key, reason: UNADDRESSABLE_KEY_REASON });
  };
  // The control objects (plans, lock) are listed too: no data file's key can match theirs.
  for await (const obj of store.list('', skipped)) {
    const parsed = parseDataFileKey(obj.key);
    if (parsed) out.push({ obj, parsed });
  }
  return out.sort((a, b) => (a.obj.key < b.obj.key ? -1 : a.obj.key > b.obj.key ? 1 : 0));
}

/**
 * Whether the rebuild would find any data file to register. The listing stops at the first, or when
 * `signal` aborts: in a warehouse without any it lists everything.
 */
export async function holdsDataFile(store: WarehouseStore, signal?: AbortSignal): Promise<boolean> {
  for await (const obj of store.list('')) {
    if (parseDataFileKey(obj.key)) return true;
    signal?.throwIfAborted();
  }
  return false;
}

/**
 * Partition values come from the hive path, which is what the pipeline partitioned by: identity of
 * grid_partition is the cell (its folder name decoded as Hive escapes it), and a `year` transform is years since 1970 of the path's year.
 */
function partitionerFor(spec: PartitionSpec, schema: IcebergSchema, label: string): (f: DataFileKey) => PartitionValue[] {
  const getters = spec.fields.map((field): ((f: DataFileKey) => PartitionValue) => {
    const source = topLevelField(schema, field['source-id']);
    const resultType = partitionResultType(field, schema);
    if (field.transform === 'identity' && source?.name === 'grid_partition' && resultType === 'string') return (f) => cellValueOf(f.bucket.cell);
    // The path's year is the year of `datetime` (what the pipeline partitioned by), not of any other column.
    if (field.transform === 'year' && source?.name === 'datetime') return (f) => f.bucket.year - EPOCH_YEAR;
    throw new Error(
      `table ${label}: partition field ${field.name} (${field.transform} of ${source?.name ?? field['source-id']}) cannot be derived from the grid_partition=/year= layout`,
    );
  });
  return (f) => getters.map((g) => g(f));
}

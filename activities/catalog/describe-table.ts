/**
 * Reads a table back through its catalog (metadata → manifest list → manifests), for the `verify`
 * command and the tests: what a reader of the current snapshot would see.
 */
import type { IcebergCatalogBackend } from './catalog-backend';
import { decodeAvroFile } from './avro-file';
import type { PartitionValue } from './manifest-writer';
import type { SnapshotJson, TableMetadataJson } from './table-metadata';
import { parseTableMetadata } from './table-metadata';

/** A column's metrics as the manifest records them: bounds serialized, counts of values (nulls included) and of nulls. */
export interface ColumnStat {
  lower?: Buffer;
  upper?: Buffer;
  values?: bigint;
  nulls?: bigint;
}

/** Column metrics by field id. */
export type ColumnStats = ReadonlyMap<number, ColumnStat>;

export interface DescribedDataFile {
  path: string;
  recordCount: number;
  size: number;
  /** Partition values by partition field name. */
  partition: Record<string, PartitionValue>;
  /** Absent when the entry has no metrics. */
  stats?: ColumnStats;
}

export interface DescribedTable {
  metadataLocation: string;
  metadata: TableMetadataJson;
  snapshotCount: number;
  currentSnapshotId: string | null;
  dataFiles: DescribedDataFile[];
}

export interface ManifestListRow {
  manifest_path: string;
  content?: number;
}

interface ManifestEntryRow {
  status: number;
  data_file: {
    content?: number;
    file_path: string;
    record_count: bigint;
    file_size_in_bytes: bigint;
    partition: Record<string, PartitionValue>;
    value_counts?: Array<{ key: number; value: bigint }> | null;
    null_value_counts?: Array<{ key: number; value: bigint }> | null;
    lower_bounds?: Array<{ key: number; value: Buffer }> | null;
    upper_bounds?: Array<{ key: number; value: Buffer }> | null;
  };
}

const DELETED = 2;

/** Throws when the table does not exist or has no metadata. */
export async function describeTable(backend: IcebergCatalogBackend, namespace: string, table: string): Promise<DescribedTable> {
  const pointer = await backend.findTable(namespace, table);
  if (!pointer) throw new Error(`table ${namespace}.${table} does not exist in ${backend.description}`);
  const metadataLocation = pointer.metadataLocation;
  const metadata = parseTableMetadata((await backend.readFile(metadataLocation)).toString('utf8'), metadataLocation);
  const current = currentSnapshot(metadata, metadataLocation);
  const dataFiles: DescribedDataFile[] = [];
  if (current) {
    for await (const f of liveDataFiles(backend, current)) {
      const stats = statsOf(f);
      dataFiles.push({
        path: f.file_path,
        recordCount: Number(f.record_count),
        size: Number(f.file_size_in_bytes),
        partition: { ...f.partition },
        ...(stats ? { stats } : {}),
      });
    }
  }
  return {
    metadataLocation,
    metadata,
    snapshotCount: (metadata.snapshots ?? []).length,
    currentSnapshotId: current ? current['snapshot-id'] : null,
    dataFiles,
  };
}

/** The metadata's current snapshot, or undefined when it has none yet. */
export function currentSnapshot(metadata: TableMetadataJson, metadataLocation: string): SnapshotJson | undefined {
  const currentId = metadata['current-snapshot-id'];
  if (currentId === undefined || currentId === null || currentId === '-1') return undefined;
  const current = (metadata.snapshots ?? []).find((s) => s['snapshot-id'] === currentId);
  if (!current) throw new Error(`table metadata ${metadataLocation}: current snapshot ${currentId} is not among its snapshots`);
  return current;
}

/** The data files a reader of `snapshot` sees, manifest by manifest (delete files and deleted entries left out). */
export async function* liveDataFiles(backend: IcebergCatalogBackend, snapshot: SnapshotJson): AsyncGenerator<ManifestEntryRow['data_file']> {
  for (const m of await readManifestList(backend, snapshot['manifest-list'])) {
    if ((m.content ?? 0) !== 0) continue;
    const manifest = decodeAvroFile(await backend.readFile(m.manifest_path), m.manifest_path).records as ManifestEntryRow[];
    for (const e of manifest) {
      if (e.status === DELETED || (e.data_file.content ?? 0) !== 0) continue;
      yield e.data_file;
    }
  }
}

export async function readManifestList(backend: IcebergCatalogBackend, listPath: string): Promise<ManifestListRow[]> {
  return decodeAvroFile(await backend.readFile(listPath), listPath).records as ManifestListRow[];
}

function statsOf(f: ManifestEntryRow['data_file']): ColumnStats | undefined {
  const stats = new Map<number, ColumnStat>();
  const add = <K extends keyof ColumnStat>(list: ReadonlyArray<{ key: number; value: ColumnStat[K] }> | null | undefined, name: K) => {
    for (const { key, value } of list ?? []) stats.set(key, { ...stats.get(key), [name]: value });
  };
  add(f.lower_bounds, 'lower');
  add(f.upper_bounds, 'upper');
  add(f.value_counts, 'values');
  add(f.null_value_counts, 'nulls');
  return stats.size ? stats : undefined;
}

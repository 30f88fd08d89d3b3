/**
 * Reads a table back through its catalog (metadata → manifest list → manifests), for the `verify`
 * command and the tests: what a reader of the current snapshot would see.
 */
import type { IcebergCatalogBackend } from './catalog-backend';
import { decodeAvroFile } from './avro-file';
import type { PartitionValue } from './manifest-writer';
import type { SnapshotJson, TableMetadataJson } from './table-metadata';
import { parseTableMetadata } from './table-metadata';

/** Column bounds by field id, as the manifest serializes them. */
export type ColumnBounds = ReadonlyMap<number, { lower?: Buffer; upper?: Buffer }>;

export interface DescribedDataFile {
  path: string;
  recordCount: number;
  size: number;
  /** Partition values by partition field name. */
  partition: Record<string, PartitionValue>;
  /** Absent when the entry has no bounds. */
  bounds?: ColumnBounds;
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
      const bounds = boundsOf(f.lower_bounds, f.upper_bounds);
      dataFiles.push({
        path: f.file_path,
        recordCount: Number(f.record_count),
        size: Number(f.file_size_in_bytes),
        partition: { ...f.partition },
        ...(bounds ? { bounds } : {}),
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

function boundsOf(
  lower: ReadonlyArray<{ key: number; value: Buffer }> | null | undefined,
  upper: ReadonlyArray<{ key: number; value: Buffer }> | null | undefined,
): ColumnBounds | undefined {
  if (!lower?.length && !upper?.length) return undefined;
  const bounds = new Map<number, { lower?: Buffer; upper?: Buffer }>();
  for (const { key, value } of lower ?? []) bounds.set(key, { ...bounds.get(key), lower: value });
  for (const { key, value } of upper ?? []) bounds.set(key, { ...bounds.get(key), upper: value });
  return bounds;
}

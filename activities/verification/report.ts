/** What `verify` reports: every violation names the object (a key, a bucket, the catalog) it is about. */
import type { BucketSelection } from '../../workflows/contract';

export const ViolationKinds = {
  /** A data file in the warehouse that the catalog's current snapshot does not list. */
  notInCatalog: 'not-in-catalog',
  /** A file the catalog lists that is not (or no longer) in the warehouse. */
  missingFromWarehouse: 'missing-from-warehouse',
  /** The catalog lists the same file more than once. */
  duplicateCatalogEntry: 'duplicate-catalog-entry',
  recordCountMismatch: 'record-count-mismatch',
  fileSizeMismatch: 'file-size-mismatch',
  partitionMismatch: 'partition-mismatch',
  /** Footer or data of the file cannot be read. */
  unreadableFile: 'unreadable-file',
  missingIdColumn: 'missing-id-column',
  /** The same id more than once within one bucket (across all of its files). */
  duplicateId: 'duplicate-id',
  /** Rows without an id: they cannot be deduplicated, so the compaction refuses their bucket. */
  nullId: 'null-id',
  /** The files of one bucket cannot be read together (conflicting column types). */
  incompatibleBucket: 'incompatible-bucket',
  /** A compacted file whose rows are not sorted by (platform, datetime). */
  unsorted: 'unsorted',
  /** The catalog's lower/upper bounds of a column do not hold the file's values (engines would skip its rows). */
  columnBoundsMismatch: 'column-bounds-mismatch',
  /** The catalog's null or value count of a column is not the file's (engines would skip its rows for null checks or filters). */
  columnCountsMismatch: 'column-counts-mismatch',
  /** A column readers cannot map to the table's schema: one it lacks, one wider than its type, one of another kind. */
  schemaMismatch: 'schema-mismatch',
  /** The `geo` key is absent, repeated, not a JSON object, or without GeoParquet's version, primary column and its column entry. */
  geoMetadata: 'geo-metadata',
  snapshotCount: 'snapshot-count',
  catalogMissing: 'catalog-missing',
  catalogUnreadable: 'catalog-unreadable',
  tableMissing: 'table-missing',
  /** The table's files are under another location than --warehouse (a mistyped path, another warehouse's table). */
  warehouseMismatch: 'warehouse-mismatch',
} as const;

export type ViolationKind = (typeof ViolationKinds)[keyof typeof ViolationKinds];

export interface Violation {
  kind: ViolationKind;
  /** A warehouse key, a bucket prefix, a catalog location or a catalog file path. */
  object: string;
  detail: string;
}

export interface VerifyStats {
  dataFiles: number;
  buckets: number;
  /** Buckets that hold more than one data file (not compacted, or new ingest since). */
  bucketsWithSeveralFiles: number;
  compactedFiles: number;
  /** Rows of the readable data files (from their footers). */
  rows: number;
  /** Null when the catalog or its table could not be read. Of a selection: its buckets' entries, and entries outside the warehouse. */
  catalogFiles: number | null;
  catalogRows: number | null;
  snapshotCount: number | null;
  durationMs: number;
}

export interface VerifyReport {
  ok: boolean;
  warehouse: string;
  catalog: string;
  table: string;
  /** The buckets checked when not all of them (verify --cells/--years). */
  selection?: BucketSelection;
  /** Selected cells and years without any data file or catalog entry (a mistyped --cells verifies nothing). */
  unmatched?: BucketSelection;
  violations: Violation[];
  /**
   * Keys under bucket folders that look like Parquet but are no data files of the layout (a subfolder, a
   * year that is not four digits): rows no reader of the table sees. Not a violation (the compaction names
   * them and leaves them alone, as verify does), but said, since they are likely misdelivered data.
   */
  outsideLayout?: string[];
  stats: VerifyStats;
}

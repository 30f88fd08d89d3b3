/**
 * What the Iceberg rebuild needs from a catalog: read the current pointer, read/write metadata files,
 * and swap the pointer atomically (compare-and-swap). Implemented by the SQLite catalog (local file or
 * a catalog.db kept in S3) and by Amazon S3 Tables.
 */
export interface TablePointer {
  /** Location of the current metadata JSON (absolute path or s3:// URI). */
  metadataLocation: string;
  /** Opaque token the backend needs for its compare-and-swap (S3 Tables' versionToken). */
  versionToken?: string;
}

export interface TableHandle {
  /** The current pointer, or undefined when the table has no metadata yet (never created, or S3 Tables' empty table). */
  pointer: TablePointer | undefined;
  /** Where new metadata files of this table must be written (a directory URI, no trailing slash). */
  metadataDir: string;
  /** The table location to record in new metadata when the table has none yet. */
  defaultLocation: string;
  /** The table was there before this open, without metadata (tableWithoutMetadata): a first commit creates no table. */
  existedWithoutMetadata?: boolean;
}

export interface IcebergCatalogBackend {
  /** Human-readable description for messages and logs. Never contains credentials. */
  readonly description: string;
  /**
   * The table's current pointer, changing nothing (undefined: no such table, or no metadata yet). For
   * the pre-flight check, `verify` and readers, which must not leave a table behind in S3 Tables.
   */
  findTable(namespace: string, table: string): Promise<TablePointer | undefined>;
  /**
   * Whether a table findTable did not find is there all the same, without metadata yet: S3 Tables' table
   * made by `create-table` (so that its own compaction can be turned off before the first run), or left by
   * a first run stopped right after CreateTable. Absent where a table always has metadata.
   */
  tableWithoutMetadata?(namespace: string, table: string): Promise<boolean>;
  /** Opens the table for a rebuild, creating namespace and an empty table entry where the backend requires it. */
  openTable(namespace: string, table: string): Promise<TableHandle>;
  readFile(uri: string): Promise<Buffer>;
  writeFile(uri: string, bytes: Buffer): Promise<void>;
  /**
   * Deletes metadata files no snapshot references any more. Absent where the catalog service removes
   * unreferenced files itself (S3 Tables).
   */
  deleteFiles?(uris: readonly string[]): Promise<void>;
  /**
   * The files directly in a metadata directory: only to find what an attempt that never committed wrote
   * there (the names carry its commit's UUID). Present wherever deleteFiles is.
   */
  listFiles?(dirUri: string): Promise<string[]>;
  /**
   * Points the table at `newMetadataLocation` if its pointer still equals `expected` (undefined: the
   * table has no metadata yet). Readers see the old table or the new one, never no table.
   * Throws CatalogConflictError when someone else changed the pointer, CatalogCommitNotAppliedError when
   * it failed otherwise but certainly left the pointer as it was.
   */
  commit(namespace: string, table: string, newMetadataLocation: string, expected: TablePointer | undefined): Promise<void>;
  /**
   * Throws a denied StorageError when the table's commit could not be written (a read-only catalog.db, a
   * role without S3 Tables' UpdateTableMetadataLocation); changes nothing.
   */
  assertWritable?(namespace: string, table: string): Promise<void>;
  /**
   * Whether the catalog changed since this backend read it. Present where findTable answers from a copy
   * read earlier (catalog.db downloaded from S3); elsewhere findTable itself reads the catalog as it is now.
   */
  changedSinceRead?(): Promise<boolean>;
  close(): Promise<void>;
}

export class CatalogConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogConflictError';
  }
}

/**
 * The commit failed and the pointer is known not to have moved (a local transaction that rolled back):
 * nothing references what the attempt wrote, so it may be removed. Retryable: a full disk can be freed.
 */
export class CatalogCommitNotAppliedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogCommitNotAppliedError';
  }
}

/** A catalog opened only to be read (verify) does not exist: reading never creates one. */
export class CatalogAbsentError extends Error {
  constructor(readonly catalog: string) {
    super(`the catalog ${catalog} does not exist`);
    this.name = 'CatalogAbsentError';
  }
}

/**
 * Another program held catalog.db locked for longer than the busy timeout (a long transaction of the
 * Python pipeline, say). Nothing is wrong with the catalog: the activity retries, verify stops (exit 1).
 */
export class CatalogBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogBusyError';
  }
}

export class CatalogCorruptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogCorruptError';
  }
}

/** The catalog refuses the request itself (a name against its rules, a malformed request): retrying cannot help. */
export class CatalogRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogRequestError';
  }
}

/** The table registers the files of another warehouse: rebuilding it from this one would replace them. */
export class WarehouseMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WarehouseMismatchError';
  }
}

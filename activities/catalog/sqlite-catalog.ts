/**
 * The SQL catalog in a local SQLite file (catalog.db), with the tables of pyiceberg's SqlCatalog and of
 * the Java JDBC catalog, so the Python pipeline and this tool share one catalog.db.
 *
 * The pointer swap is one compare-and-swap UPDATE: a reader sees the old metadata location or the new
 * one, and the table row is never absent.
 */
import { closeSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import type { Database as SqliteDb } from 'better-sqlite3';
import type { IcebergCatalogBackend, TableHandle, TablePointer } from './catalog-backend';
import { CatalogAbsentError, CatalogBusyError, CatalogCommitNotAppliedError, CatalogConflictError, CatalogCorruptError } from './catalog-backend';
import { StorageError } from '../storage/warehouse-store';
import type { MetadataFileIO } from './metadata-file-io';
import { LocalMetadataFileIO, parentOf, resolveLocation } from './metadata-file-io';

export interface SqliteCatalogOptions {
  /** Local path of catalog.db; created (with the catalog tables) when absent. */
  catalogDbPath: string;
  /** Only rows with this catalog_name belong to us (pyiceberg: the catalog's name). */
  catalogName: string;
  /** New tables live at `<warehouseRootUri>/<namespace>/<table>`. */
  warehouseRootUri: string;
  /** Where metadata files are read and written; local files by default. */
  io?: MetadataFileIO;
  /**
   * Base for relative metadata locations recorded by the Python pipeline. Default: the directory of
   * catalog.db (a catalog.db kept in S3 passes the S3 directory it came from).
   */
  relativeBase?: string;
  /** How long to wait for another writer's lock on catalog.db. */
  busyTimeoutMs?: number;
  /** Names the catalog in messages when catalogDbPath is a local copy of a remote file. */
  displayName?: string;
  /**
   * Opened only to be read (verify): no catalog table is created, so a catalog that lacks them stays as
   * it was and simply has no table. SQLite's own open mode stays read-write (it falls back to read-only
   * by itself): a reader must be able to roll back the journal of a writer that crashed mid-transaction
   * (the Python pipeline, a killed rebuild), and to use a WAL catalog's shared-memory file.
   */
  readOnly?: boolean;
}

const SQLITE_MAGIC = 'SQLite format 3\0';
const TABLE_TYPE = 'TABLE';
const REQUIRED_TABLE_COLUMNS = ['catalog_name', 'table_namespace', 'table_name', 'metadata_location', 'previous_metadata_location'];
const REQUIRED_NAMESPACE_COLUMNS = ['catalog_name', 'namespace', 'property_key', 'property_value'];

// Column types and lengths as pyiceberg 0.12 creates them (the Java JDBC catalog's V1 schema is the same).
const CREATE_TABLES = `
CREATE TABLE IF NOT EXISTS iceberg_tables (
  catalog_name VARCHAR(255) NOT NULL,
  table_namespace VARCHAR(255) NOT NULL,
  table_name VARCHAR(255) NOT NULL,
  metadata_location VARCHAR(1000),
  previous_metadata_location VARCHAR(1000),
  iceberg_type VARCHAR(5),
  PRIMARY KEY (catalog_name, table_namespace, table_name)
);
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
  catalog_name VARCHAR(255) NOT NULL,
  namespace VARCHAR(255) NOT NULL,
  property_key VARCHAR(255) NOT NULL,
  property_value VARCHAR(1000) NOT NULL,
  PRIMARY KEY (catalog_name, namespace, property_key)
);`;

interface TableRow {
  metadata_location: string | null;
  iceberg_type?: string | null;
}

export class SqliteCatalogBackend implements IcebergCatalogBackend {
  readonly description: string;
  private readonly db: SqliteDb;
  private readonly io: MetadataFileIO;
  private readonly relativeBase: string;
  private readonly hasTypeColumn: boolean;
  /** False only for a read-only catalog without an iceberg_tables table: it lists no table. */
  private readonly hasTables: boolean;
  private readonly name: string;

  constructor(private readonly opts: SqliteCatalogOptions) {
    this.name = opts.displayName ?? opts.catalogDbPath;
    this.description = `SQLite catalog ${this.name} (catalog ${opts.catalogName})`;
    this.io = opts.io ?? new LocalMetadataFileIO();
    this.relativeBase = opts.relativeBase ?? path.dirname(path.resolve(opts.catalogDbPath));
    this.db = this.openDatabase();
    try {
      const tableCols = this.prepareSchema();
      this.hasTables = tableCols !== undefined;
      this.hasTypeColumn = tableCols?.includes('iceberg_type') ?? false;
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  /** Opens catalog.db, refusing (and never touching) a file that is not a healthy SQLite database. */
  private openDatabase(): SqliteDb {
    const file = this.opts.catalogDbPath;
    const exists = statOrUndefined(file);
    if (exists) {
      if (!exists.isFile()) throw new CatalogCorruptError(`catalog ${this.name} is not a file`);
      if (exists.size === 0) throw new CatalogCorruptError(`catalog ${this.name} is empty (0 bytes); refusing to use it (restore it or delete it deliberately)`);
      if (readHead(file, SQLITE_MAGIC.length) !== SQLITE_MAGIC) throw new CatalogCorruptError(`catalog ${this.name} is not an SQLite database`);
    } else if (this.opts.readOnly) {
      throw new CatalogAbsentError(this.name);
    } else {
      mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    }
    let db: SqliteDb | undefined;
    try {
      db = new Database(file, { fileMustExist: !!exists });
      db.pragma(`busy_timeout = ${this.busyTimeoutMs()}`);
      const check = this.guard(() => db!.pragma('quick_check', { simple: true }));
      if (check !== 'ok') throw new CatalogCorruptError(`catalog ${this.name} is corrupt: ${String(check)}`);
      return db;
    } catch (err) {
      db?.close();
      if (err instanceof CatalogCorruptError || err instanceof CatalogBusyError) throw err;
      throw new CatalogCorruptError(`catalog ${this.name} cannot be opened: ${(err as Error).message}`);
    }
  }

  /** Creates the catalog tables when absent (unless read-only); returns the columns of iceberg_tables, if it exists. */
  private prepareSchema(): string[] | undefined {
    const tableCols = this.columnsOf('iceberg_tables');
    const nsCols = this.columnsOf('iceberg_namespace_properties');
    if (!tableCols && !nsCols) {
      // Another program's database (a mistyped --catalog) gets no tables of ours, even from a check.
      const others = this.guard(() => this.db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`).all() as Array<{ name: string }>);
      if (others.length) {
        throw new CatalogCorruptError(
          `catalog ${this.name} is an SQLite database of something else (tables ${others.slice(0, 5).map((t) => t.name).join(', ')}${others.length > 5 ? ', …' : ''}), ` +
            'not an Iceberg SQL catalog; it was left as it is',
        );
      }
    }
    if ((!tableCols || !nsCols) && !this.opts.readOnly) {
      this.guard(() => this.db.exec(CREATE_TABLES));
      return this.columnsOf('iceberg_tables');
    }
    for (const [table, cols, required] of [
      ['iceberg_tables', tableCols, REQUIRED_TABLE_COLUMNS],
      ['iceberg_namespace_properties', nsCols, REQUIRED_NAMESPACE_COLUMNS],
    ] as const) {
      if (!cols) continue;
      const missing = required.filter((c) => !cols.includes(c));
      if (missing.length) throw new CatalogCorruptError(`catalog ${this.name}: table ${table} lacks column(s) ${missing.join(', ')}`);
    }
    return tableCols;
  }

  private columnsOf(table: string): string[] | undefined {
    const rows = this.guard(() => this.db.prepare(`SELECT name FROM pragma_table_info(?)`).all(table) as Array<{ name: string }>);
    return rows.length ? rows.map((r) => r.name) : undefined;
  }

  private busyTimeoutMs(): number {
    return this.opts.busyTimeoutMs ?? 10_000;
  }

  /** Maps SQLite's corruption errors to CatalogCorruptError, and a lock held too long to CatalogBusyError, naming the file. */
  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') {
        throw new CatalogCorruptError(`catalog ${this.name} is corrupt: ${(err as Error).message}`);
      }
      if (code.startsWith('SQLITE_BUSY')) {
        throw new CatalogBusyError(`catalog ${this.name} stayed locked by another program for the ${this.busyTimeoutMs() / 1000} s waited (${(err as Error).message}); nothing was changed`);
      }
      throw err;
    }
  }

  private resolve(location: string): string {
    return resolveLocation(location, this.relativeBase);
  }

  private tableRow(namespace: string, table: string): TableRow | undefined {
    if (!this.hasTables) return undefined;
    const cols = this.hasTypeColumn ? 'metadata_location, iceberg_type' : 'metadata_location';
    return this.guard(
      () =>
        this.db
          .prepare(`SELECT ${cols} FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?`)
          .get(this.opts.catalogName, namespace, table) as TableRow | undefined,
    );
  }

  /**
   * The pre-flight's proof that the rebuild's commit can be written: a write begun and rolled back,
   * nothing changed. SQLite opens a file it may not write (another owner, an immutable file, a
   * read-only mount) read-only without a word, and would say so only at the commit, after every
   * bucket had deleted its inputs.
   */
  async assertWritable(): Promise<void> {
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const version = Number(this.db.pragma('user_version', { simple: true }));
        this.db.pragma(`user_version = ${version}`);
      } finally {
        // SQLite rolls back by itself after some errors (IOERR, FULL); a second ROLLBACK would hide them.
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
      }
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (/^SQLITE_(FULL|IOERR)/.test(code)) {
        // Retried: space can be freed while the run waits.
        throw new Error(`catalog ${this.name} cannot be written (${(err as Error).message}): free space on its filesystem (or mend the disk); nothing was changed`);
      }
      if (!/^SQLITE_(READONLY|PERM|CANTOPEN|AUTH)/.test(code)) throw err;
      throw new StorageError(
        `catalog ${this.name} cannot be written (${(err as Error).message}): the run would compact buckets and then fail to ` +
          'point the table at their outputs; nothing was changed. Give the worker write access to it',
        'denied',
      );
    }
  }

  /** Opening a table here creates nothing, so finding it is opening it. */
  async findTable(namespace: string, table: string): Promise<TablePointer | undefined> {
    return (await this.openTable(namespace, table)).pointer;
  }

  async openTable(namespace: string, table: string): Promise<TableHandle> {
    const row = this.tableRow(namespace, table);
    if (row?.iceberg_type && row.iceberg_type !== TABLE_TYPE) {
      throw new Error(`${namespace}.${table} in ${this.description} is a ${row.iceberg_type}, not a table`);
    }
    const defaultLocation = `${this.opts.warehouseRootUri.replace(/\/+$/, '')}/${namespace}/${table}`;
    const raw = row?.metadata_location ?? undefined;
    if (!raw) return { pointer: undefined, metadataDir: `${defaultLocation}/metadata`, defaultLocation };
    const metadataLocation = this.resolve(raw);
    // The raw column value is the compare-and-swap token: a relative location must match as stored.
    return { pointer: { metadataLocation, versionToken: raw }, metadataDir: parentOf(metadataLocation), defaultLocation };
  }

  async readFile(uri: string): Promise<Buffer> {
    return this.io.read(this.resolve(uri));
  }

  async writeFile(uri: string, bytes: Buffer): Promise<void> {
    await this.io.write(this.resolve(uri), bytes);
  }

  async deleteFiles(uris: readonly string[]): Promise<void> {
    await this.io.delete(uris.map((u) => this.resolve(u)));
  }

  listFiles(dirUri: string): Promise<string[]> {
    return this.io.list(this.resolve(dirUri));
  }

  async commit(namespace: string, table: string, newMetadataLocation: string, expected: TablePointer | undefined): Promise<void> {
    const { catalogName } = this.opts;
    const swap = this.db.transaction(() => {
      if (expected) {
        const previous = expected.versionToken ?? expected.metadataLocation;
        const changed = this.db
          .prepare(
            `UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ?
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?`,
          )
          .run(newMetadataLocation, previous, catalogName, namespace, table, previous).changes;
        if (changed !== 1) throw this.conflict(namespace, table, expected.metadataLocation);
        return;
      }
      const hasNamespace = this.db
        .prepare(
          `SELECT 1 FROM iceberg_namespace_properties WHERE catalog_name = ? AND namespace = ?
           UNION ALL SELECT 1 FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? LIMIT 1`,
        )
        .get(catalogName, namespace, catalogName, namespace);
      if (!hasNamespace) {
        // pyiceberg and the JDBC catalog record a namespace without properties as exists=true.
        this.db
          .prepare(`INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value) VALUES (?, ?, 'exists', 'true')`)
          .run(catalogName, namespace);
      }
      const existing = this.tableRow(namespace, table);
      if (existing) {
        // A row without metadata (left by another tool) may be claimed; any other row means someone created the table.
        const claimed = this.db
          .prepare(
            `UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = NULL
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location IS NULL`,
          )
          .run(newMetadataLocation, catalogName, namespace, table).changes;
        if (claimed !== 1) throw this.conflict(namespace, table, undefined);
        return;
      }
      if (this.hasTypeColumn) {
        this.db
          .prepare(
            `INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type)
             VALUES (?, ?, ?, ?, NULL, ?)`,
          )
          .run(catalogName, namespace, table, newMetadataLocation, TABLE_TYPE);
      } else {
        this.db
          .prepare(
            `INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location)
             VALUES (?, ?, ?, ?, NULL)`,
          )
          .run(catalogName, namespace, table, newMetadataLocation);
      }
    });
    try {
      this.guard(() => swap.immediate());
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (!code.startsWith('SQLITE_') && !(err instanceof CatalogBusyError)) throw err;
      // better-sqlite3 rolls the transaction back on any error, COMMIT's own included: the pointer is as it was.
      const was = expected ? `still points at ${expected.metadataLocation}` : 'was not created';
      throw new CatalogCommitNotAppliedError(`cannot commit ${namespace}.${table} in ${this.description} (${(err as Error).message}); the table ${was}`);
    }
  }

  private conflict(namespace: string, table: string, expected: string | undefined): CatalogConflictError {
    const was = expected ? `no longer points at ${expected}` : 'was created by someone else';
    return new CatalogConflictError(`${namespace}.${table} in ${this.description} ${was}; rebuild again`);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

function statOrUndefined(file: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CatalogCorruptError(`catalog ${file} cannot be read: ${(err as Error).message}`);
  }
}

function readHead(file: string, n: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const buf = Buffer.alloc(n);
    const read = readSync(fd, buf, 0, n, 0);
    return buf.subarray(0, read).toString('latin1');
  } catch (err) {
    throw new CatalogCorruptError(`catalog ${file} cannot be read: ${(err as Error).message}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * The storage backends the core's end-to-end suites run on, so one suite covers both: `local` (a
 * directory and a local catalog.db) and `s3` (moto on loopback; the warehouse at
 * s3://ec-backends/<name>-<n>/warehouse, catalog.db kept in S3 next to it). EARTHCATALOG_TEST_BACKENDS
 * (default `local,s3`) chooses which. Assertions list and read through the product's store, so the
 * same checks run on both.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { SampleWarehouseOptions } from '../../client/demo/sample-warehouse';
import { openWarehouseStore } from '../../activities/storage/open-store';
import type { WarehouseStore } from '../../activities/storage/warehouse-store';
import { readOutputRows, type Row } from './bucket-oracle';
import { startMoto, uploadDirectory, type MotoServer } from './moto-server';
import { copyTree, makeFixture, pyicebergScan, withoutControlObjects, type IcebergScan } from './warehouse-fixtures';
import { makeTempDir } from './temp-dirs';

export type BackendName = 'local' | 's3';
const BACKEND_NAMES: readonly BackendName[] = ['local', 's3'];
const S3_BUCKET = 'ec-backends';

/** The backends to run on: EARTHCATALOG_TEST_BACKENDS, comma-separated, default `local,s3`. */
export function testBackends(): WarehouseBackend[] {
  const names = (process.env.EARTHCATALOG_TEST_BACKENDS ?? 'local,s3').split(',').map((n) => n.trim()).filter(Boolean);
  for (const n of names) {
    if (!(BACKEND_NAMES as readonly string[]).includes(n)) throw new Error(`EARTHCATALOG_TEST_BACKENDS: unknown backend ${n} (known: ${BACKEND_NAMES.join(', ')})`);
  }
  return [...new Set(names as BackendName[])].map((n) => new WarehouseBackend(n));
}

export interface TestWarehouse {
  /** A local path or s3:// URI, as workflow input. */
  warehouse: string;
  /** catalog.db: a local path, or an s3:// URI next to the warehouse. */
  catalog: string;
  /** The generated files on disk as they were before any run (for the oracle and for original bytes). */
  localCopy: string;
}

/** Opens a store at `location`, runs `fn`, closes it. */
async function withStore<T>(location: string, fn: (store: WarehouseStore) => Promise<T>): Promise<T> {
  const store = await openWarehouseStore(location);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** The object at a local path or s3:// URI (opened as a store of its directory), or undefined. */
export async function readObject(location: string): Promise<Buffer | undefined> {
  const cut = location.lastIndexOf('/');
  return withStore(location.slice(0, cut), async (s) => (await s.readSmall(location.slice(cut + 1)))?.body);
}

/** Writes (replaces) the object at a local path or s3:// URI. */
export async function writeObject(location: string, bytes: Buffer): Promise<void> {
  const cut = location.lastIndexOf('/');
  await withStore(location.slice(0, cut), (s) => s.writeSmall(location.slice(cut + 1), bytes));
}

/** Deletes `keys` of the warehouse at a local path or s3:// URI. */
export async function deleteObjects(warehouse: string, keys: string[]): Promise<void> {
  await withStore(warehouse, (s) => s.deleteMany(keys));
}

export class WarehouseBackend {
  private moto: MotoServer | undefined;
  private scratch: string | undefined;
  private counter = 0;

  constructor(readonly name: BackendName) {}

  /** For test names. */
  get label(): string {
    return this.name === 's3' ? 's3: S3 warehouse on moto, catalog.db in S3' : 'local: local warehouse, SQLite catalog';
  }

  /**
   * Call before any worker is created: for `s3` this starts moto, which points process.env (the SDK's
   * default chain, read by in-process workers, verify and pyiceberg) at itself.
   */
  async start(): Promise<void> {
    this.scratch = await makeTempDir(`ec-backend-${this.name}`);
    if (this.name === 's3') {
      this.moto = await startMoto();
      await this.moto.createBucket(S3_BUCKET);
    }
  }

  /** What a worker process needs in its environment to reach the warehouse. */
  workerEnv(): Record<string, string> {
    return this.moto ? { ...this.moto.env } : {};
  }

  /** A generated warehouse (makeFixture) on this backend, with a catalog location next to it. */
  async makeWarehouse(name: string, opts: SampleWarehouseOptions = {}): Promise<TestWarehouse> {
    const fx = await makeFixture(name, opts);
    const localCopy = path.join(fx.dir, 'generated');
    await copyTree(fx.warehouse, localCopy);
    if (!this.moto) return { warehouse: fx.warehouse, catalog: fx.catalog, localCopy };
    const prefix = `${name}-${++this.counter}`;
    await uploadDirectory(this.moto.client, S3_BUCKET, `${prefix}/warehouse`, fx.warehouse);
    await fs.rm(fx.warehouse, { recursive: true, force: true });
    return { warehouse: `s3://${S3_BUCKET}/${prefix}/warehouse`, catalog: `s3://${S3_BUCKET}/${prefix}/catalog.db`, localCopy };
  }

  /** Every object key below `prefix` of the warehouse, sorted (plans, metadata and temporary files included). */
  async listKeys(warehouse: string, prefix = ''): Promise<string[]> {
    return withStore(warehouse, async (s) => {
      const keys: string[] = [];
      for await (const o of s.list(prefix)) keys.push(o.key);
      return keys.sort();
    });
  }

  /** As warehouse-fixtures' listFiles: data and temporary files, without plans and Iceberg metadata. */
  async listFiles(warehouse: string): Promise<string[]> {
    return withoutControlObjects(await this.listKeys(warehouse));
  }

  /** The rows of one output file of the warehouse (downloaded first on S3). */
  async readOutputRows(warehouse: string, key: string): Promise<Row[]> {
    return withStore(warehouse, async (s) => readOutputRows(await s.materialize(key, this.scratch!)));
  }

  /** pyiceberg's scan of the table in `catalog` (an S3 catalog.db is downloaded and read with S3 FileIO). */
  async pyicebergScan(catalog: string, extra?: string[]): Promise<IcebergScan> {
    if (!catalog.startsWith('s3://')) return pyicebergScan(catalog, extra);
    const bytes = await readObject(catalog);
    if (!bytes) throw new Error(`no catalog.db at ${catalog}`);
    const copy = path.join(this.scratch!, `catalog-${randomUUID().slice(0, 8)}.db`);
    await fs.writeFile(copy, bytes);
    return pyicebergScan(copy, extra, 'iceberg_read_s3.py');
  }

  async stop(): Promise<void> {
    await this.moto?.stop();
  }
}

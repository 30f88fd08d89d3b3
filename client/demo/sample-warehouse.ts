/**
 * A deterministic sample warehouse of STAC-item GeoParquet part files, as the ingest pipeline writes
 * them: `grid_partition=<cell>/year=<year>/part_<nnnnn>_<hex>.parquet`, several parts per bucket,
 * ids repeated across parts of a bucket with different `updated`, and the same id in neighbouring cells
 * (H3 fan-out). Used by the demo and by tests; tests also use `writePartFile` to craft odd parts.
 */
import { promises as fs, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { timestampTZValue, type DuckDBAppender } from '@duckdb/node-api';
import { openDuckSession, sqlIdent, sqlString, type DuckSession } from '../../activities/compaction/duckdb-session';

/** The 28 columns of `earthcatalog.stac_items`, in table order, with the Parquet types ingest writes. */
export const SAMPLE_COLUMNS = [
  { name: 'id', type: 'VARCHAR' },
  { name: 'grid_partition', type: 'VARCHAR' },
  { name: 'geometry', type: 'BLOB' },
  { name: 'datetime', type: 'TIMESTAMPTZ' },
  { name: 'platform', type: 'VARCHAR' },
  { name: 'percent_valid_pixels', type: 'BIGINT' },
  { name: 'date_dt', type: 'BIGINT' },
  { name: 'proj:code', type: 'VARCHAR' },
  { name: 'assets', type: 'VARCHAR' },
  { name: 'links', type: 'VARCHAR' },
  { name: 'stac_version', type: 'VARCHAR' },
  { name: 'type', type: 'VARCHAR' },
  { name: 'start_datetime', type: 'TIMESTAMPTZ' },
  { name: 'version', type: 'VARCHAR' },
  { name: 'sat:orbit_state', type: 'VARCHAR' },
  { name: 'scene_1_id', type: 'VARCHAR' },
  { name: 'scene_2_id', type: 'VARCHAR' },
  { name: 'scene_1_frame', type: 'VARCHAR' },
  { name: 'scene_2_frame', type: 'VARCHAR' },
  { name: 'mid_datetime', type: 'VARCHAR' },
  { name: 'created', type: 'TIMESTAMPTZ' },
  { name: 'updated', type: 'TIMESTAMPTZ' },
  { name: 'end_datetime', type: 'TIMESTAMPTZ' },
  { name: 'stac_extensions', type: 'VARCHAR' },
  { name: 'collection', type: 'VARCHAR' },
  { name: 'latitude', type: 'DOUBLE' },
  { name: 'longitude', type: 'DOUBLE' },
  { name: 'bbox', type: 'VARCHAR' },
] as const;

export type SampleColumn = (typeof SAMPLE_COLUMNS)[number]['name'];
type ColumnType = (typeof SAMPLE_COLUMNS)[number]['type'];
type ValueOf<T extends ColumnType> = T extends 'VARCHAR'
  ? string
  : T extends 'BLOB'
    ? Uint8Array
    : T extends 'TIMESTAMPTZ'
      ? Date
      : number;

/** One STAC item row; every value may be null. Timestamps are UTC instants (millisecond precision). */
export type SampleRow = {
  [C in (typeof SAMPLE_COLUMNS)[number] as C['name']]: ValueOf<C['type']> | null;
};

export interface PartFileOptions {
  /** Columns left out of this file (schema drift: an older ingest version). */
  omitColumns?: readonly string[];
  /** SQL type overrides, e.g. `{ platform: 'BIGINT' }` to write a conflicting file. */
  columnTypes?: Readonly<Record<string, string>>;
  /** Columns added after the table's, as SQL over the row's columns (nested columns a STAC producer writes, say). */
  extraColumns?: Readonly<Record<string, string>>;
  /** Extra key-value metadata, written after `geo`. */
  kvMetadata?: Readonly<Record<string, string>>;
  /** Write the GeoParquet `geo` key (default true). */
  geo?: boolean;
  /** Reuse an open DuckDB session (the generator writes many files with one). */
  session?: DuckSession;
}

export interface SampleWarehouseOptions {
  cells?: string[];
  years?: number[];
  /** Inclusive range of part files per bucket. */
  partsPerBucket?: [number, number];
  rowsPerPart?: number;
  /** Share of each later part's rows that re-emit an id of an earlier part of the bucket. */
  duplicateFraction?: number;
  /** Share of rows whose id also lives in the previous cell (the same item in two H3 cells). */
  fanOutFraction?: number;
  seed?: number;
  /** Pads `assets` with ~2 KB of text per row, to make buckets heavy in memory. */
  wideColumns?: boolean;
  /** The first part of every other bucket lacks `scene_1_frame` and `scene_2_frame` (older ingest). */
  schemaDrift?: boolean;
}

export interface SampleWarehouseStats {
  buckets: number;
  files: number;
  rows: number;
}

export const DEFAULT_SAMPLE_CELLS = ['81283ffffffffff', '8128bffffffffff', '8129bffffffffff', '812a3ffffffffff', '8144fffffffffff'];
export const DEFAULT_SAMPLE_YEARS = [2019, 2020, 2021, 2022];

const PLATFORMS = ['LC08', 'LC09', 'S1A', 'S1B', 'S2A', 'S2B'];
const DAY_MS = 86_400_000;

/** mulberry32: small, fast and identical on every platform (Math.random is neither seeded nor stable). */
export function createPrng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(rng: () => number, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)]!;
}

function hex(rng: () => number, digits: number): string {
  let out = '';
  while (out.length < digits) out += Math.floor(rng() * 16).toString(16);
  return out;
}

/** ISO-2/OGC WKB of a single-ring polygon, little-endian; the ring is closed if it is not already. */
export function polygonWkb(ring: ReadonlyArray<readonly [number, number]>): Uint8Array {
  const points = [...ring];
  const first = points[0]!;
  const last = points[points.length - 1]!;
  if (first[0] !== last[0] || first[1] !== last[1]) points.push(first);
  const buf = Buffer.alloc(1 + 4 + 4 + 4 + points.length * 16);
  let o = buf.writeUInt8(1, 0);
  o = buf.writeUInt32LE(3, o);
  o = buf.writeUInt32LE(1, o);
  o = buf.writeUInt32LE(points.length, o);
  for (const [x, y] of points) {
    o = buf.writeDoubleLE(x, o);
    o = buf.writeDoubleLE(y, o);
  }
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Bounding box [minx, miny, maxx, maxy] of the polygons' WKB written by `polygonWkb`. */
function wkbBbox(wkbs: readonly Uint8Array[]): [number, number, number, number] | undefined {
  let box: [number, number, number, number] | undefined;
  for (const w of wkbs) {
    const b = Buffer.from(w.buffer, w.byteOffset, w.byteLength);
    if (b.length < 13 || b.readUInt8(0) !== 1 || b.readUInt32LE(1) !== 3) continue;
    const n = b.readUInt32LE(9);
    for (let i = 0; i < n; i++) {
      const x = b.readDoubleLE(13 + i * 16);
      const y = b.readDoubleLE(21 + i * 16);
      box = box
        ? [Math.min(box[0], x), Math.min(box[1], y), Math.max(box[2], x), Math.max(box[3], y)]
        : [x, y, x, y];
    }
  }
  return box;
}

/** The GeoParquet 1.1 `geo` metadata of a part: one WKB polygon column and its bbox. */
export function geoMetadataFor(rows: readonly SampleRow[]): string {
  const box = wkbBbox(rows.map((r) => r.geometry).filter((g): g is Uint8Array => g !== null));
  return JSON.stringify({
    version: '1.1.0',
    primary_column: 'geometry',
    columns: {
      geometry: {
        encoding: 'WKB',
        geometry_types: ['Polygon'],
        ...(box ? { bbox: box } : {}),
      },
    },
  });
}

/** Center of a cell, stable from its name (a stand-in for the H3 cell's centroid). */
function cellCenter(cell: string): [number, number] {
  let h = 2166136261;
  for (const ch of cell) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  const lon = ((h % 36000) / 100) - 180;
  const lat = (((h >>> 16) % 15000) / 100) - 75;
  return [lon, lat];
}

export interface SampleRowSpec {
  id: string;
  cell: string;
  year: number;
  updated: Date | null;
  wide?: boolean;
}

/** A plausible ITS_LIVE image-pair item; everything but the spec's fields comes from `rng`. */
export function makeSampleRow(rng: () => number, spec: SampleRowSpec): SampleRow {
  const [clon, clat] = cellCenter(spec.cell);
  const lon = clon + (rng() - 0.5) * 0.8;
  const lat = clat + (rng() - 0.5) * 0.8;
  const d = 0.1 + rng() * 0.2;
  const ring: [number, number][] = [
    [lon - d, lat - d],
    [lon + d, lat - d],
    [lon + d, lat + d],
    [lon - d, lat + d],
  ];
  const yearStart = Date.UTC(spec.year, 0, 1);
  const yearLen = Date.UTC(spec.year + 1, 0, 1) - yearStart;
  // Whole seconds, so the value survives any timestamp precision unchanged.
  const datetime = new Date(yearStart + Math.floor((rng() * (yearLen - 1)) / 1000) * 1000);
  const dt = 1 + Math.floor(rng() * 30);
  const platform = pick(rng, PLATFORMS);
  const href = `s3://its-live-data/velocity_image_pair/${platform.toLowerCase()}/v02/${spec.id}.nc`;
  const padding = spec.wide ? `,"description":"${hex(rng, 64).repeat(32)}"` : '';
  const created = new Date(Date.UTC(spec.year + 1, 0, 1) + Math.floor(rng() * 30) * DAY_MS);
  return {
    id: spec.id,
    grid_partition: spec.cell,
    geometry: polygonWkb(ring),
    datetime,
    platform,
    percent_valid_pixels: Math.floor(rng() * 101),
    date_dt: dt,
    'proj:code': `EPSG:326${String(1 + Math.floor(rng() * 60)).padStart(2, '0')}`,
    assets: `{"data":{"href":"${href}","type":"application/netcdf"${padding}},"thumbnail":{"href":"${href.replace(/\.nc$/, '.png')}"}}`,
    links: `[{"rel":"self","href":"https://stac.itslive.cloud/collections/itslive-granules/items/${spec.id}"}]`,
    stac_version: '1.1.0',
    type: 'Feature',
    start_datetime: new Date(datetime.getTime() - dt * DAY_MS),
    version: '002',
    'sat:orbit_state': rng() < 0.5 ? 'ascending' : 'descending',
    scene_1_id: `${platform}_${hex(rng, 12)}`,
    scene_2_id: `${platform}_${hex(rng, 12)}`,
    scene_1_frame: String(Math.floor(rng() * 1000)),
    scene_2_frame: String(Math.floor(rng() * 1000)),
    mid_datetime: new Date(datetime.getTime() - (dt * DAY_MS) / 2).toISOString(),
    created,
    updated: spec.updated,
    end_datetime: new Date(datetime.getTime() + dt * DAY_MS),
    stac_extensions: '["https://stac-extensions.github.io/projection/v2.0.0/schema.json"]',
    collection: 'itslive-granules',
    latitude: lat,
    longitude: lon,
    bbox: JSON.stringify([lon - d, lat - d, lon + d, lat + d]),
  };
}

let tableCounter = 0;

function appendValue(app: DuckDBAppender, type: ColumnType, value: SampleRow[SampleColumn]): void {
  if (value === null || value === undefined) return app.appendNull();
  switch (type) {
    case 'VARCHAR':
      return app.appendVarchar(value as string);
    case 'BLOB':
      return app.appendBlob(value as Uint8Array);
    case 'TIMESTAMPTZ':
      return app.appendTimestampTZ(timestampTZValue(BigInt((value as Date).getTime()) * 1000n));
    case 'BIGINT':
      return app.appendBigInt(BigInt(value as number));
    case 'DOUBLE':
      return app.appendDouble(value as number);
  }
}

/**
 * Writes `rows` as one GeoParquet part file (zstd), creating parent directories. Columns keep the
 * table order; `omitColumns`/`columnTypes` make drifted or conflicting files for tests.
 */
/** A DuckDB session for writing samples; its spill directory goes away with it. */
async function openSampleSession(): Promise<DuckSession> {
  const tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'earthcatalog-sample-'));
  const session = await openDuckSession({ tempDir });
  return {
    ...session,
    close() {
      session.close();
      rmSync(tempDir, { recursive: true, force: true });
    },
  };
}

export async function writePartFile(file: string, rows: readonly SampleRow[], opts: PartFileOptions = {}): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const session =
    opts.session ?? (await openSampleSession());
  const table = `sample_rows_${++tableCounter}`;
  try {
    await session.exec(
      `CREATE TABLE ${table} (${SAMPLE_COLUMNS.map((c) => `${sqlIdent(c.name)} ${c.type}`).join(', ')})`,
    );
    const app = await session.conn.createAppender(table);
    try {
      for (const row of rows) {
        for (const c of SAMPLE_COLUMNS) appendValue(app, c.type, row[c.name]);
        app.endRow();
      }
      app.flushSync();
    } finally {
      app.closeSync();
    }
    const omit = new Set(opts.omitColumns ?? []);
    const select = SAMPLE_COLUMNS.filter((c) => !omit.has(c.name))
      .map((c) => {
        const override = opts.columnTypes?.[c.name];
        return override ? `CAST(${sqlIdent(c.name)} AS ${override}) AS ${sqlIdent(c.name)}` : sqlIdent(c.name);
      })
      .concat(Object.entries(opts.extraColumns ?? {}).map(([name, sql]) => `${sql} AS ${sqlIdent(name)}`))
      .join(', ');
    const kv: string[] = [];
    if (opts.geo !== false) kv.push(`geo: ${sqlString(geoMetadataFor(rows))}`);
    for (const [k, v] of Object.entries(opts.kvMetadata ?? {})) kv.push(`${sqlString(k)}: ${sqlString(v)}`);
    const kvClause = kv.length ? `, KV_METADATA {${kv.join(', ')}}` : '';
    await session.exec(
      `COPY (SELECT ${select} FROM ${table}) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd${kvClause})`,
    );
  } finally {
    await session.exec(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
    if (!opts.session) session.close();
  }
}

/** Key of a part file, as ingest names it. */
export function partKey(cell: string, year: number, index: number, rng: () => number): string {
  return `grid_partition=${cell}/year=${year}/part_${String(index).padStart(5, '0')}_${hex(rng, 8)}.parquet`;
}

/**
 * Writes a whole sample warehouse under `root`. The same seed and options give the same rows and
 * file names; existing files are overwritten, other files are left alone.
 */
export async function generateSampleWarehouse(root: string, opts: SampleWarehouseOptions = {}): Promise<SampleWarehouseStats> {
  const cells = opts.cells ?? DEFAULT_SAMPLE_CELLS;
  const years = opts.years ?? DEFAULT_SAMPLE_YEARS;
  const [minParts, maxParts] = opts.partsPerBucket ?? [3, 5];
  const rowsPerPart = opts.rowsPerPart ?? 50;
  const dupFraction = opts.duplicateFraction ?? 0.2;
  const fanOut = opts.fanOutFraction ?? 0.1;
  const rng = createPrng(opts.seed ?? 1);
  const stats: SampleWarehouseStats = { buckets: 0, files: 0, rows: 0 };
  const session = await openSampleSession();
  try {
    let bucketIndex = 0;
    for (const year of years) {
      for (let ci = 0; ci < cells.length; ci++) {
        const cell = cells[ci]!;
        const parts = minParts + Math.floor(rng() * (maxParts - minParts + 1));
        const ingestStart = Date.UTC(year + 1, 1, 1);
        const seen: string[] = [];
        const seenSet = new Set<string>();
        let next = 0;
        const newId = (): string => {
          // Fan-out: the item also intersects the previous cell, so it carries that cell's id sequence.
          const owner = ci > 0 && rng() < fanOut ? ci - 1 : ci;
          return `ITSLIVE_${year}_C${owner}_${String(owner === ci ? next++ : Math.floor(rng() * rowsPerPart)).padStart(6, '0')}`;
        };
        for (let p = 0; p < parts; p++) {
          const rows: SampleRow[] = [];
          const inPart = new Set<string>();
          for (let r = 0; r < rowsPerPart; r++) {
            let id = p > 0 && seen.length && rng() < dupFraction ? pick(rng, seen) : newId();
            while (inPart.has(id)) id = newId();
            inPart.add(id);
            // Later parts are usually newer, but not always: ingest may replay an older version.
            const updatedMs = ingestStart + p * 7 * DAY_MS + Math.floor((rng() - 0.2) * 10 * DAY_MS / 1000) * 1000;
            rows.push(makeSampleRow(rng, { id, cell, year, updated: new Date(updatedMs), wide: opts.wideColumns }));
          }
          for (const id of inPart) {
            if (!seenSet.has(id)) seen.push(id);
            seenSet.add(id);
          }
          const drift = opts.schemaDrift && p === 0 && bucketIndex % 2 === 0;
          await writePartFile(path.join(root, partKey(cell, year, p, rng)), rows, {
            session,
            omitColumns: drift ? ['scene_1_frame', 'scene_2_frame'] : [],
          });
          stats.files++;
          stats.rows += rows.length;
        }
        stats.buckets++;
        bucketIndex++;
      }
    }
  } finally {
    session.close();
  }
  return stats;
}

export interface HeavyPartOptions {
  /** Rows in the file; row i (0-based) has id `heavy_<(firstId + i) % idModulo>`. */
  rows: number;
  firstId: number;
  /** Ids repeat modulo this, so parts overlap (duplicates) when their ranges overlap. */
  idModulo: number;
  /** Uncompressed bytes of the padded `assets` column per row (multiple of 32). */
  stringBytes: number;
  /** Shifts `updated`, so that later parts win or lose deterministically. */
  updatedOffsetSeconds: number;
  /**
   * `datetime` lies in [datetimeFrom, datetimeFrom + datetimeSpanSeconds) (default: all of 2020), fixed
   * per id, so that an update of an id keeps its place in the output order.
   */
  datetimeFrom?: string;
  datetimeSpanSeconds?: number;
  session?: DuckSession;
}

/**
 * A bucket-sized part generated inside DuckDB (no JS rows), for memory and throughput tests: wide
 * string rows whose in-memory size is many times a small memory limit while the file stays small.
 */
export async function writeHeavyPart(file: string, opts: HeavyPartOptions): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const session =
    opts.session ?? (await openSampleSession());
  const wkb = Buffer.from(polygonWkb([[0, 0], [1, 0], [1, 1], [0, 1]])).toString('hex');
  const repeats = Math.max(1, Math.round(opts.stringBytes / 32));
  // DuckDB writes a column chunk as few large pages; readers decompress a page at once, so ~4 MB
  // row groups keep the parts readable under a small memory limit (as pyarrow's 1 MB pages are).
  const rowGroupRows = Math.max(2048, Math.floor((4 * 1024 * 1024) / (repeats * 32)));
  const geo = JSON.stringify({
    version: '1.1.0',
    primary_column: 'geometry',
    columns: { geometry: { encoding: 'WKB', geometry_types: ['Polygon'], bbox: [0, 0, 1, 1] } },
  });
  try {
    await session.exec(
      `COPY (
         SELECT 'heavy_' || ((i + ${opts.firstId}) % ${opts.idModulo}) AS id,
                'heavy' AS grid_partition,
                from_hex('${wkb}') AS geometry,
                TIMESTAMPTZ ${sqlString(opts.datetimeFrom ?? '2020-01-01 00:00:00+00')} + to_seconds((hash(i + ${opts.firstId}) % ${Math.floor(opts.datetimeSpanSeconds ?? 31_536_000)})::BIGINT) AS datetime,
                ['LC08', 'LC09', 'S1A', 'S2A', 'S2B'][1 + ((i + ${opts.firstId}) % 5)::BIGINT] AS platform,
                TIMESTAMPTZ '2021-01-01 00:00:00+00' + to_seconds(${Math.floor(opts.updatedOffsetSeconds)} + (i % 1000)::BIGINT) AS updated,
                repeat(md5((i + ${opts.firstId})::VARCHAR || ${sqlString(file)}), ${repeats}) AS assets
         FROM range(${Math.floor(opts.rows)}) t(i)
       ) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${rowGroupRows},
         KV_METADATA {geo: ${sqlString(geo)}})`,
    );
  } finally {
    if (!opts.session) session.close();
  }
}

/**
 * A heavy bucket of STAC-like rows, generated inside DuckDB (millions of rows, no JS objects): all 28
 * columns of `earthcatalog.stac_items` with ITS_LIVE-like contents (long ids, JSON `assets`/`links`
 * that repeat the id, WKB polygons), about 1.3 KB per row before compression. `writeHeavyPart` of the
 * sample generator has only 7 columns and one repeated string, which compresses far better than real
 * items; the copy floor would then measure little more than string copying.
 *
 * Ids: every part holds the same number of rows; the first 80% of each part are new ids, the rest
 * re-emit an id of this or an earlier part (an update, with a later `updated` most of the time), so the
 * bucket has exactly parts * newPerPart distinct ids. Everything derives from the row index and the
 * seed through DuckDB's hash/md5, so the same options give the same rows on every run.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { SAMPLE_COLUMNS, type SampleColumn } from '../client/demo/sample-warehouse';
import { sqlIdent, sqlString, type DuckSession } from '../activities/compaction/duckdb-session';

export interface StacBucketSpec {
  /** Directory of the bucket (`.../grid_partition=<cell>/year=<year>`). */
  dir: string;
  cell: string;
  year: number;
  /** Total input rows; rounded down to a multiple of `parts`. */
  rows: number;
  parts: number;
  /** Share of each part's rows that re-emit an existing id. */
  duplicateFraction: number;
  seed: number;
  /**
   * Parts past the last (a later week's ingest) hold recent acquisitions, as a weekly ingest into the
   * current year does: new items acquired in the year's last week, updates of items acquired in its
   * last four. Otherwise their items, new or updated, lie anywhere in the year.
   */
  recentIngest?: boolean;
}

export interface StacBucketFiles {
  files: { name: string; size: number }[];
  rowsIn: number;
  /** Distinct ids: the row count a correct compaction writes. */
  rowsOut: number;
  bytesOnDisk: number;
  /** Sum of the column chunks' uncompressed sizes (Parquet pages before compression). */
  uncompressedBytes: number;
}

/** Rows per row group of a part: ~10 MB, so that a reader under a small memory limit decodes one at a time. */
const PART_ROW_GROUP_ROWS = 8192;

const GEO_METADATA = JSON.stringify({
  version: '1.1.0',
  primary_column: 'geometry',
  columns: { geometry: { encoding: 'WKB', geometry_types: ['Polygon'], bbox: [120, 52, 122, 56] } },
});

const STAC_EXTENSIONS =
  '["https://stac-extensions.github.io/projection/v2.0.0/schema.json","https://stac-extensions.github.io/sat/v1.0.0/schema.json"]';
const ITEMS_URL = 'https://stac.itslive.cloud/collections/itslive-granules';
const DATA_URL = 'https://its-live-data.s3.amazonaws.com/velocity_image_pair';

/** A WKB point of two little-endian doubles: 6 random mantissa bytes each, the top bytes fixed (x ≈ 120, y ≈ 52). */
function wkbPoint(hexExpr: string, k: number): string {
  return `substr(${hexExpr}, ${24 * k + 1}, 12) || '5e40' || substr(${hexExpr}, ${24 * k + 13}, 12) || '4a40'`;
}

/** SQL of every column, in table order; `item` provides g (row), p (part), n (id number) and derived fields. */
function columnExpressions(cell: string, seed: number): Record<SampleColumn, string> {
  const h = (what: string, salt: number): string => `hash(${what}, ${seed + salt})`;
  const ring = [0, 1, 2, 3, 0].map((k) => wkbPoint('geo_hex', k)).join(' || ');
  return {
    id: 'id',
    grid_partition: sqlString(cell),
    // Polygon, 1 ring, 5 points (closed).
    geometry: `from_hex('01' || '03000000' || '01000000' || '05000000' || ${ring})`,
    datetime: 'datetime',
    platform: 'platform',
    percent_valid_pixels: `(${h('n', 4)} % 101)::BIGINT`,
    date_dt: 'dt',
    'proj:code': `'EPSG:326' || lpad((1 + n % 60)::VARCHAR, 2, '0')`,
    assets: `'{"data":{"href":"${DATA_URL}/' || lower(platform) || '/v02/' || tile || '/' || id || '.nc","type":"application/netcdf","roles":["data"],"title":"' || id || '"},'
             || '"thumbnail":{"href":"${DATA_URL}/' || lower(platform) || '/v02/' || tile || '/' || id || '.png","type":"image/png","roles":["thumbnail"]},'
             || '"metadata":{"href":"${DATA_URL}/' || lower(platform) || '/v02/' || tile || '/' || id || '.stac.json","type":"application/json","roles":["metadata"],"file:checksum":"1220' || md5(g::VARCHAR) || md5(id) || '"}}'`,
    links: `'[{"rel":"self","href":"${ITEMS_URL}/items/' || id || '","type":"application/geo+json"},'
            || '{"rel":"parent","href":"${ITEMS_URL}","type":"application/json"},'
            || '{"rel":"collection","href":"${ITEMS_URL}","type":"application/json"},'
            || '{"rel":"root","href":"https://stac.itslive.cloud/","type":"application/json"}]'`,
    stac_version: `'1.1.0'`,
    type: `'Feature'`,
    start_datetime: 'datetime - to_days(dt::INTEGER)',
    version: `'002'`,
    'sat:orbit_state': `CASE WHEN ${h('n', 7)} % 2 = 0 THEN 'ascending' ELSE 'descending' END`,
    scene_1_id: `platform || '_L1TP_' || substr(geo_hex, 97, 6) || '_' || strftime(datetime - to_days(dt::INTEGER), '%Y%m%d') || '_20200829_02_T1'`,
    scene_2_id: `platform || '_L1TP_' || substr(geo_hex, 97, 6) || '_' || strftime(datetime + to_days(dt::INTEGER), '%Y%m%d') || '_20200829_02_T1'`,
    scene_1_frame: `(${h('n', 8)} % 1000)::VARCHAR`,
    scene_2_frame: `(${h('n', 9)} % 1000)::VARCHAR`,
    mid_datetime: `strftime(datetime, '%Y-%m-%dT%H:%M:%S.000Z')`,
    created: `TIMESTAMPTZ '2021-01-01 00:00:00+00' + to_seconds((${h('n', 5)} % 2592000)::BIGINT)`,
    // Weekly ingest runs with up to 10 days of jitter: a later part usually, not always, holds the newer row.
    updated: `TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(p * 604800 + (${h('g', 6)} % 864000)::BIGINT)`,
    end_datetime: 'datetime + to_days(dt::INTEGER)',
    stac_extensions: sqlString(STAC_EXTENSIONS),
    collection: `'itslive-granules'`,
    latitude: 'lat',
    longitude: 'lon',
    bbox: `printf('[%.6f,%.6f,%.6f,%.6f]', lon - 0.2, lat - 0.2, lon + 0.2, lat + 0.2)`,
  };
}

function partSql(spec: StacBucketSpec, part: number, rowsPerPart: number, newPerPart: number): string {
  const { seed } = spec;
  const exprs = columnExpressions(spec.cell, seed);
  const select = SAMPLE_COLUMNS.map((c) => `${exprs[c.name]} AS ${sqlIdent(c.name)}`).join(',\n');
  const first = part * rowsPerPart;
  const recent = spec.recentIngest === true && part >= spec.parts;
  const anyTime = (n: string) => `TIMESTAMPTZ '${spec.year}-01-01 00:00:00+00' + to_seconds((hash(${n}, ${seed + 1}) % 31535000)::BIGINT)`;
  // Items first ingested after the bucket's original parts were acquired in the year's last week.
  const datetimeOf = (n: string) =>
    recent
      ? `CASE WHEN ${n} >= ${spec.parts * newPerPart}
              THEN TIMESTAMPTZ '${spec.year}-12-24 00:00:00+00' + to_seconds((hash(${n}, ${seed + 1}) % 604800)::BIGINT)
              ELSE ${anyTime(n)} END`
      : anyTime(n);
  const updates = recent
    ? `, recent AS (
         SELECT n, row_number() OVER (ORDER BY n) - 1 AS k FROM range(${part * newPerPart}) t(n)
         WHERE ${datetimeOf('n')} >= TIMESTAMPTZ '${spec.year}-12-03 00:00:00+00'
       ), picks AS (
         SELECT r.*, CASE WHEN r.j >= ${newPerPart} THEN hash(r.g, ${seed}) % m.c END AS k
         FROM rows r CROSS JOIN (SELECT count(*) AS c FROM recent) m
       ), ids AS (
         SELECT x.g, x.p, CASE WHEN x.j < ${newPerPart} THEN x.p * ${newPerPart} + x.j ELSE u.n END AS n
         FROM picks x LEFT JOIN recent u ON u.k = x.k
       )`
    : `, ids AS (
         SELECT g, p, CASE WHEN j < ${newPerPart} THEN p * ${newPerPart} + j
                           ELSE (hash(g, ${seed}) % ${(part + 1) * newPerPart})::BIGINT END AS n
         FROM rows
       )`;
  return `
    WITH rows AS (
      SELECT g, ${part} AS p, g - ${first} AS j FROM range(${first}, ${first + rowsPerPart}) t(g)
    )${updates}, base AS (
      SELECT g, p, n,
             ['LC08', 'LC09', 'S1A', 'S1B', 'S2A', 'S2B'][1 + n % 6] AS platform,
             ${datetimeOf('n')} AS datetime,
             1 + (hash(n, ${seed + 2}) % 30)::BIGINT AS dt,
             md5(n::VARCHAR || 'a') || md5(n::VARCHAR || 'b') || md5(n::VARCHAR || 'c') || md5(n::VARCHAR || 'd') AS geo_hex,
             52 + (hash(n, ${seed + 3}) % 1000000) / 250000.0 AS lat,
             120 + (hash(n, ${seed + 10}) % 1000000) / 500000.0 AS lon,
             'N' || (40 + n % 40)::VARCHAR || 'W0' || (10 + n % 80)::VARCHAR AS tile
      FROM ids
    ), item AS (
      SELECT *, printf('%s_L1TP_%09d_%s_02_T1_X_%s_L1TP_%06d_%s_02_T1_G0120V02_P%03d',
                       platform, n, strftime(datetime, '%Y%m%d'), platform, (hash(n, ${seed + 11}) % 233999)::BIGINT,
                       strftime(datetime + to_days(dt::INTEGER), '%Y%m%d'), (hash(n, ${seed + 4}) % 101)::BIGINT) AS id
      FROM base
    )
    SELECT ${select} FROM item`;
}

export function partName(part: number): string {
  return `part_${String(part).padStart(5, '0')}_bench.parquet`;
}

/** Writes the bucket's part files (overwriting them) and reports their sizes. */
export async function writeStacBucket(session: DuckSession, spec: StacBucketSpec): Promise<StacBucketFiles> {
  const parts = await writeStacParts(session, spec, 0, spec.parts);
  return {
    files: parts.files,
    rowsIn: parts.rowsPerPart * spec.parts,
    rowsOut: parts.newPerPart * spec.parts,
    bytesOnDisk: parts.files.reduce((s, f) => s + f.size, 0),
    uncompressedBytes: parts.uncompressedBytes,
  };
}

export interface StacParts {
  files: { name: string; size: number }[];
  rowsPerPart: number;
  /** Ids each part adds: parts 0..k-1 hold exactly k * newPerPart distinct ids. */
  newPerPart: number;
  uncompressedBytes: number;
}

/**
 * Writes parts [first, first + count) of the bucket (`spec.parts` sets their size): parts past the
 * last are a later week's ingest, new ids and updates of earlier ones, a week newer.
 */
export async function writeStacParts(session: DuckSession, spec: StacBucketSpec, first: number, count: number): Promise<StacParts> {
  await fs.mkdir(spec.dir, { recursive: true });
  const rowsPerPart = Math.floor(spec.rows / spec.parts);
  const newPerPart = rowsPerPart - Math.floor(rowsPerPart * spec.duplicateFraction);
  const files: { name: string; size: number }[] = [];
  let uncompressedBytes = 0;
  for (let part = first; part < first + count; part++) {
    const name = partName(part);
    const file = path.join(spec.dir, name);
    await session.exec(
      `COPY (${partSql(spec, part, rowsPerPart, newPerPart)}) TO ${sqlString(file)}
         (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${PART_ROW_GROUP_ROWS}, KV_METADATA {geo: ${sqlString(GEO_METADATA)}})`,
    );
    const [meta] = await session.rows(
      `SELECT sum(total_uncompressed_size) AS bytes FROM parquet_metadata(${sqlString(file)})`,
    );
    uncompressedBytes += Number(meta?.bytes ?? 0);
    files.push({ name, size: (await fs.stat(file)).size });
  }
  return { files, rowsPerPart, newPerPart, uncompressedBytes };
}

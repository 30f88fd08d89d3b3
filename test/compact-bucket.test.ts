/**
 * The bucket engine against real Parquet files in a temporary local warehouse: dedup and order
 * (checked against the independent oracle), metadata, every crash state, real SIGKILLs at the crash
 * points, bad inputs, new ingest, and a bucket several times larger than the memory limit.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, promises as fs, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import type { BucketRef, BucketResult, PlannedFile } from '../workflows/contract';
import { bucketPrefix } from '../workflows/contract';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { StorageError, type WarehouseStore } from '../activities/storage/warehouse-store';
import { outputKeyFor, tempNameFor } from '../activities/storage/warehouse-layout';
import { compactBucket, type BucketProgress, type CompactBucketOptions } from '../activities/compaction/compact-bucket';
import { tableRenames as tableRenames_ } from '../activities/compaction/table-types';
import type { IcebergSchema } from '../activities/catalog/iceberg-schema';
import { BadBucketDataError, BucketMemoryError, InputsChangedError, InvalidBucketRequestError, MissingPlannedInputError, OtherPlanOutputError } from '../activities/compaction/bucket-errors';
import { onOneThreadIfOutOfMemory, openDuckSession, sqlIdent, sqlString, type DuckSession } from '../activities/compaction/duckdb-session';
import { largestRowGroup } from '../activities/compaction/input-footprint';
import { DuckSessionPool } from '../activities/compaction/duckdb-pool';
import { inputIdDigest } from '../activities/compaction/id-digests';
import { inputFootprint } from '../activities/compaction/input-footprint';
import { evenRowGroupRows, finalWriteOptions, outputRowGroup } from '../activities/compaction/output-format';
import { passthroughLayout, scatterFanout, scatterLayout, withoutSmallGaps, withoutSmallNeighbours } from '../activities/compaction/range-layout';
import { computeWinners } from '../activities/compaction/rank-winners';
import { readInputSchema, valuelessParts } from '../activities/compaction/input-schema';
import { readThriftStruct, setField, writeThriftStruct } from '../activities/compaction/thrift-compact';
import { parseDuckType, tryParseDuckType } from '../activities/compaction/duckdb-type-text';
import { findGeoConflict, mergeGeoMetadata } from '../activities/compaction/output-metadata';
import { findPassthroughRuns, type PassthroughRun } from '../activities/compaction/presorted-inputs';
import {
  createPrng,
  generateSampleWarehouse,
  makeSampleRow,
  writeHeavyPart,
  writePartFile,
  type HeavyPartOptions,
  type PartFileOptions,
  type SampleRow,
} from '../client/demo/sample-warehouse';
import { assertSameRows, expectedBucketRows, parquetFacts, readOutputRows } from './helpers/bucket-oracle';
import { makeTempDir } from './helpers/temp-dirs';
import { addColumnCopy, makeColumnNullTyped } from './helpers/pyarrow-rewrites';

const CELL = '81283ffffffffff';
const YEAR = 2021;
const BUCKET: BucketRef = { cell: CELL, year: YEAR };
const PREFIX = bucketPrefix(BUCKET);

let session: DuckSession;
let scratchRoot: string;

before(async () => {
  scratchRoot = await makeTempDir('cb-scratch');
  session = await openDuckSession({ tempDir: path.join(scratchRoot, 'writer-spill') });
});

after(async () => {
  session.close();
});

async function newWarehouse(): Promise<{ root: string; store: LocalWarehouseStore }> {
  const root = await makeTempDir('cb-wh');
  return { root, store: new LocalWarehouseStore(root) };
}

type Spec = [id: string, updatedIso: string | null, marker: string];

/** Rows with chosen ids and `updated`; `scene_1_id` carries a marker telling which copy won. */
function rowsOf(specs: Spec[], seed = 7): SampleRow[] {
  const rng = createPrng(seed);
  return specs.map(([id, updated, marker]) => ({
    ...makeSampleRow(rng, { id, cell: CELL, year: YEAR, updated: updated === null ? null : new Date(updated) }),
    scene_1_id: marker,
  }));
}

interface PartDef {
  rows: SampleRow[];
  opts?: PartFileOptions;
  name?: string;
}

async function writeBucket(root: string, parts: PartDef[]): Promise<PlannedFile[]> {
  const planned: PlannedFile[] = [];
  for (let i = 0; i < parts.length; i++) {
    const key = `${PREFIX}/${parts[i]!.name ?? `part_${String(i).padStart(5, '0')}_a${i}.parquet`}`;
    await writePartFile(path.join(root, key), parts[i]!.rows, { session, ...parts[i]!.opts });
    planned.push({ key, size: (await fs.stat(path.join(root, key))).size });
  }
  return planned;
}

/** A one-row part ready to be copied over `input` in place (an ingest rewriting the file under its name). */
async function replacementFor(root: string, input: PlannedFile, row: Spec): Promise<{ target: string; replacement: string }> {
  const replacement = path.join(scratchRoot, `replacement-${path.basename(input.key)}`);
  await writePartFile(replacement, rowsOf([row]), { session });
  return { target: path.join(root, input.key), replacement };
}

async function compact(
  store: WarehouseStore,
  inputs: PlannedFile[],
  extra: Partial<CompactBucketOptions> & { planId?: string } = {},
): Promise<{ result: BucketResult; phases: string[]; presorted: number }> {
  const phases: string[] = [];
  let presorted = 0;
  const result = await compactBucket(
    store,
    { warehouse: store.root, planId: extra.planId ?? 'plan1', bucket: BUCKET, inputs },
    {
      scratchDir: path.join(scratchRoot, 'attempt'),
      memoryLimitMb: 256,
      threads: 1,
      ...extra,
      heartbeat: (p: BucketProgress) => {
        if (phases[phases.length - 1] !== p.phase) phases.push(p.phase);
        presorted = Math.max(presorted, p.presortedInputs ?? 0);
        extra.heartbeat?.(p);
      },
    },
  );
  return { result, phases, presorted };
}

/**
 * A part of deeply nested rows as stac-geoparquet writes assets: a struct of 16 assets, each with lists
 * of band structs (~250 leaves), whose memory in DuckDB is several times the footer-based estimate.
 * Row i has id `id_<i mod ids>` and a later `updated` than every row before it; datetimes follow i, or
 * spread over `span` seconds from `fromSecond` in a scrambled order.
 */
async function writeNestedPart(
  root: string,
  name: string,
  o: { from: number; to: number; ids?: number; datetimes: 'in order' | { fromSecond: number; span: number } },
): Promise<PlannedFile> {
  const asset = (k: number) =>
    `'a${k}': {'href': 'https://example.com/' || i || '/a${k}.tif', 'type': 'image/tiff', 'title': 'Band ${k}', 'roles': ['data', 'reflectance'],
      'eo:bands': [{'name': 'B${k}', 'common_name': 'c${k}', 'center_wavelength': ${k}.5, 'full_width_half_max': 0.1}],
      'raster:bands': [{'nodata': 0, 'data_type': 'uint16', 'scale': 0.0001, 'offset': -0.1, 'spatial_resolution': 10}], 'gsd': 10}`;
  const second = o.datetimes === 'in order' ? 'i' : `${o.datetimes.fromSecond} + (i * 7919) % ${o.datetimes.span}`;
  const key = `${PREFIX}/${name}.parquet`;
  await fs.mkdir(path.join(root, PREFIX), { recursive: true });
  await session.exec(
    `COPY (SELECT 'id_' || ${o.ids ? `(i % ${o.ids})` : 'i'} AS id, 'sentinel-2a' AS platform, TIMESTAMPTZ '2021-01-01' + to_seconds(${second}) AS datetime,
                  TIMESTAMPTZ '2025-01-01' + to_seconds(i) AS updated, {${Array.from({ length: 16 }, (_, k) => asset(k)).join(', ')}} AS assets
           FROM range(${o.from}, ${o.to}) t(i))
     TO ${sqlString(path.join(root, key))} (FORMAT parquet, ROW_GROUP_SIZE 10000)`,
  );
  return { key, size: (await fs.stat(path.join(root, key))).size };
}

/** Rows, distinct ids, rows out of output order, and the third asset's href of each of `ids`, in an output of writeNestedPart rows. */
async function nestedOutputFacts(out: string, ids: readonly string[]): Promise<unknown[]> {
  const [facts] = await session.rows(
    `SELECT count(*) AS n, count(DISTINCT id) AS ids, count(*) FILTER (WHERE k < prev) AS out_of_order,
            ${ids.map((id, i) => `max(href) FILTER (WHERE id = ${sqlString(id)}) AS h${i}`).join(', ')}
     FROM (SELECT id, assets.a3.href AS href, (platform, datetime, id) AS k, lag((platform, datetime, id)) OVER (ORDER BY file_row_number) AS prev
           FROM read_parquet(${sqlString(out)}, hive_partitioning = false, file_row_number = true))`,
  );
  return [Number(facts!.n), Number(facts!.ids), Number(facts!.out_of_order), ...ids.map((_, i) => facts![`h${i}`])];
}

async function keysUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of new LocalWarehouseStore(root).list(`${PREFIX}/`)) out.push(o.key.slice(PREFIX.length + 1));
  return out.sort();
}

/**
 * Hard links keep an input's inode and mtime, so an input linked back after a compaction is the same
 * version, as after a crash (a copy would be a rewrite of it, which the engine leaves in place).
 */
async function linkFiles(fromRoot: string, toRoot: string, keys: string[]): Promise<void> {
  for (const k of keys) {
    await fs.mkdir(path.dirname(path.join(toRoot, k)), { recursive: true });
    await fs.link(path.join(fromRoot, k), path.join(toRoot, k));
  }
}

async function copyFiles(fromRoot: string, toRoot: string, keys: string[]): Promise<void> {
  for (const k of keys) {
    await fs.mkdir(path.dirname(path.join(toRoot, k)), { recursive: true });
    await fs.copyFile(path.join(fromRoot, k), path.join(toRoot, k));
  }
}

/** A passthrough run of input 0 from row group `from`, at rank `start`, whose row groups have `groupRows` rows (and as many bytes). */
function passthroughRun(start: number, from: number, groupRows: number[]): PassthroughRun {
  const groups = groupRows.map((rows) => ({ rows, bytes: rows }));
  return { input: 0, from, to: from + groups.length, start, rows: groupRows.reduce((a, b) => a + b, 0), groups };
}

/** The standard hand-made bucket: winners by updated, NULL losing, ties, and a drifted first part. */
function dedupParts(): PartDef[] {
  return [
    {
      // Older ingest: no scene_2_frame column.
      rows: rowsOf([
        ['A', '2022-01-01T00:00:00Z', 'A-p0'],
        ['B', null, 'B-p0'],
        ['C', '2022-01-05T00:00:00Z', 'C-p0'],
        ['D', '2022-01-03T00:00:00Z', 'D-p0'],
      ]),
      opts: { omitColumns: ['scene_2_frame'] },
    },
    {
      rows: rowsOf(
        [
          ['A', '2022-01-02T00:00:00Z', 'A-p1'],
          ['B', '2020-01-01T00:00:00Z', 'B-p1'],
          ['C', '2022-01-05T00:00:00Z', 'C-p1'],
          ['F', '2022-01-01T00:00:00Z', 'F-p1'],
        ],
        8,
      ),
    },
    {
      rows: rowsOf(
        [
          ['D', null, 'D-p2'],
          ['E', '2022-02-01T00:00:00Z', 'E-p2-first'],
          ['E', '2022-02-01T00:00:00Z', 'E-p2-second'],
          ['A', '2021-12-31T00:00:00Z', 'A-p2'],
        ],
        9,
      ),
    },
  ];
}

/** The ways a bucket is written (write-small-bucket, write-ordered): each must give the same rows. */
const WRITE_PATHS: { name: string; opts: Partial<CompactBucketOptions> }[] = [
  { name: 'one statement (small bucket)', opts: {} },
  { name: 'ranked, one sort', opts: { smallBucketBytes: 0 } },
  // A 1 GB limit (allocated only as used) turns on both threads of the out-of-core write: two sort lanes.
  {
    name: 'ranked, scattered into chunks',
    opts: { smallBucketBytes: 0, sortBudgetBytes: 4_000, threads: 2, memoryLimitMb: 1024, slicePresortedInputs: false },
  },
  // With one-row ranges every input counts as presorted: no scatter, every range read by slices.
  { name: 'ranked, presorted inputs read by slices', opts: { smallBucketBytes: 0, sortBudgetBytes: 4_000, threads: 2, memoryLimitMb: 1024 } },
];

describe('compactBucket', () => {
  for (const writePath of WRITE_PATHS) {
    test(`dedup keeps the newest row (NULL loses, ties to the later file/row), sorts, unions drifted columns: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      const { result, phases, presorted } = await compact(store, inputs, writePath.opts);

      assert.equal(presorted, writePath.name.includes('slices') ? 3 : 0, 'inputs read by slices');
      assert.equal(result.outcome, 'compacted');
      assert.equal(result.outputKey, outputKeyFor(BUCKET, 'plan1'));
      assert.equal(result.filesIn, 3);
      assert.equal(result.rowsIn, 12);
      assert.equal(result.rowsOut, 6);
      assert.equal(result.bytesIn, inputs.reduce((s, i) => s + i.size, 0));
      assert.equal(result.bytesOut, (await fs.stat(path.join(root, result.outputKey))).size);
      assert.equal(result.orphansRemoved, 0);
      assert.deepEqual(phases, ['inspect', 'read', 'dedup', 'write', 'verify', 'publish', 'delete', 'sweep']);
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet'], 'inputs deleted, one output');

      const rows = await readOutputRows(path.join(root, result.outputKey));
      assertSameRows(rows, expected, 'oracle');
      const winner = new Map(rows.map((r) => [r.id, r.scene_1_id]));
      assert.deepEqual(Object.fromEntries(winner), {
        A: 'A-p1',
        B: 'B-p1',
        C: 'C-p1',
        D: 'D-p0',
        E: 'E-p2-second',
        F: 'F-p1',
      });
      for (let i = 1; i < rows.length; i++) {
        const [p, q] = [rows[i - 1]!, rows[i]!];
        const ordered = String(p.platform) < String(q.platform) || (p.platform === q.platform && Number(p.datetime) <= Number(q.datetime));
        assert.ok(ordered, `rows ${i - 1} and ${i} out of (platform, datetime) order`);
      }
      assert.ok(Object.keys(rows[0]!).includes('scene_2_frame'), 'union keeps the drifted column');
      assert.equal(rows.find((r) => r.id === 'D')!.scene_2_frame, null, 'missing column is null for the old part');
      assert.notEqual(rows.find((r) => r.id === 'A')!.scene_2_frame, null);
    });
  }

  for (const writePath of WRITE_PATHS) {
    test(`metadata: first input keys once, geo once with widened bbox, no ARROW:schema or pandas, provenance; zstd; row groups: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const parts = dedupParts();
      const pandas = JSON.stringify({ index_columns: [{ kind: 'range', start: 0, stop: 4, step: 1 }], columns: [{ name: 'x', numpy_type: 'Int64' }] });
      parts[0]!.opts = { kvMetadata: { 'ARROW:schema': 'not-for-the-union', pandas, 'earthcatalog:ingest': "v1 'quoted'" } };
      parts[1]!.opts = { kvMetadata: { 'only-in-second': 'x' } };
      const inputs = await writeBucket(root, parts);
      const versions = await Promise.all(inputs.map(async (i) => (await store.stat(i.key))!.version));
      const inputGeo = await Promise.all(
        inputs.map(async (i) => JSON.parse((await parquetFacts(path.join(root, i.key))).kv.find(([k]) => k === 'geo')![1])),
      );
      const { result } = await compact(store, inputs, writePath.opts);
      const facts = await parquetFacts(path.join(root, result.outputKey));

      assert.deepEqual(
        facts.kv.map(([k]) => k),
        ['geo', 'earthcatalog:ingest', 'earthcatalog:compaction'],
      );
      assert.equal(facts.kv.find(([k]) => k === 'earthcatalog:ingest')![1], "v1 'quoted'");
      const geo = JSON.parse(facts.kv.find(([k]) => k === 'geo')![1]);
      assert.equal(geo.primary_column, 'geometry');
      assert.equal(geo.columns.geometry.encoding, 'WKB');
      const boxes = inputGeo.map((g) => g.columns.geometry.bbox as number[]);
      assert.deepEqual(geo.columns.geometry.bbox, [
        Math.min(...boxes.map((b) => b[0]!)),
        Math.min(...boxes.map((b) => b[1]!)),
        Math.max(...boxes.map((b) => b[2]!)),
        Math.max(...boxes.map((b) => b[3]!)),
      ]);
      const provenance = JSON.parse(facts.kv.find(([k]) => k === 'earthcatalog:compaction')![1]);
      assert.deepEqual(provenance, {
        planId: 'plan1',
        bucket: PREFIX,
        inputs: inputs.map((i) => i.key),
        rows: 6,
        rowsIn: 12,
        bytesIn: result.bytesIn,
        inputVersions: versions,
      });
      assert.deepEqual([...facts.codecs], ['ZSTD']);
      assert.equal(facts.rows, 6);
      assert.ok(facts.rowGroupRows.every((n) => n > 0 && n <= 122_880));

      const cols = await session.rows(
        `DESCRIBE SELECT * FROM read_parquet('${path.join(root, result.outputKey)}', hive_partitioning = false)`,
      );
      assert.equal(cols.find((c) => c.column_name === 'geometry')?.column_type, 'BLOB', 'geometry stays WKB');
    });
  }

  test('metadata: a first input without geo takes geo from a later one, without a bbox', async () => {
    const { root, store } = await newWarehouse();
    const parts = dedupParts();
    parts[0]!.opts = { geo: false, kvMetadata: { writer: 'old-ingest' } };
    const inputs = await writeBucket(root, parts);
    const { result } = await compact(store, inputs);
    const facts = await parquetFacts(path.join(root, result.outputKey));
    assert.deepEqual(
      facts.kv.map(([k]) => k),
      ['writer', 'geo', 'earthcatalog:compaction'],
    );
    const geo = JSON.parse(facts.kv.find(([k]) => k === 'geo')![1]);
    assert.equal(geo.columns.geometry.encoding, 'WKB');
    assert.equal(geo.columns.geometry.bbox, undefined, 'rows of the first input have no declared bounds');
    assert.deepEqual(geo.columns.geometry.geometry_types, []);
  });

  test('geo: one declaration that holds for every row (covering, orientation, bbox across the antimeridian, old and missing geometry types, a column only a later input declares)', () => {
    const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
    const dec = (b: Uint8Array | undefined) => JSON.parse(new TextDecoder().decode(b!)) as { version: string; columns: Record<string, Record<string, unknown>> };
    const covering = { bbox: { xmin: ['bbox', 'xmin'], ymin: ['bbox', 'ymin'], xmax: ['bbox', 'xmax'], ymax: ['bbox', 'ymax'] } };
    const col = (extra: Record<string, unknown>) => ({ encoding: 'WKB', geometry_types: ['Polygon'], bbox: [0, 0, 1, 1], ...extra });
    const geo = (columns: Record<string, unknown>, version = '1.1.0') => enc({ version, primary_column: 'geometry', columns });

    const same = dec(mergeGeoMetadata([geo({ geometry: col({ covering, orientation: 'counterclockwise' }) }), geo({ geometry: col({ covering, orientation: 'counterclockwise', bbox: [2, -1, 3, 0.5] }) })]));
    assert.deepEqual(same.columns.geometry, col({ covering, orientation: 'counterclockwise', bbox: [0, -1, 3, 1] }));

    // The second input has no bbox column (its rows would have no bbox values) and unspecified winding order.
    const mixed = dec(mergeGeoMetadata([geo({ geometry: col({ covering, orientation: 'counterclockwise' }) }), geo({ geometry: col({}) })]));
    assert.deepEqual(mixed.columns.geometry, col({}));
    assert.equal(dec(mergeGeoMetadata([geo({ geometry: col({ covering }) }), undefined])).columns.geometry!.covering, undefined, 'an input without geo declares no covering');

    const antimeridian = dec(mergeGeoMetadata([geo({ geometry: col({ bbox: [175, 0, -175, 1] }) }), geo({ geometry: col({}) })]));
    assert.equal(antimeridian.columns.geometry!.bbox, undefined, 'a min/max union of a box across the antimeridian would exclude its rows');

    const old = dec(mergeGeoMetadata([geo({ geometry: { encoding: 'WKB', geometry_types: 'Polygon' } }, '0.4.0'), geo({ geometry: col({ geometry_types: ['Point'] }) })]));
    assert.deepEqual(old.columns.geometry!.geometry_types, ['Point', 'Polygon']);
    const untyped = dec(mergeGeoMetadata([geo({ geometry: { encoding: 'WKB' } }, '1.0.0'), geo({ geometry: col({ geometry_types: ['Point'] }) })]));
    assert.deepEqual(untyped.columns.geometry!.geometry_types, [], 'unknown types, as GeoParquet spells them');

    // A first input whose geo is not JSON: the output takes the next one (readers refuse a file whose geo they cannot parse).
    const broken = dec(mergeGeoMetadata([new TextEncoder().encode('{not json'), geo({ geometry: col({}), footprint: col({ bbox: [5, 5, 6, 6] }) })]));
    assert.deepEqual(Object.keys(broken.columns), ['geometry', 'footprint'], 'a geometry column only a later input declares is declared');
    assert.equal(broken.columns.footprint!.bbox, undefined, 'the first input declares no bounds of it');

    // What cannot be merged: another CRS, epoch or edges. No geo, EPSG:4326 and the default CRS84 conflict with none.
    const utm = { id: { authority: 'EPSG', code: 32633 }, name: 'WGS 84 / UTM zone 33N' };
    assert.equal(findGeoConflict([geo({ geometry: col({}) }), undefined, geo({ geometry: col({ crs: { id: { authority: 'EPSG', code: 4326 } } }) })]), undefined);
    assert.deepEqual(findGeoConflict([geo({ geometry: col({}) }), undefined, geo({ geometry: col({ crs: utm }) }), geo({ geometry: col({ crs: 'OGC:CRS84' }) })]), {
      column: 'geometry',
      declaration: 'coordinate reference system',
      values: [{ label: 'OGC:CRS84', inputs: [0, 3] }, { label: 'EPSG:32633', inputs: [2] }],
    });
    assert.deepEqual(findGeoConflict([geo({ geometry: col({ crs: utm, epoch: 2015.5 }) }), geo({ geometry: col({ crs: utm, epoch: 2021 }) })])?.values.map((v) => v.label), [
      'EPSG:32633 at epoch 2015.5',
      'EPSG:32633 at epoch 2021',
    ]);
    assert.deepEqual(findGeoConflict([geo({ geometry: col({ edges: 'spherical' }) }), geo({ geometry: col({}) })]), {
      column: 'geometry',
      declaration: 'edges',
      values: [{ label: 'spherical', inputs: [0] }, { label: 'planar', inputs: [1] }],
    });
  });

  test('geo: inputs in different CRSs fail the bucket naming them; nothing is written or deleted', async () => {
    const { root, store } = await newWarehouse();
    const parts = dedupParts();
    const utm = { id: { authority: 'EPSG', code: 32633 }, name: 'WGS 84 / UTM zone 33N' };
    parts[1]!.opts = { ...parts[1]!.opts, geo: false, kvMetadata: { geo: JSON.stringify({ version: '1.1.0', primary_column: 'geometry', columns: { geometry: { encoding: 'WKB', geometry_types: ['Polygon'], crs: utm } } }) } };
    const inputs = await writeBucket(root, parts);
    const before = await fs.readdir(path.join(root, PREFIX));
    await assert.rejects(compact(store, inputs), (err: unknown) => {
      assert.ok(err instanceof BadBucketDataError, `got ${String(err)}`);
      const others = inputs.filter((_, i) => i !== 1).map((i) => i.key);
      assert.equal(
        err.message,
        `the inputs declare different coordinate reference systems for geometry column 'geometry' (OGC:CRS84: ${others.join(', ')}; EPSG:32633: ${inputs[1]!.key}); ` +
          "one file declares one for all its rows, so in one output some rows' coordinates would be read in the wrong system. Rewrite the inputs with one declaration",
      );
      assert.deepEqual([...err.keys].sort(), inputs.map((i) => i.key).sort());
      return true;
    });
    assert.deepEqual(await fs.readdir(path.join(root, PREFIX)), before, 'nothing written or deleted');
  });

  test('deterministic: every write path, including a scatter deeper than one pass, gives identical rows', async () => {
    const opts = { cells: [CELL], years: [YEAR], rowsPerPart: 400, partsPerBucket: [4, 4] as [number, number], duplicateFraction: 0.5, schemaDrift: true, seed: 11 };
    const outputs: { name: string; rows: Awaited<ReturnType<typeof readOutputRows>>; result: BucketResult; chunks: number }[] = [];
    let expected: Awaited<ReturnType<typeof expectedBucketRows>> | undefined;
    // Budgets for this bucket of ~1,200 winners of ~1 KB (ranges hold half the sort budget).
    const paths = [
      WRITE_PATHS[0]!,
      WRITE_PATHS[1]!,
      { name: 'ranked, scattered into chunks', opts: { smallBucketBytes: 0, sortBudgetBytes: 300_000, slicePresortedInputs: false } },
      // A few more ranges than one pass writes: some ranges sorted at once, the rest scattered again.
      { name: 'ranked, scattered once and partly twice', opts: { smallBucketBytes: 0, sortBudgetBytes: 300_000, maxScatterFanout: 4, threads: 2, memoryLimitMb: 1024, slicePresortedInputs: false } },
      // ~20 rows per range, 4 ranges per pass: three levels of scatter.
      { name: 'ranked, scattered three deep', opts: { smallBucketBytes: 0, sortBudgetBytes: 40_000, threads: 2, maxScatterFanout: 4, slicePresortedInputs: false } },
    ];
    for (const writePath of paths) {
      const { root, store } = await newWarehouse();
      await generateSampleWarehouse(root, opts);
      const inputs: PlannedFile[] = [];
      for await (const o of store.list(`${PREFIX}/`)) inputs.push(o);
      inputs.sort((x, y) => x.key.localeCompare(y.key));
      expected ??= await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      let chunks = 0;
      const { result } = await compact(store, inputs, {
        ...writePath.opts,
        heartbeat: (p) => void (chunks = Math.max(chunks, p.chunks ?? 0)),
      });
      outputs.push({ name: writePath.name, rows: await readOutputRows(path.join(root, result.outputKey)), result, chunks });
    }
    assert.equal(outputs[0]!.chunks, 0);
    assert.ok(outputs[2]!.chunks > 1, `the small sort budget forces several chunks (${outputs[2]!.chunks})`);
    assert.equal(outputs[1]!.chunks, 0);
    // Between f and f² − f + 1 chunks (here 5..13), scatterLayout sorts at least one range after the first
    // pass and scatters the rest again.
    assert.ok(outputs[3]!.chunks > 4 && outputs[3]!.chunks <= 13, `single ranges and ranges scattered again (${outputs[3]!.chunks} chunks)`);
    assert.ok(outputs[4]!.chunks > 16, `more chunks than two passes of 4 ranges (${outputs[4]!.chunks})`);
    for (const o of outputs) {
      assertSameRows(o.rows, expected!, o.name);
      assert.equal(o.result.rowsOut, expected!.length, o.name);
    }
  });

  test("spill files removed while a bucket is written (the scratch directory cleaned under it) fail the attempt saying so, and nothing is published or deleted", async () => {
    const { root, store } = await newWarehouse();
    await generateSampleWarehouse(root, { cells: [CELL], years: [YEAR], rowsPerPart: 400, partsPerBucket: [4, 4], duplicateFraction: 0.5, seed: 11 });
    const inputs: PlannedFile[] = [];
    for await (const o of store.list(`${PREFIX}/`)) inputs.push(o);
    inputs.sort((x, y) => x.key.localeCompare(y.key));
    const scratch = path.join(scratchRoot, 'attempt');
    await assert.rejects(
      compact(store, inputs, {
        smallBucketBytes: 0,
        sortBudgetBytes: 300_000,
        slicePresortedInputs: false,
        heartbeat: (p) => {
          // After the first range is sorted: the other ranges' scattered rows go.
          if (p.chunksDone === 1) {
            for (const b of readdirSync(scratch)) for (const d of readdirSync(path.join(scratch, b))) if (d.startsWith('scatter_')) rmSync(path.join(scratch, b, d), { recursive: true, force: true });
          }
        },
      }),
      (err: Error) => {
        assert.match(err.message, /^no rows found for ranks \[\d+, \d+\) of the bucket's spill files in .*: was the scratch directory cleaned while the bucket ran\? The attempt is retried from its inputs$/);
        return true;
      },
    );
    assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'no output, every input in place');
  });

  test("the winners' narrow read yields the same id digest as a separate read of the inputs", async () => {
    const { root } = await newWarehouse();
    const planned = await writeBucket(root, dedupParts());
    const inputs = planned.map((p) => ({ ...p, path: path.join(root, p.key) }));
    const schemas = await Promise.all(inputs.map((i) => readInputSchema(session, i)));
    const separate = await inputIdDigest(session, inputs);
    const fromWinners = await computeWinners(session, inputs, schemas, await inputFootprint(session, inputs), 'us');
    assert.deepEqual(fromWinners, separate);
    assert.deepEqual([separate.rows, separate.distinctIds], [12, 6]);
    const ranks = await session.rows('SELECT count(*) AS n, count(DISTINCT rank) AS r, max(rank) AS top FROM ordered');
    assert.deepEqual(ranks.map((r) => [Number(r.n), Number(r.r), Number(r.top)]), [[6, 6, 5]], 'one rank per winner, 0..n-1');
    await session.exec('DROP TABLE ordered');
  });

  test('a dedup statement that runs out of memory runs once more on one thread, and the session gets its threads back', async () => {
    const { root } = await newWarehouse();
    const planned = await writeBucket(root, dedupParts());
    const inputs = planned.map((p) => ({ ...p, path: path.join(root, p.key) }));
    const own = await openDuckSession({ tempDir: path.join(root, '.spill'), threads: 2 });
    const threadsNow = async () => Number((await own.rows("SELECT current_setting('threads') AS t"))[0]!.t);
    try {
      const schemas = await Promise.all(inputs.map((i) => readInputSchema(own, i)));
      const expected = await inputIdDigest(own, inputs);
      // Injected: DuckDB's out-of-memory at 256 MB comes now and then on the 4M-row bench bucket (bench/MEASUREMENTS.md),
      // never on demand, so the GROUP BY's first run fails with DuckDB's message instead.
      const seen: number[] = [];
      let failed = false;
      const faulty: DuckSession = {
        ...own,
        async exec(sql) {
          if (sql.includes('GROUP BY id')) {
            seen.push(await threadsNow());
            if (!failed) {
              failed = true;
              throw new Error('Out of Memory Error: could not allocate block of size 256.0 KiB (244.0 MiB/244.1 MiB used)');
            }
          }
          await own.exec(sql);
        },
      };
      const digest = await computeWinners(faulty, inputs, schemas, await inputFootprint(own, inputs), 'us');
      assert.deepEqual(digest, expected, 'the same winners');
      assert.deepEqual(seen, [2, 1], 'run again on one thread');
      assert.equal(await threadsNow(), 2, 'threads given back');
      const [ranks] = await own.rows('SELECT count(*) AS n FROM ordered');
      assert.equal(Number(ranks!.n), expected.distinctIds);
      // Anything but running out of memory is not retried, nor is a statement already on one thread.
      let runs = 0;
      const failing = (message: string) => async () => {
        runs++;
        throw new Error(message);
      };
      await assert.rejects(onOneThreadIfOutOfMemory(own, failing('IO Error: denied')), /IO Error/);
      await own.exec('SET threads = 1');
      await assert.rejects(onOneThreadIfOutOfMemory(own, failing('Out of Memory Error: x')), /Out of Memory/);
      assert.equal(runs, 2, 'each run once');
    } finally {
      own.close();
    }
  });

  test('scatterLayout covers every rank once, in order, within the fan-out, scattering as little again as it can', () => {
    for (const [fanout, next] of [[2, 2], [3, 3], [4, 4], [16, 16], [14, 9], [4, 7]] as const) {
      for (const chunkRows of [1, 7, 100]) {
        for (const chunks of [1, 2, fanout, fanout + 1, fanout * next - 1, fanout * next, fanout * next + 3, 5 * fanout * next]) {
          const rows = chunks * chunkRows - (chunkRows > 1 ? 1 : 0);
          const l = scatterLayout(rows, chunkRows, fanout, next);
          const what = `${rows} rows, chunks of ${chunkRows}, fan-out ${fanout} then ${next}`;
          assert.ok(l.parts <= fanout && l.parts === l.ranges.length, what);
          assert.equal(l.ranges[0]![0], 0, what);
          assert.equal(l.ranges.at(-1)![1], rows, what);
          for (let k = 1; k < l.ranges.length; k++) assert.equal(l.ranges[k]![0], l.ranges[k - 1]![1], what);
          for (const [a, b] of l.ranges.slice(0, l.singles)) assert.ok(b - a <= chunkRows && b > a, what);
          const n = Math.ceil(rows / chunkRows);
          if (n <= fanout) assert.equal(l.singles, l.parts, `${what}: one pass`);
          else if (n <= fanout * next) {
            for (const [a, b] of l.ranges) assert.ok(b - a <= next * chunkRows, `${what}: two passes at most`);
            // One more single range would leave the rest too large for one more pass.
            assert.ok(l.singles === fanout - 1 || l.singles + 1 + (fanout - l.singles - 1) * next < n, `${what}: most singles`);
          }
        }
      }
    }
    assert.deepEqual(scatterLayout(18, 1, 16).ranges.filter(([a, b]) => b - a > 1), [[15, 18]], '18 chunks at 16: 3 scattered again');
  });

  test('passthroughLayout: the runs as they are, the ranks between them in ranges of at most a chunk', () => {
    const run = (start: number, rows: number, from: number) => ({ input: 0, from, to: from + 1, start, rows, groups: [{ rows, bytes: rows }] });
    const segments = passthroughLayout(100, [run(60, 20, 2), run(10, 30, 0), run(45, 5, 1)], 8);
    assert.deepEqual(
      segments.map((x) => [x.start, x.end, x.run ? 'run' : 'sort']),
      [[0, 5, 'sort'], [5, 10, 'sort'], [10, 40, 'run'], [40, 45, 'sort'], [45, 50, 'run'], [50, 55, 'sort'], [55, 60, 'sort'],
        [60, 80, 'run'], [80, 87, 'sort'], [87, 94, 'sort'], [94, 100, 'sort']],
    );
    assert.deepEqual(passthroughLayout(30, [run(0, 30, 0)], 8).map((x) => [x.start, x.end, Boolean(x.run)]), [[0, 30, true]], 'nothing to sort');
  });

  test('withoutSmallGaps: a stretch of fewer ranks than a quarter row group between copied row groups takes the smaller neighbour', () => {
    // Row groups of 100 rows (minRows 25) in three runs; new rows at 300..302, 500..540, and 900..903 at the end.
    const runs = [passthroughRun(0, 0, [100, 100, 90]), passthroughRun(303, 3, [100, 97]), passthroughRun(540, 5, [100, 100, 100, 60])];
    const shape = (rs: ReturnType<typeof withoutSmallGaps>) => rs.map((r) => [r.from, r.to, r.start, r.rows]);
    assert.deepEqual(shape(withoutSmallGaps(904, runs, 25)), [
      [0, 2, 0, 200], // 290..303 was 13 ranks: the 90-row group joins it
      [3, 5, 303, 197], // 500..540 is 40 ranks: left as it is
      [5, 8, 540, 300], // the last 4 ranks take the 60-row group
    ]);
    assert.deepEqual(shape(withoutSmallGaps(904, runs, 10)), [[0, 3, 0, 290], [3, 5, 303, 197], [5, 8, 540, 300]], 'at 10, only the last 4 ranks are too few');
    assert.deepEqual(shape(runs), [[0, 3, 0, 290], [3, 5, 303, 197], [5, 9, 540, 360]], 'the runs given are left as they are');
    // The first 10 ranks take the only row group of the first run, which is dropped.
    assert.deepEqual(shape(withoutSmallGaps(145, [passthroughRun(10, 0, [30]), passthroughRun(45, 1, [50, 50])], 25)), [[1, 3, 45, 100]]);
    assert.deepEqual(withoutSmallGaps(10, [], 25), [], 'nothing copied: one stretch, however small');
  });

  test('withoutSmallNeighbours: neighbouring copied row groups that fit one together are given back, the rest stay', () => {
    // Output row groups of 100 rows; quarter-size groups left behind by weekly ingest at one place.
    const shape = (rs: ReturnType<typeof withoutSmallNeighbours>) => rs.map((r) => [r.input, r.from, r.to, r.start, r.rows]);
    const runs = [passthroughRun(0, 0, [100, 30, 30, 30, 100, 60, 40, 50]), { ...passthroughRun(600, 4, [25, 100, 25]), input: 1 }];
    assert.deepEqual(shape(withoutSmallNeighbours(runs, { rows: 100, bytes: 1000 })), [
      [0, 0, 1, 0, 100], // full
      // groups 1..3 (90 rows) are given back: ranks 100..190
      [0, 4, 5, 190, 100],
      // 60 + 40 fit: given back (ranks 290..390); 50 alone stays
      [0, 7, 8, 390, 50],
      [1, 4, 7, 600, 150], // no two neighbours fit: 25 + 100 > 100
    ]);
    assert.deepEqual(shape(withoutSmallNeighbours(runs, { rows: 100, bytes: 89 })), [
      [0, 0, 1, 0, 100],
      // At 89 bytes only the first 30 + 30 fit (a third would make 90), and 60 + 40 no longer do.
      [0, 3, 8, 160, 280],
      [1, 4, 7, 600, 150],
    ]);
    const full = [passthroughRun(0, 0, [100, 100, 70])];
    assert.deepEqual(shape(withoutSmallNeighbours(full, { rows: 100, bytes: 1000 })), [[0, 0, 3, 0, 270]], 'a file of full row groups is copied whole');
    assert.deepEqual(shape(withoutSmallNeighbours([passthroughRun(0, 0, [40, 40])], { rows: 100, bytes: 1000 })), [], 'a run given back whole is dropped');
    assert.deepEqual(shape(runs), [[0, 0, 8, 0, 440], [1, 4, 7, 600, 150]], 'the runs given are left as they are');
  });

  test('findPassthroughRuns: whole row groups of winners in consecutive ranks, in row order, not over the size cap', async () => {
    const dir = await fs.mkdtemp(path.join(scratchRoot, 'runs-'));
    const file = path.join(dir, 'sorted.parquet');
    // Five row groups of 2,048 rows.
    await session.exec(`COPY (SELECT i AS id FROM range(10240) t(i)) TO ${sqlString(file)} (FORMAT parquet, ROW_GROUP_SIZE 2048)`);
    const input = [{ key: 'sorted.parquet', path: file, size: (await fs.stat(file)).size }];
    const runsFor = async (ordered: string, maxBytes = 1e12, minRows = 0) => {
      await session.exec(`CREATE OR REPLACE TABLE ordered AS ${ordered}`);
      const runs = await findPassthroughRuns(session, input, [0], maxBytes, minRows);
      return runs.map((r) => [r.from, r.to, r.start, r.rows]);
    };
    assert.deepEqual(await runsFor('SELECT i AS pos, i AS rank FROM range(10240) t(i)'), [[0, 5, 0, 10240]], 'all of it, as one run');
    assert.deepEqual(await runsFor('SELECT i AS pos, i AS rank FROM range(10240) t(i)', 1), [], 'row groups over the cap are written anew');
    assert.deepEqual(await runsFor('SELECT i AS pos, i AS rank FROM range(10240) t(i)', 1e12, 2049), [], 'so are row groups under the minimum');
    // Group 1 in reverse order; one row of group 3 replaced (not a winner); a row of another input
    // ranked between groups 4's first and second row.
    assert.deepEqual(
      await runsFor(`SELECT i AS pos, CASE WHEN i BETWEEN 2048 AND 4095 THEN 6143 - i WHEN i >= 8193 THEN i + 1 ELSE i END AS rank
                     FROM range(10240) t(i) WHERE i <> 7000
                     UNION ALL SELECT (1::BIGINT << 40) AS pos, 8193 AS rank`),
      [[0, 1, 0, 2048], [2, 3, 4096, 2048]],
    );
    // A foreign row between groups 0 and 1 splits the run; both groups still pass.
    assert.deepEqual(
      await runsFor(`SELECT i AS pos, i + (i >= 2048)::INT AS rank FROM range(4096) t(i) UNION ALL SELECT (1::BIGINT << 40), 2048`),
      [[0, 1, 0, 2048], [1, 2, 2049, 2048]],
    );
    await session.exec('DROP TABLE ordered');
  });

  test('scatterFanout follows memory and threads, within [2, max]', () => {
    const MB = 1024 * 1024;
    assert.equal(scatterFanout(256 * MB, 2223, 1, 64), 14, 'the bench bucket at a 256 MB limit');
    assert.ok(scatterFanout(256 * MB, 2223, 2, 64) < scatterFanout(256 * MB, 2223, 1, 64));
    assert.equal(scatterFanout(64 * 1024 * MB, 2223, 2, 64), 64);
    assert.equal(scatterFanout(16 * MB, 100_000, 2, 64), 2);
  });

  test('outputRowGroup: at most 16 MB uncompressed whatever the budget, so a smaller budget reads the file back', () => {
    const MB = 1024 * 1024;
    assert.deepEqual(outputRowGroup(1024 * MB, 2223), { bytes: 16 * MB, rows: Math.floor((16 * MB) / 2223) });
    assert.equal(outputRowGroup(16 * 1024 * MB, 2223).bytes, 16 * MB);
    assert.deepEqual(outputRowGroup(64 * MB, 2223), { bytes: 8 * MB, rows: Math.floor((8 * MB) / 2223) });
    assert.equal(outputRowGroup(1024 * MB, 50).rows, 122_880, "narrow rows: DuckDB's default row count");
  });

  test('evenRowGroupRows: an ordered write leaves no last row group under a quarter of the others, as DuckDB writes it', async () => {
    assert.equal(evenRowGroupRows(5_000, 8192), 8192, 'one row group anyway');
    assert.equal(evenRowGroupRows(3 * 8192, 8192), 8192, 'whole row groups');
    assert.equal(evenRowGroupRows(8193, 8192), 6144, '6,144 + 2,049, not 8,192 + 1');
    assert.equal(evenRowGroupRows(94_000, 7_600), 6144, 'whole vectors within the cap: 15 row groups of 6,144 and one of 1,840');
    assert.equal(evenRowGroupRows(14_492, 14_351), 10_240, 'not 14,336 + 156');
    assert.equal(evenRowGroupRows(4097, 2048), 2048, 'a cap of one vector leaves no choice');
    assert.equal(evenRowGroupRows(3 * 8192 + 1, 8192), 8192, 'every whole number of vectors down to half the cap leaves one row');
    const dir = await fs.mkdtemp(path.join(scratchRoot, 'even-'));
    // Narrow rows, where the row limit closes the row groups; ~1 KB rows whose cap (from the byte limit
    // and a slightly low estimate of a row) lies just past a vector, where the byte limit closes them.
    const MB = 1024 * 1024;
    const cases = [
      { rows: 8193, rg: { rows: 8192, bytes: 64 * MB }, pad: 0 },
      { rows: 16_385, rg: { rows: 8192, bytes: 64 * MB }, pad: 0 },
      { rows: 20_481, rg: { rows: 8192, bytes: 64 * MB }, pad: 0 },
      { rows: 14_492, rg: { rows: 14_351, bytes: 16 * MB }, pad: 1150 },
    ];
    // On one thread, as the sort lanes write (with more, DuckDB applied the byte limit later here).
    const lane = await openDuckSession({ tempDir: path.join(dir, 'spill'), threads: 1 });
    try {
      for (const { rows, rg, pad } of cases) {
        const file = path.join(dir, `${rows}.parquet`);
        const options = finalWriteOptions(rg, [], rows);
        await lane.exec(
          `COPY (SELECT i AS id, md5(i::VARCHAR) || repeat('x', ${pad}) AS s FROM range(${rows}) t(i) ORDER BY md5(i::VARCHAR)) TO ${sqlString(file)} (${options})`,
        );
        const groups = (await parquetFacts(file)).rowGroupRows;
        assert.equal(groups.reduce((a, b) => a + b, 0), rows);
        assert.ok(Math.min(...groups) * 4 >= Math.max(...groups), `${rows} rows: row groups ${groups}`);
      }
    } finally {
      lane.close();
    }
  });

  test('a pool of DuckDB sessions is reused between clean attempts and never after a failure', async () => {
    const pool = new DuckSessionPool(path.join(scratchRoot, 'pool'), 1);
    try {
      for (let round = 0; round < 2; round++) {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, dedupParts());
        const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
        const { result } = await compact(store, inputs, { sessions: pool });
        assertSameRows(await readOutputRows(path.join(root, result.outputKey)), expected, `round ${round}`);
        assert.equal(pool.idleCount, 1, 'the session went back to the pool');
      }
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      await writePartFile(path.join(root, inputs[1]!.key), rowsOf([['Q', null, 'q']]).map((r) => ({ ...r, id: null })), { session });
      await assert.rejects(compact(store, inputs, { sessions: pool }), BadBucketDataError);
      assert.equal(pool.idleCount, 0, 'the session of the failed attempt was closed');
    } finally {
      await pool.close();
    }
  });

  describe('resumes from any state an earlier attempt left', () => {
    /** State (b): a compacted bucket whose inputs are back, as if its attempt died right after publishing. */
    async function publishedBeforeDeleting(extra: Partial<CompactBucketOptions> = {}) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const backup = await newWarehouse();
      await linkFiles(root, backup.root, inputs.map((i) => i.key));
      const first = await compact(store, inputs, extra);
      const outPath = path.join(root, first.result.outputKey);
      const inode = (await fs.stat(outPath)).ino;
      await linkFiles(backup.root, root, inputs.map((i) => i.key));
      return { root, store, inputs, outPath, inode };
    }

    test('(b) output published, inputs all present: re-verified, inputs deleted, output kept', async () => {
      const { root, store, inputs, outPath, inode } = await publishedBeforeDeleting();

      const again = await compact(store, inputs);
      assert.equal(again.result.outcome, 'compacted');
      assert.equal(again.result.rowsIn, 12);
      assert.equal(again.result.rowsOut, 6);
      assert.ok(!again.phases.includes('write'), 'nothing rewritten');
      assert.equal((await fs.stat(outPath)).ino, inode, 'the verified output is kept as is');
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
    });

    test("(b) and (e): an output found published says it has the plan's table types only when its provenance records them", async () => {
      const tableTypes = { percent_valid_pixels: 'long', latitude: 'double' } as const;
      const typed = await publishedBeforeDeleting({ tableTypes });
      const published = await compact(typed.store, typed.inputs, { tableTypes });
      assert.deepEqual([published.result.outcome, published.result.typedAsTable], ['compacted', true], 'state (b)');
      const done = await compact(typed.store, typed.inputs, { tableTypes });
      assert.deepEqual([done.result.outcome, done.result.typedAsTable], ['already-compacted', true], 'state (e)');
      // Written without types, as a worker of an earlier release writes it: the next plan must read it again.
      const untyped = await publishedBeforeDeleting();
      const found = await compact(untyped.store, untyped.inputs, { tableTypes });
      assert.deepEqual([found.result.outcome, found.result.typedAsTable], ['compacted', undefined]);
      const other = await compact(typed.store, typed.inputs, { tableTypes: { ...tableTypes, latitude: 'long' } });
      assert.equal(other.result.typedAsTable, undefined, 'types other than the ones it was written with');
    });

    /** Injected fault (a mock: a six-row file cannot make DuckDB run out of memory for real) on the statements `hits` picks. */
    function failingPool(name: string, hits: (sql: string) => boolean): DuckSessionPool {
      return new (class extends DuckSessionPool {
        override async acquire(settings: Parameters<DuckSessionPool['acquire']>[0]) {
          const leased = await super.acquire(settings);
          const real = leased.session;
          const session: DuckSession = {
            ...real,
            rows: (sql) => (hits(sql) ? Promise.reject(new Error('Out of Memory Error: failed to allocate data of size 64.0 MiB')) : real.rows(sql)),
          };
          return { ...leased, session };
        }
      })(path.join(scratchRoot, name), 0);
    }

    for (const [what, hits] of [
      ['id digest', (sql: string) => sql.includes('count(DISTINCT id)') && sql.includes('compacted_plan1.parquet')],
      ['metadata', (sql: string) => sql.includes('parquet_kv_metadata') && sql.includes('compacted_plan1.parquet')],
    ] as const) {
      test(`(b) our verified output whose ${what} this attempt cannot read (memory) is kept, not replaced: another attempt may be deleting the inputs on its strength`, async () => {
        const { root, store, inputs, outPath, inode } = await publishedBeforeDeleting();
        await assert.rejects(compact(store, inputs, { sessions: failingPool(`oom-${what.length}`, hits) }), /Out of Memory Error/);
        assert.equal((await fs.stat(outPath)).ino, inode, 'the output is still the verified one');
        assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', ...inputs.map((i) => path.basename(i.key))].sort(), 'nothing was deleted');

        // The retry, with memory to spare, finishes the bucket from there.
        const again = await compact(store, inputs);
        assert.ok(!again.phases.includes('write'), 'nothing rewritten');
        assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
      });
    }

    test('an input whose schema cannot be read for want of memory is not called unreadable: the attempt fails retryably, nothing deleted', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const victim = path.basename(inputs[1]!.key);
      await assert.rejects(compact(store, inputs, { sessions: failingPool('oom-describe', (sql) => sql.startsWith('DESCRIBE') && sql.includes(victim)) }), (err: unknown) => {
        assert.ok(!(err instanceof BadBucketDataError), `not blamed on the file: ${String(err)}`);
        assert.match(String(err), /Out of Memory Error/);
        return true;
      });
      assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort());
    });

    test('(b) an output that vanishes between the listing and its download (a concurrent attempt replaced it): retried, not a missing object', async () => {
      const { root, store, inputs } = await publishedBeforeDeleting();
      // A stand-in for the race (a mock): the object is listed, then gone when it is fetched.
      const racing: WarehouseStore = Object.create(store);
      racing.materialize = async (key: string) => {
        if (key.endsWith('compacted_plan1.parquet')) throw new StorageError(`object ${key} does not exist`, 'not-found');
        return store.materialize(key);
      };
      await assert.rejects(compact(racing, inputs), (err: unknown) => {
        assert.ok(!(err instanceof StorageError), String(err));
        assert.match(String(err), /compacted_plan1\.parquet vanished while it was being read/);
        return true;
      });
      assert.equal((await keysUnder(root)).length, inputs.length + 1, 'nothing deleted');
    });

    test('an input gone before the output is published (a newer plan compacted it meanwhile): nothing is published or deleted, the attempt is retried', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const taken = path.join(root, inputs[0]!.key);
      await assert.rejects(
        compact(store, inputs, {
          heartbeat: (p) => {
            // Stands in for the newer plan deleting the input after its own output was verified.
            if (p.phase === 'publish') rmSync(taken, { force: true });
          },
        }),
        InputsChangedError,
      );
      assert.deepEqual(await keysUnder(root), inputs.slice(1).map((i) => path.basename(i.key)).sort(), 'no output, the other inputs untouched');
    });

    test('(b) output present but wrong: replaced by a fresh compaction', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      // A file under our output name that does not match the inputs (e.g. an attempt of a buggy build).
      await fs.copyFile(path.join(root, inputs[0]!.key), path.join(root, outputKeyFor(BUCKET, 'plan1')));
      const { result, phases } = await compact(store, inputs);
      assert.ok(phases.includes('write'));
      assertSameRows(await readOutputRows(path.join(root, result.outputKey)), expected, 'replaced output');
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
    });

    test('(b) an output made from other inputs than the plan lists (a page edited to list the bucket twice): the bucket fails, the output and every input stay', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const [first, ...rest] = inputs;
      await compact(store, [first!]);
      const outPath = path.join(root, outputKeyFor(BUCKET, 'plan1'));
      const inode = (await fs.stat(outPath)).ino;
      await assert.rejects(compact(store, rest), (err: Error) => {
        assert.ok(err instanceof BadBucketDataError, String(err));
        assert.match(err.message, new RegExp(`the output .*compacted_plan1\\.parquet was made from other inputs \\(plan plan1, 1 input\\(s\\), first ${first!.key}\\) than this plan lists`));
        return true;
      });
      assert.equal((await fs.stat(outPath)).ino, inode, 'the output, the only copy of the first input\'s rows, is kept');
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', ...rest.map((i) => path.basename(i.key))].sort());
    });

    test('(c) output present, some inputs deleted: finishes deleting, figures from provenance', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const backup = await newWarehouse();
      await linkFiles(root, backup.root, inputs.map((i) => i.key));
      const first = await compact(store, inputs);
      await linkFiles(backup.root, root, [inputs[2]!.key]);

      const again = await compact(store, inputs);
      assert.equal(again.result.outcome, 'compacted');
      assert.equal(again.result.rowsIn, first.result.rowsIn);
      assert.equal(again.result.bytesIn, first.result.bytesIn);
      assert.equal(again.result.rowsOut, 6);
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
    });

    test('(c) a stop does not keep an attempt from finishing deletes an earlier attempt began (the bucket is counted, the table rebuilt)', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const backup = await newWarehouse();
      await linkFiles(root, backup.root, inputs.map((i) => i.key));
      await compact(store, inputs);
      await linkFiles(backup.root, root, [inputs[2]!.key]);

      const controller = new AbortController();
      controller.abort(new Error('stopped by the test'));
      const again = await compact(store, inputs, { signal: controller.signal });
      assert.equal(again.result.outcome, 'compacted');
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
    });

    test('(c) a deleted input written again under its name (an id the output lacks): left for the next run, nothing else lost', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const backup = await newWarehouse();
      await linkFiles(root, backup.root, [inputs[2]!.key]);
      await compact(store, inputs);
      await linkFiles(backup.root, root, [inputs[2]!.key]);
      // An ingest writes a planned name again, with a row the output cannot hold.
      await writePartFile(path.join(root, inputs[1]!.key), rowsOf([['Z', '2022-01-01T00:00:00Z', 'Z']]), { session });
      const again = await compact(store, inputs);
      assert.equal(again.result.inputsRewritten, 1);
      assert.equal(again.result.filesIn, 2, 'the kept input is not counted as replaced');
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', path.basename(inputs[1]!.key)], 'the untouched input deleted, the rewritten one kept');
      assert.deepEqual((await readOutputRows(path.join(root, inputs[1]!.key))).map((r) => r.id), ['Z']);
    });

    test('(b) an input rewritten after the output was built (same ids, newer rows): the output is kept, the input stays, and the next run takes its rows', async () => {
      const { root, store, inputs, outPath, inode } = await publishedBeforeDeleting();
      const rewrittenKey = inputs[1]!.key;
      const newer = rowsOf(
        [
          ['A', '2023-01-02T00:00:00Z', 'A-p1-v2'],
          ['B', '2023-01-01T00:00:00Z', 'B-p1-v2'],
          ['C', '2023-01-05T00:00:00Z', 'C-p1-v2'],
          ['F', '2023-01-01T00:00:00Z', 'F-p1-v2'],
        ],
        8,
      );
      await writePartFile(path.join(root, rewrittenKey), newer, { session });
      const again = await compact(store, inputs);
      assert.equal(again.result.outcome, 'compacted');
      assert.equal(again.result.inputsRewritten, 1);
      assert.ok(!again.phases.includes('write'), 'the verified output is not rebuilt');
      assert.equal((await fs.stat(outPath)).ino, inode);
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', path.basename(rewrittenKey)]);

      // The next plan compacts the output with the rewritten input: its newer rows win.
      const nextInputs = await Promise.all(
        ['compacted_plan1.parquet', path.basename(rewrittenKey)].map(async (name) => {
          const key = `${PREFIX}/${name}`;
          return { key, size: (await fs.stat(path.join(root, key))).size };
        }),
      );
      const expected = await expectedBucketRows(nextInputs.map((i) => path.join(root, i.key)));
      const next = await compact(store, nextInputs, { planId: 'plan2' });
      const rows = await readOutputRows(path.join(root, next.result.outputKey));
      assertSameRows(rows, expected, 'the next run');
      const markers = new Map(rows.map((r) => [r.id, r.scene_1_id]));
      for (const id of ['A', 'B', 'C', 'F']) assert.equal(markers.get(id), `${id}-p1-v2`, id);
      assert.deepEqual(await keysUnder(root), ['compacted_plan2.parquet']);
    });

    test('an input rewritten in place while it is compacted: nothing is published or deleted, the attempt is retried and compacts the new bytes', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const { target, replacement } = await replacementFor(root, inputs[0]!, ['A', '2030-01-01T00:00:00Z', 'A-rewritten']);
      await assert.rejects(
        compact(store, inputs, {
          heartbeat: (p) => {
            // An ingest rewriting the file (same inode) after the engine read it, before it publishes.
            if (p.phase === 'verify') copyFileSync(replacement, target);
          },
        }),
        (err: unknown) => {
          assert.ok(err instanceof InputsChangedError, String(err));
          assert.match(err.message, /1 planned input\(s\) were rewritten while being read/);
          assert.ok(err.message.includes(inputs[0]!.key), err.message);
          return true;
        },
      );
      assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'no output, every input in place');
      const retry = await compact(store, inputs);
      assert.equal(retry.result.inputsRewritten, undefined);
      const markers = new Map((await readOutputRows(path.join(root, retry.result.outputKey))).map((r) => [r.id, r.scene_1_id]));
      assert.equal(markers.get('A'), 'A-rewritten');
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
    });

    test('an input rewritten between the dedup and the write (its ids no longer those counted) fails as rewritten, naming it, not as an output that failed verification', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const { target, replacement } = await replacementFor(root, inputs[0]!, ['A', '2030-01-01T00:00:00Z', 'A-rewritten']);
      await assert.rejects(
        compact(store, inputs, {
          // The ranked path: it reads the inputs again to write the winners the dedup picked.
          smallBucketBytes: 0,
          heartbeat: (p) => {
            if (p.phase === 'write') copyFileSync(replacement, target);
          },
        }),
        (err: unknown) => {
          assert.ok(err instanceof InputsChangedError, String(err));
          assert.ok(err.message.includes(inputs[0]!.key), err.message);
          return true;
        },
      );
      assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'no output, every input in place');
    });

    test('an input rewritten after the output is published, before the deletes: it stays, the others go', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const { target, replacement } = await replacementFor(root, inputs[2]!, ['E', '2030-01-01T00:00:00Z', 'E-rewritten']);
      const warnings: string[] = [];
      const { result } = await compact(store, inputs, {
        warn: (m) => warnings.push(m),
        heartbeat: (p) => {
          if (p.phase === 'delete') copyFileSync(replacement, target);
        },
      });
      assert.equal(result.inputsRewritten, 1);
      assert.equal(result.filesIn, 2);
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', path.basename(inputs[2]!.key)]);
      assert.deepEqual((await readOutputRows(target)).map((r) => r.scene_1_id), ['E-rewritten'], 'the new bytes are intact');
      assert.equal(warnings.length, 1);
      assert.ok(warnings[0]!.includes(inputs[2]!.key) && /left for the next run/.test(warnings[0]!), warnings[0]);
    });

    test('(d) no output and a planned input missing: MissingPlannedInputError, nothing deleted', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      await fs.rm(path.join(root, inputs[1]!.key));
      await assert.rejects(compact(store, inputs), (err: unknown) => {
        assert.ok(err instanceof MissingPlannedInputError);
        assert.ok(err.message.includes(inputs[1]!.key), err.message);
        return true;
      });
      assert.deepEqual(await keysUnder(root), [path.basename(inputs[0]!.key), path.basename(inputs[2]!.key)]);
    });

    // A run stopped mid-bucket (terminated, timed out, its worker cut off) whose attempt goes on beside the
    // plan that followed: its output names its own plan, so the exclusive publish does not stop it.
    describe('an output of another plan appearing in the bucket: two would both join the table, so nothing is deleted', () => {
      const STALE = 'compacted_stale0.parquet';
      const staleOutput = (root: string, from: PlannedFile) => copyFileSync(path.join(root, from.key), path.join(root, PREFIX, STALE));
      const refused = (published: boolean) => (err: unknown) => {
        assert.ok(err instanceof OtherPlanOutputError, String(err));
        assert.ok(err.message.includes(`${PREFIX}/${STALE}`), err.message);
        assert.equal(err.message.includes('compacted_plan1.parquet is published beside it'), published, err.message);
        return true;
      };

      test('there before the attempt starts: refused at once', async () => {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, dedupParts());
        staleOutput(root, inputs[0]!);
        await assert.rejects(compact(store, inputs), refused(false));
        assert.deepEqual(await keysUnder(root), [STALE, ...inputs.map((i) => path.basename(i.key))].sort());
      });

      test('published while the attempt merged: its own output is not published', async () => {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, dedupParts());
        await assert.rejects(compact(store, inputs, { heartbeat: (p) => void (p.phase === 'publish' && staleOutput(root, inputs[0]!)) }), refused(false));
        assert.deepEqual(await keysUnder(root), [STALE, ...inputs.map((i) => path.basename(i.key))].sort());
      });

      test('published beside its output, after its check: no input is deleted, and a retry deletes none either', async () => {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, dedupParts());
        await assert.rejects(compact(store, inputs, { heartbeat: (p) => void (p.phase === 'delete' && staleOutput(root, inputs[0]!)) }), refused(true));
        const all = ['compacted_plan1.parquet', STALE, ...inputs.map((i) => path.basename(i.key))].sort();
        assert.deepEqual(await keysUnder(root), all);
        await assert.rejects(compact(store, inputs), refused(true));
        assert.deepEqual(await keysUnder(root), all);
      });

      test('a file of that name in a subfolder of the bucket is no data file of the layout and changes nothing', async () => {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, dedupParts());
        await fs.mkdir(path.join(root, PREFIX, 'backup'));
        copyFileSync(path.join(root, inputs[0]!.key), path.join(root, PREFIX, 'backup', STALE));
        const { result } = await compact(store, inputs);
        assert.equal(result.filesIn, inputs.length);
        assert.deepEqual(await keysUnder(root), [`backup/${STALE}`, 'compacted_plan1.parquet']);
      });

      test('an output the plan lists (an earlier compaction of the bucket) is an input like any other', async () => {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, dedupParts());
        staleOutput(root, inputs[0]!);
        const withEarlier = [{ key: `${PREFIX}/${STALE}`, size: (await fs.stat(path.join(root, PREFIX, STALE))).size }, ...inputs.slice(1)];
        await fs.rm(path.join(root, inputs[0]!.key));
        const { result } = await compact(store, withEarlier);
        assert.equal(result.filesIn, withEarlier.length);
        assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
      });
    });

    test('(e) already compacted: reported with its rows, leftovers swept, new ingest and other files untouched', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const first = await compact(store, inputs);
      const tmp = path.join(root, PREFIX, tempNameFor('plan1', 'dead-attempt'));
      await fs.writeFile(tmp, 'partial parquet bytes');
      await writePartFile(path.join(root, PREFIX, 'part_new.parquet'), rowsOf([['N', '2023-01-01T00:00:00Z', 'new']]), { session });
      await fs.writeFile(path.join(root, PREFIX, 'notes.txt'), 'operator notes');

      const again = await compact(store, inputs);
      assert.equal(again.result.outcome, 'already-compacted');
      assert.equal(again.result.rowsOut, 6);
      assert.equal(again.result.rowsIn, first.result.rowsIn);
      assert.equal(again.result.bytesOut, first.result.bytesOut);
      assert.equal(again.result.orphansRemoved, 1);
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', 'notes.txt', 'part_new.parquet']);
    });

    test('new ingest arriving after the plan survives a compaction, also one staged under a name like ours; temp leftovers are swept', async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      await writePartFile(path.join(root, PREFIX, 'part_new.parquet'), rowsOf([['A', '2030-01-01T00:00:00Z', 'new']]), { session });
      await fs.writeFile(path.join(root, PREFIX, tempNameFor('plan0', 'x1')), 'leftover');
      // An ingest that stages its file before renaming it, and our own staging copy of a publish across filesystems.
      const ingestStaging = 'part_ingest.parquet.0123abcd-0123-4567-89ab-0123456789ab.staging';
      await fs.writeFile(path.join(root, PREFIX, ingestStaging), 'ingest in flight');
      await fs.writeFile(path.join(root, PREFIX, 'compacted_plan0.parquet.0123abcd-0123-4567-89ab-0123456789ab.staging'), 'our leftover');
      const { result } = await compact(store, inputs);
      assert.equal(result.orphansRemoved, 2);
      assert.equal(result.rowsOut, 6, 'the unplanned file is not an input');
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', 'part_ingest.parquet.0123abcd-0123-4567-89ab-0123456789ab.staging', 'part_new.parquet']);
    });
  });

  describe('survives a real SIGKILL at each crash point', () => {
    const child = (root: string, inputs: PlannedFile[], crashAt: string, once: string) => {
      const engine = path.resolve(__dirname, '../activities/compaction/compact-bucket.ts');
      const storeModule = path.resolve(__dirname, '../activities/storage/local-store.ts');
      const req = { warehouse: root, planId: 'plan1', bucket: BUCKET, inputs };
      const script = `
        const { compactBucket } = require(${JSON.stringify(engine)});
        const { LocalWarehouseStore } = require(${JSON.stringify(storeModule)});
        compactBucket(new LocalWarehouseStore(${JSON.stringify(root)}), ${JSON.stringify(req)}, {
          scratchDir: ${JSON.stringify(path.join(scratchRoot, 'child'))}, memoryLimitMb: 256, threads: 1, heartbeat: () => {},
        }).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });`;
      return spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
        cwd: path.resolve(__dirname, '..'),
        env: { ...process.env, EARTHCATALOG_CRASH_AT: crashAt, EARTHCATALOG_CRASH_ONCE_FILE: once },
        encoding: 'utf8',
        timeout: 60_000,
      });
    };

    for (const point of ['after-publish', 'after-partial-delete'] as const) {
      test(point, async () => {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, dedupParts());
        const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
        const once = path.join(root, 'crashed-once');
        const run = child(root, inputs, `${point}@${PREFIX}`, once);
        assert.equal(run.signal, 'SIGKILL', `child should die at ${point}: ${run.stderr}`);
        await fs.access(once);
        const left = await keysUnder(root);
        assert.ok(left.includes('compacted_plan1.parquet'), 'output published before the crash');
        const inputsLeft = inputs.filter((i) => left.includes(path.basename(i.key))).length;
        assert.equal(inputsLeft, point === 'after-publish' ? 3 : 1, 'inputs left by the crash');

        const again = await compact(store, inputs);
        assert.equal(again.result.outcome, 'compacted');
        assert.equal(again.result.rowsIn, 12);
        assertSameRows(await readOutputRows(path.join(root, again.result.outputKey)), expected, `after ${point}`);
        assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet']);
      });
    }
  });

  test('a malformed request is refused before anything is read or deleted, naming the key', async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts());
    const before = await keysUnder(root);
    const elsewhere = { key: 'grid_partition=other/year=2021/part_00000_x.parquet', size: 1 };
    const cases: [string, PlannedFile[], RegExp][] = [
      ['no inputs', [], /lists no inputs/],
      ['an input of another bucket', [...inputs, elsewhere], /grid_partition=other\/year=2021\/part_00000_x\.parquet is not a data file of this bucket/],
      ['an input listed twice', [...inputs, inputs[0]!], /listed twice/],
      ['its own output as input', [...inputs, { key: outputKeyFor(BUCKET, 'plan1'), size: 1 }], /this plan's own output/],
      ['an input DuckDB would read as a glob', [...inputs, { key: `${PREFIX}/part_[1].parquet`, size: 1 }], /part_\[1\]\.parquet has a character DuckDB reads as a glob/],
    ];
    for (const [what, request, message] of cases) {
      await assert.rejects(compact(store, request), (err: unknown) => {
        assert.ok(err instanceof InvalidBucketRequestError, `${what}: got ${String(err)}`);
        assert.match(err.message, message, what);
        return true;
      });
    }
    assert.deepEqual(await keysUnder(root), before, 'nothing touched');
  });

  describe('bad inputs fail the bucket with the object named, and nothing is deleted', () => {
    const cases: { name: string; damage: (root: string, inputs: PlannedFile[]) => Promise<PlannedFile[]>; match: RegExp; culprit: number }[] = [
      {
        name: 'zero-byte file',
        damage: async (root, inputs) => {
          await fs.writeFile(path.join(root, inputs[1]!.key), '');
          return inputs.map((i, n) => (n === 1 ? { ...i, size: 0 } : i));
        },
        match: /empty \(zero-byte\)/,
        culprit: 1,
      },
      {
        name: 'truncated file',
        damage: async (root, inputs) => {
          const p = path.join(root, inputs[2]!.key);
          await fs.truncate(p, Math.floor(inputs[2]!.size / 2));
          return inputs;
        },
        match: /not a readable Parquet file/,
        culprit: 2,
      },
      {
        name: 'corrupt page behind a valid footer',
        damage: async (root, inputs) => {
          const p = path.join(root, inputs[1]!.key);
          const buf = await fs.readFile(p);
          const at = Math.floor(buf.length * 0.3);
          for (let i = at; i < at + 64; i++) buf[i] = (buf[i]! * 7 + 13) & 255;
          await fs.writeFile(p, buf);
          return inputs;
        },
        match: /cannot be read/,
        culprit: 1,
      },
      {
        name: 'file without id',
        damage: async (root, inputs) => {
          await writePartFile(path.join(root, inputs[1]!.key), rowsOf([['Q', '2022-01-01T00:00:00Z', 'q']]), { session, omitColumns: ['id'] });
          return inputs;
        },
        match: /no 'id' column/,
        culprit: 1,
      },
      {
        name: 'conflicting column types',
        damage: async (root, inputs) => {
          const rows = rowsOf([['Q', '2022-01-01T00:00:00Z', 'q']]).map((r) => ({ ...r, platform: '8' }));
          await writePartFile(path.join(root, inputs[2]!.key), rows, { session, columnTypes: { platform: 'BIGINT' } });
          return inputs;
        },
        match: /column 'platform' has conflicting types/,
        culprit: 2,
      },
      {
        name: 'null ids',
        damage: async (root, inputs) => {
          const rows = rowsOf([['Q', '2022-01-01T00:00:00Z', 'q']]).map((r) => ({ ...r, id: null }));
          await writePartFile(path.join(root, inputs[0]!.key), rows, { session });
          return inputs;
        },
        match: /null 'id'/,
        culprit: 0,
      },
      // Before these were refused, a `file_index` column took the place of DuckDB's file number: the
      // ranked path dropped every row of the other inputs and reported success.
      ...(
        [
          ['File_Index', 'a column named file_index (any case)', /column named 'File_Index'.*DuckDB's row positions/],
          ['file_row_number', 'a column named file_row_number', /column named 'file_row_number'/],
          ['__ec_fi', 'a column with the prefix of our working columns', /column named '__ec_fi'.*its own working columns/],
        ] as const
      ).map(([column, name, match]) => ({
        name,
        damage: (root: string, inputs: PlannedFile[]) => rewritePart(root, inputs, 1, `*, 0 AS "${column}"`),
        match,
        culprit: 1,
      })),
      // DuckDB would compact them (it ignores case); the rebuild then left an output without 'id' out of the table.
      ...(
        [
          ['id', 'ID'],
          ['updated', 'Updated'],
        ] as const
      ).map(([column, as]) => ({
        name: `the column ${column} spelled ${as} in one input`,
        damage: (root: string, inputs: PlannedFile[]) => rewritePart(root, inputs, 1, `* EXCLUDE (${column}), ${column} AS "${as}"`),
        match: new RegExp(`spells the column '${column}' as '${as}'.*Nothing of the bucket was changed`),
        culprit: 1,
      })),
      // DuckDB reads a nameless column as C<position>: compacted, one producer column became another in the table.
      {
        name: 'a column without a name',
        damage: async (root, inputs) => {
          await addColumnCopy(path.join(root, inputs[2]!.key), 'platform', '');
          return resized(root, inputs, 2);
        },
        match: /has a column without a name \(its column \d+\), which DuckDB would write as 'C\d+'/,
        culprit: 2,
      },
      {
        name: "a column without a name beside one named as DuckDB would name it (DuckDB's read fails)",
        damage: async (root, inputs) => {
          const file = path.join(root, inputs[2]!.key);
          await addColumnCopy(file, 'platform', '');
          // Without hive_partitioning = false the last column DuckDB names is the path's `year`.
          const described = await session.rows(`DESCRIBE SELECT * FROM read_parquet(${sqlString(file)}, hive_partitioning = false)`);
          await addColumnCopy(file, 'platform', String(described.at(-1)!.column_name));
          return resized(root, inputs, 2);
        },
        match: /has a column without a name \(its column \d+\), which DuckDB would write as 'C\d+'/,
        culprit: 2,
      },
      {
        name: 'columns id and ID in one file',
        damage: async (root, inputs) => {
          await addColumnCopy(path.join(root, inputs[2]!.key), 'id', 'ID');
          return resized(root, inputs, 2);
        },
        match: /names repeat or differ only in case \('id', 'ID'\)/,
        culprit: 2,
      },
    ];
    /** Rewrites input `n` as `SELECT <select>` of itself (through a staged copy) and gives it its new size. */
    async function rewritePart(root: string, inputs: PlannedFile[], n: number, select: string): Promise<PlannedFile[]> {
      const file = path.join(root, inputs[n]!.key);
      const staged = path.join(scratchRoot, `rewrite-${n}.parquet`);
      await fs.rename(file, staged);
      await session.exec(`COPY (SELECT ${select} FROM read_parquet(${sqlString(staged)})) TO ${sqlString(file)} (FORMAT parquet)`);
      await fs.rm(staged);
      return resized(root, inputs, n);
    }
    /** The inputs with input `n` given the size its rewritten file has now. */
    async function resized(root: string, inputs: PlannedFile[], n: number): Promise<PlannedFile[]> {
      const size = (await fs.stat(path.join(root, inputs[n]!.key))).size;
      return inputs.map((i, k) => (k === n ? { ...i, size } : i));
    }
    // The small path reads ids in a digest of their own; the ranked path in its narrow winners read.
    for (const c of cases) for (const writePath of WRITE_PATHS.slice(0, 2)) {
      test(`${c.name}: ${writePath.name}`, async () => {
        const { root, store } = await newWarehouse();
        const written = await writeBucket(root, dedupParts());
        const inputs = await c.damage(root, written);
        const before = await keysUnder(root);
        await assert.rejects(compact(store, inputs, writePath.opts), (err: unknown) => {
          assert.ok(err instanceof BadBucketDataError, `got ${String(err)}`);
          assert.match(err.message, c.match);
          assert.ok(err.message.includes(inputs[c.culprit]!.key), `names the culprit: ${err.message}`);
          return true;
        });
        assert.deepEqual(await keysUnder(root), before, 'every input still present, no output, no temp file');
      });
    }
  });

  test('a column spelled differently across inputs (Scene_1_id, scene_1_id) fails the bucket naming the files; nothing is written or deleted', async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts());
    const second = path.join(root, inputs[1]!.key);
    const staged = path.join(scratchRoot, 'spelled.parquet');
    await fs.rename(second, staged);
    await session.exec(`COPY (SELECT * EXCLUDE (scene_1_id), scene_1_id AS "Scene_1_id" FROM read_parquet(${sqlString(staged)})) TO ${sqlString(second)} (FORMAT parquet)`);
    inputs[1]!.size = (await fs.stat(second)).size;
    const before = await fs.readdir(path.dirname(second));
    await assert.rejects(compact(store, inputs), (err: unknown) => {
      assert.ok(err instanceof BadBucketDataError, `got ${String(err)}`);
      assert.match(err.message, /^column 'scene_1_id' is spelled differently across inputs: .*\(Scene_1_id\)/);
      assert.ok(err.message.includes(inputs[1]!.key), err.message);
      return true;
    });
    assert.deepEqual(await fs.readdir(path.dirname(second)), before, 'nothing written or deleted');
  });

  test("names differing in the case of non-ASCII letters only (höhe, hÖhe; Öl, öl in one file), which DuckDB keeps apart, compact as two columns", async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts());
    for (const [n, name] of [[0, 'höhe'], [1, 'hÖhe']] as const) {
      const file = path.join(root, inputs[n]!.key);
      const staged = path.join(scratchRoot, `non-ascii-${n}.parquet`);
      await fs.rename(file, staged);
      await session.exec(`COPY (SELECT *, ${n + 1} AS "${name}" FROM read_parquet(${sqlString(staged)})) TO ${sqlString(file)} (FORMAT parquet)`);
      inputs[n]!.size = (await fs.stat(file)).size;
    }
    await addColumnCopy(path.join(root, inputs[2]!.key), 'platform', 'Öl');
    await addColumnCopy(path.join(root, inputs[2]!.key), 'platform', 'öl');
    inputs[2]!.size = (await fs.stat(path.join(root, inputs[2]!.key))).size;
    const { result } = await compact(store, inputs);
    const columns = (await session.rows(`DESCRIBE SELECT * FROM read_parquet(${sqlString(path.join(root, result.outputKey))})`)).map((r) => String(r.column_name));
    for (const name of ['höhe', 'hÖhe', 'Öl', 'öl']) assert.ok(columns.includes(name), `${name} in ${columns.join(', ')}`);
  });

  test('a type conflict across many inputs names ten of them and counts the rest (the message travels in the run\'s summary)', async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts());
    for (let k = 0; k < 12; k++) {
      const key = `${PREFIX}/part_conflict_${String(k).padStart(2, '0')}.parquet`;
      const rows = rowsOf([['Q', '2022-01-01T00:00:00Z', `q${k}`]]).map((r) => ({ ...r, platform: '8' }));
      await writePartFile(path.join(root, key), rows, { session, columnTypes: { platform: 'BIGINT' } });
      inputs.push({ key, size: (await fs.stat(path.join(root, key))).size });
    }
    await assert.rejects(compact(store, inputs), (err: unknown) => {
      assert.ok(err instanceof BadBucketDataError, `got ${String(err)}`);
      assert.match(err.message, new RegExp(`column 'platform' has conflicting types across inputs: .* and ${inputs.length - 10} more$`));
      assert.equal(err.message.split(' (').length - 1, 10, `ten inputs named: ${err.message}`);
      assert.equal(err.keys.length, inputs.length, 'the error still carries every key at fault');
      return true;
    });
  });

  test('a type conflict names the files of the rarer type first: the odd file last in plan order is not among the ones left out', async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts());
    const key = `${PREFIX}/part_zz_odd.parquet`;
    const rows = rowsOf([['Q', '2022-01-01T00:00:00Z', 'q']]).map((r) => ({ ...r, platform: '8' }));
    await writePartFile(path.join(root, key), rows, { session, columnTypes: { platform: 'BIGINT' } });
    inputs.push({ key, size: (await fs.stat(path.join(root, key))).size });
    assert.ok(inputs.length > 2, 'more files of the common type than of the odd one');
    await assert.rejects(compact(store, inputs), (err: unknown) => {
      assert.ok(err instanceof BadBucketDataError, `got ${String(err)}`);
      assert.ok(err.message.startsWith(`column 'platform' has conflicting types across inputs: ${key} (BIGINT), `), err.message);
      return true;
    });
  });

  for (const writePath of WRITE_PATHS.slice(0, 2)) {
    test(`an input without rows is not held to the bucket's schema (updated as text, no id): the bucket compacts and deletes it: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      for (const [name, select] of [
        ['part_empty_text.parquet', `SELECT 'x' AS id, 'yesterday' AS updated, 'p' AS platform WHERE false`],
        ['part_empty_no_id.parquet', `SELECT 'yesterday' AS updated WHERE false`],
      ] as const) {
        const key = `${PREFIX}/${name}`;
        await session.exec(`COPY (${select}) TO ${sqlString(path.join(root, key))} (FORMAT parquet)`);
        inputs.push({ key, size: (await fs.stat(path.join(root, key))).size });
      }
      const { result } = await compact(store, inputs, writePath.opts);
      assert.equal(result.outcome, 'compacted');
      assert.equal(result.rowsOut, 6);
      assert.deepEqual(await keysUnder(root), [path.basename(result.outputKey)], 'every input deleted, the empty ones too');
      const [described] = await session.rows(`SELECT column_type FROM (DESCRIBE SELECT * FROM read_parquet(${sqlString(path.join(root, result.outputKey))})) WHERE column_name = 'updated'`);
      assert.equal(described?.column_type, 'TIMESTAMP WITH TIME ZONE', "the empty input's text type is not the output's");
    });

    test(`an input whose footer's total says 0 rows while its row groups hold rows is merged, not dropped as empty: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const parts = dedupParts();
      const inputs = await writeBucket(root, parts);
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      // FileMetaData field 3 (num_rows) set to 0; readers count the row groups' rows.
      const file = path.join(root, inputs[1]!.key);
      const bytes = await fs.readFile(file);
      const footerLength = bytes.readUInt32LE(bytes.length - 8);
      const footer = readThriftStruct(bytes.subarray(bytes.length - 8 - footerLength, bytes.length - 8));
      setField(footer, 3, { t: 6, v: 0n });
      const patched = Buffer.from(writeThriftStruct(footer));
      const length = Buffer.alloc(4);
      length.writeUInt32LE(patched.length);
      await fs.writeFile(file, Buffer.concat([bytes.subarray(0, bytes.length - 8 - footerLength), patched, length, Buffer.from('PAR1')]));
      inputs[1]!.size = (await fs.stat(file)).size;
      const [read] = await session.rows(`SELECT count(*)::INTEGER AS n FROM read_parquet(${sqlString(file)})`);
      assert.equal(read?.n, parts[1]!.rows.length, 'DuckDB reads its rows');

      const { result } = await compact(store, inputs, writePath.opts);
      assert.equal(result.rowsIn, parts.reduce((n, p) => n + p.rows.length, 0));
      assertSameRows(await readOutputRows(path.join(root, result.outputKey)), expected);
    });

    test(`a crash during the deletes that leaves only an empty input (no id column) finishes on the next attempt and deletes it: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const key = `${PREFIX}/part_z_empty.parquet`;
      await session.exec(`COPY (SELECT 'yesterday' AS updated WHERE false) TO ${sqlString(path.join(root, key))} (FORMAT parquet)`);
      inputs.push({ key, size: (await fs.stat(path.join(root, key))).size });
      // A stand-in for the fault (a mock): the second batch of deletes fails retryably for its last key, as
      // S3's DeleteObjects may, which leaves the output and the empty input (last in plan order) for the next
      // attempt (state c).
      const failing: WarehouseStore = Object.create(store);
      let batches = 0;
      failing.deleteMany = async (keys: string[]) => {
        if (++batches < 2) return store.deleteMany(keys);
        await store.deleteMany(keys.filter((k) => k !== key));
        throw Object.assign(new Error('the connection to the storage service failed: read ECONNRESET'), { code: 'ECONNRESET' });
      };
      await assert.rejects(compact(failing, inputs, writePath.opts), /connection to the storage service failed/);
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet', 'part_z_empty.parquet'].sort());
      const { result } = await compact(store, inputs, writePath.opts);
      assert.equal(result.outcome, 'compacted');
      assert.equal(result.rowsOut, 6);
      assert.deepEqual(await keysUnder(root), [path.basename(result.outputKey)]);
    });

    test(`a column that holds no value in some inputs (pyarrow's Null type; an all-null INTEGER) is no type conflict: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const parts = dedupParts();
      parts[0]!.opts = {};
      parts[2]!.rows = parts[2]!.rows.map((r) => ({ ...r, scene_2_frame: null }));
      parts[2]!.opts = { columnTypes: { scene_2_frame: 'INTEGER' } };
      const inputs = await writeBucket(root, parts);
      // pyarrow writes a column that was None in every row of a batch with the Null type (DuckDB reads INTEGER).
      await makeColumnNullTyped(path.join(root, inputs[1]!.key), 'scene_2_frame');
      inputs[1]!.size = (await fs.stat(path.join(root, inputs[1]!.key))).size;
      const values = new Map(parts[0]!.rows.map((r) => [r.id, r.scene_2_frame]));

      const { result } = await compact(store, inputs, writePath.opts);
      assert.equal(result.rowsOut, 6);
      const out = path.join(root, result.outputKey);
      const [described] = await session.rows(`SELECT column_type FROM (DESCRIBE SELECT * FROM read_parquet(${sqlString(out)})) WHERE column_name = 'scene_2_frame'`);
      assert.equal(described?.column_type, 'VARCHAR', 'the type of the file that holds values');
      const rows = await readOutputRows(out);
      // D's winner is part 0's row (part 2's D has a NULL updated): its value comes through as it was.
      assert.equal(rows.find((r) => r.id === 'D')!.scene_2_frame, values.get('D'));
      assert.equal(rows.find((r) => r.id === 'A')!.scene_2_frame, null, "A's winner is part 1's row, whose column holds no value");
    });
  }

  for (const writePath of WRITE_PATHS) {
    test(`a column without a value in any input (pyarrow's Null type, an all-null INTEGER) is left out of the output, not written as int32: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const parts = dedupParts();
      parts[0]!.rows = parts[0]!.rows.map((r) => ({ ...r, scene_2_frame: null }));
      parts[0]!.opts = { ...parts[0]!.opts, columnTypes: { scene_2_frame: 'INTEGER' } };
      parts[2]!.rows = parts[2]!.rows.map((r) => ({ ...r, scene_2_frame: null }));
      parts[2]!.opts = { ...parts[2]!.opts, columnTypes: { scene_2_frame: 'INTEGER' } };
      const inputs = await writeBucket(root, parts);
      await makeColumnNullTyped(path.join(root, inputs[1]!.key), 'scene_2_frame');
      inputs[1]!.size = (await fs.stat(path.join(root, inputs[1]!.key))).size;

      const { result } = await compact(store, inputs, writePath.opts);
      assert.equal(result.rowsOut, 6);
      const out = path.join(root, result.outputKey);
      const described = (await session.rows(`DESCRIBE SELECT * FROM read_parquet(${sqlString(out)})`)).map((r) => String(r.column_name));
      assert.ok(!described.includes('scene_2_frame'), `left out: ${described.join(', ')}`);
      assert.ok(described.includes('scene_1_frame') && described.includes('updated'), 'every other column kept');
    });
  }

  for (const writePath of WRITE_PATHS) {
    test(`contract columns without a value in any input (pyarrow's Null type) are written as their types, all null, not as int32: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      for (const input of inputs) {
        for (const column of ['platform', 'updated']) await makeColumnNullTyped(path.join(root, input.key), column);
        input.size = (await fs.stat(path.join(root, input.key))).size;
      }
      const { result } = await compact(store, inputs, writePath.opts);
      assert.equal(result.rowsOut, 6, 'every id once (the later file wins each tie)');
      const out = path.join(root, result.outputKey);
      const types = new Map((await session.rows(`DESCRIBE SELECT * FROM read_parquet(${sqlString(out)})`)).map((r) => [String(r.column_name), String(r.column_type)]));
      assert.deepEqual([types.get('platform'), types.get('updated')], ['VARCHAR', 'TIMESTAMP WITH TIME ZONE'], 'readers read them as the table types them');
      const [counts] = await session.rows(`SELECT count(platform) AS p, count(updated) AS u FROM read_parquet(${sqlString(out)})`);
      assert.deepEqual([Number(counts!.p), Number(counts!.u)], [0, 0], 'and hold no value, as before');
    });

    test(`an updated of +infinity wins and -infinity loses to every time but NULL, the same on every write path: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, [
        { rows: rowsOf([['A', '2022-01-01T00:00:00Z', 'A-p0'], ['B', null, 'B-p0'], ['C', '2022-01-01T00:00:00Z', 'C-p0']]) },
        { rows: rowsOf([['A', '2000-01-01T00:00:00Z', 'A-inf'], ['B', '2000-01-01T00:00:00Z', 'B-neginf'], ['C', '2000-01-01T00:00:00Z', 'C-neginf']], 8) },
      ]);
      const second = path.join(root, inputs[1]!.key);
      const staged = path.join(scratchRoot, `infinite-${writePath.name.length}.parquet`);
      await fs.rename(second, staged);
      await session.exec(
        `COPY (SELECT * REPLACE (CASE WHEN scene_1_id = 'A-inf' THEN 'infinity'::TIMESTAMPTZ ELSE '-infinity'::TIMESTAMPTZ END AS updated)
           FROM read_parquet(${sqlString(staged)})) TO ${sqlString(second)} (FORMAT parquet)`,
      );
      inputs[1]!.size = (await fs.stat(second)).size;
      const { result } = await compact(store, inputs, writePath.opts);
      const markers = new Map((await readOutputRows(path.join(root, result.outputKey))).map((r) => [r.id, r.scene_1_id]));
      assert.deepEqual(Object.fromEntries(markers), { A: 'A-inf', B: 'B-neginf', C: 'C-p0' });
    });
  }

  /** Rewrites `updated` of every input with `expr` (SQL over the row, e.g. a CASE on the marker `scene_1_id`). */
  async function rewriteUpdated(root: string, inputs: PlannedFile[], expr: string, tag: string): Promise<void> {
    for (const [i, input] of inputs.entries()) {
      const file = path.join(root, input.key);
      const staged = path.join(scratchRoot, `updated-${tag}-${i}.parquet`);
      await fs.rename(file, staged);
      await session.exec(`COPY (SELECT * REPLACE (${expr} AS updated) FROM read_parquet(${sqlString(staged)})) TO ${sqlString(file)} (FORMAT parquet)`);
      input.size = (await fs.stat(file)).size;
    }
  }

  for (const writePath of WRITE_PATHS) {
    test(`a nanosecond updated (naive TIMESTAMP_NS, as pandas writes) tells versions less than a microsecond apart, on every write path: ${writePath.name}`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, [
        { rows: rowsOf([['A', null, 'A-newer'], ['B', null, 'B-older']]) },
        { rows: rowsOf([['A', null, 'A-older'], ['B', null, 'B-newer']], 8) },
      ]);
      await rewriteUpdated(
        root,
        inputs,
        `CASE WHEN scene_1_id LIKE '%-newer' THEN '2022-01-01 00:00:00.000000600'::TIMESTAMP_NS ELSE '2022-01-01 00:00:00.000000100'::TIMESTAMP_NS END`,
        `ns-${writePath.name.length}`,
      );
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      const { result } = await compact(store, inputs, writePath.opts);
      const rows = await readOutputRows(path.join(root, result.outputKey));
      // By microseconds the two tie and the later input wins: A would keep its older version.
      assert.deepEqual(Object.fromEntries(rows.map((r) => [r.id, r.scene_1_id])), { A: 'A-newer', B: 'B-newer' });
      assertSameRows(rows, expected, 'oracle');
    });
  }

  test('an updated that is not a timestamp (text, which compares alphabetically) fails the bucket naming the file, before any path is chosen; one without any value compacts', async () => {
    for (const opts of [{}, { smallBucketBytes: 0 }]) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      // Every input as text (a mix with timestamps is a type conflict, refused as such).
      await rewriteUpdated(root, inputs, `strftime(updated, '%Y-%m-%dT%H:%M:%S+02:00')`, `text-${Object.keys(opts).length}`);
      await assert.rejects(compact(store, inputs, opts), (err: unknown) => {
        assert.ok(err instanceof BadBucketDataError, String(err));
        assert.equal(err.message, `column 'updated' of ${inputs[0]!.key} is VARCHAR, not a timestamp: the latest version of an id cannot be told by it`);
        return true;
      });
      assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'nothing deleted, no output');
    }
    for (const opts of [{}, { smallBucketBytes: 0 }]) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      await rewriteUpdated(root, inputs, 'CAST(NULL AS INTEGER)', `none-${Object.keys(opts).length}`);
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      const { result } = await compact(store, inputs, opts);
      assertSameRows(await readOutputRows(path.join(root, result.outputKey)), expected, 'no updated anywhere: the later input wins');
    }
  });

  test('a value that overflows when the union widens its column (year 9999 in milliseconds beside nanoseconds) fails the bucket at once naming the file and column, on every write path', async () => {
    for (const writePath of WRITE_PATHS) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, dedupParts());
      const tag = `overflow-${writePath.name.length}`;
      await rewriteUpdated(root, inputs.slice(0, 1), `'2022-01-01 00:00:00.000000600'::TIMESTAMP_NS`, `${tag}-ns`);
      await rewriteUpdated(root, inputs.slice(1), `CASE WHEN scene_1_id = 'A-p1' THEN '9999-06-01'::TIMESTAMP_MS ELSE updated::TIMESTAMP_MS END`, `${tag}-ms`);
      await assert.rejects(compact(store, inputs, writePath.opts), (err: unknown) => {
        assert.ok(err instanceof BadBucketDataError, `${writePath.name}: ${String(err)}`);
        assert.deepEqual(err.keys, [inputs[1]!.key]);
        assert.match(err.message, new RegExp(`^input ${inputs[1]!.key}: column 'updated' \\(TIMESTAMP\\) holds a value that does not fit the type the bucket's inputs together give it \\(TIMESTAMP_NS\\)`));
        return true;
      });
      assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'nothing deleted, no output');
    }
  });

  test('an integer column in one input and a double in others (pandas writes an int property as float64 where it is missing) compacts to DOUBLE on every write path; an integer a double cannot hold exactly fails the bucket naming the files', async () => {
    const mixed = (): PartDef[] =>
      dedupParts().map((part, i) =>
        i === 0 ? part : { ...part, rows: part.rows.map((r, j) => ({ ...r, percent_valid_pixels: j === 0 ? null : r.percent_valid_pixels })), opts: { ...part.opts, columnTypes: { percent_valid_pixels: 'DOUBLE' } } },
      );
    for (const writePath of WRITE_PATHS) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, mixed());
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      const { result } = await compact(store, inputs, writePath.opts);
      const out = path.join(root, result.outputKey);
      assertSameRows(await readOutputRows(out), expected, writePath.name);
      const [column] = await session.rows(`SELECT column_type FROM (DESCRIBE SELECT percent_valid_pixels FROM read_parquet(${sqlString(out)}))`);
      assert.equal(column?.column_type, 'DOUBLE', writePath.name);
    }
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, mixed());
    const first = path.join(root, inputs[0]!.key);
    const staged = path.join(scratchRoot, 'beyond-double.parquet');
    await fs.rename(first, staged);
    // 2^53 + 1: the nearest double is 2^53, another value.
    await session.exec(`COPY (SELECT * REPLACE (9007199254740993::BIGINT AS percent_valid_pixels) FROM read_parquet(${sqlString(staged)})) TO ${sqlString(first)} (FORMAT parquet)`);
    inputs[0]!.size = (await fs.stat(first)).size;
    await assert.rejects(compact(store, inputs), (err: unknown) => {
      assert.ok(err instanceof BadBucketDataError, String(err));
      assert.match(err.message, new RegExp(`^column 'percent_valid_pixels' has conflicting types across inputs: ${inputs[0]!.key} \\(BIGINT\\), ${inputs[1]!.key} \\(DOUBLE\\)`));
      return true;
    });
    assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'nothing deleted, no output');
  });

  test("decimals of one scale and different precisions (pyarrow infers the precision from each batch's values) compact to the larger precision on every write path, values exact; another scale fails the bucket naming the files", async () => {
    const decimals = (first: string, others: string): PartDef[] =>
      dedupParts().map((part, i) => ({ ...part, opts: { ...part.opts, columnTypes: { percent_valid_pixels: i === 0 ? first : others } } }));
    for (const writePath of WRITE_PATHS) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, decimals('DECIMAL(6,2)', 'DECIMAL(9,2)'));
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      const { result } = await compact(store, inputs, writePath.opts);
      const out = path.join(root, result.outputKey);
      assertSameRows(await readOutputRows(out), expected, writePath.name);
      const [column] = await session.rows(`SELECT column_type FROM (DESCRIBE SELECT percent_valid_pixels FROM read_parquet(${sqlString(out)}))`);
      assert.equal(column?.column_type, 'DECIMAL(9,2)', writePath.name);
    }
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, decimals('DECIMAL(6,2)', 'DECIMAL(9,4)'));
    await assert.rejects(compact(store, inputs), (err: unknown) => {
      assert.ok(err instanceof BadBucketDataError, String(err));
      assert.match(err.message, /^column 'percent_valid_pixels' has conflicting types across inputs: .*\(DECIMAL\(6,2\)\).*\(DECIMAL\(9,4\)\)/);
      return true;
    });
    assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'nothing deleted, no output');
  });

  test('a naive timestamp in one input beside zoned ones (a writer that dropped the zone) is read as UTC and written zoned on every write path; a nanosecond one still fails the bucket', async () => {
    const naiveFirst = (type: string): PartDef[] => dedupParts().map((part, i) => (i === 0 ? { ...part, opts: { ...part.opts, columnTypes: { updated: type, datetime: type } } } : part));
    for (const writePath of WRITE_PATHS) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, naiveFirst('TIMESTAMP'));
      const [naive] = await session.rows(`SELECT column_type FROM (DESCRIBE SELECT updated FROM read_parquet(${sqlString(path.join(root, inputs[0]!.key))}))`);
      assert.equal(naive?.column_type, 'TIMESTAMP', 'the first input is naive');
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      const { result } = await compact(store, inputs, writePath.opts);
      const out = path.join(root, result.outputKey);
      assertSameRows(await readOutputRows(out), expected, writePath.name);
      const types = new Map((await session.rows(`DESCRIBE SELECT datetime, updated FROM read_parquet(${sqlString(out)})`)).map((r) => [String(r.column_name), String(r.column_type)]));
      assert.deepEqual([types.get('datetime'), types.get('updated')], ['TIMESTAMP WITH TIME ZONE', 'TIMESTAMP WITH TIME ZONE'], writePath.name);
      // The naive 2022-01-05 of C-p0 is that instant in UTC: it ties C-p1's, and the later file wins the tie.
      const [c] = await session.rows(`SELECT scene_1_id, updated::VARCHAR AS u FROM read_parquet(${sqlString(out)}) WHERE id = 'C'`);
      assert.deepEqual([c?.scene_1_id, c?.u], ['C-p1', '2022-01-05 00:00:00+00'], writePath.name);
    }
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, naiveFirst('TIMESTAMP_NS'));
    await assert.rejects(compact(store, inputs), (err: unknown) => err instanceof BadBucketDataError && /column '(updated|datetime)' has conflicting types across inputs/.test(err.message));
    assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'nothing deleted, no output');
  });

  test("numbers the table types otherwise (the plan's tableTypes) are written as the table's type on every write path: whole floats in a long column as BIGINT, integers in a double column as DOUBLE; a fraction, or an integer beyond 2^53, keeps the union's type", async () => {
    // As pandas writes them: percent_valid_pixels as float64 where some item lacks it, latitude as int64 in a batch of whole degrees.
    const retyped = (): PartDef[] =>
      dedupParts().map((part) => ({
        ...part,
        rows: part.rows.map((r, j) => ({ ...r, percent_valid_pixels: j === 0 ? null : r.percent_valid_pixels })),
        opts: { ...part.opts, columnTypes: { percent_valid_pixels: 'DOUBLE', latitude: 'BIGINT' } },
      }));
    const tableTypes = { percent_valid_pixels: 'long', latitude: 'double', longitude: 'double', platform: 'long' } as const;
    const typesOf = async (out: string) =>
      new Map((await session.rows(`DESCRIBE SELECT percent_valid_pixels, latitude, longitude, platform FROM read_parquet(${sqlString(out)})`)).map((r) => [String(r.column_name), String(r.column_type)]));
    for (const writePath of WRITE_PATHS) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, retyped());
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      const { result } = await compact(store, inputs, { ...writePath.opts, tableTypes });
      const out = path.join(root, result.outputKey);
      assertSameRows(await readOutputRows(out), expected, writePath.name);
      const types = await typesOf(out);
      assert.deepEqual(
        [types.get('percent_valid_pixels'), types.get('latitude'), types.get('longitude'), types.get('platform')],
        ['BIGINT', 'DOUBLE', 'DOUBLE', 'VARCHAR'],
        `${writePath.name}: a string stays a string whatever the table says`,
      );
    }
    const { root, store } = await newWarehouse();
    const { result: plain } = await compact(store, await writeBucket(root, retyped()));
    const types = await typesOf(path.join(root, plain.outputKey));
    assert.deepEqual([types.get('percent_valid_pixels'), types.get('latitude')], ['DOUBLE', 'BIGINT'], 'without the table types, the union types');
    for (const [column, value, union] of [
      ['percent_valid_pixels', '12.5::DOUBLE', 'DOUBLE'],
      ['latitude', '9007199254740993::BIGINT', 'BIGINT'],
    ] as const) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, retyped());
      const first = path.join(root, inputs[0]!.key);
      const staged = path.join(scratchRoot, `keeps-${column}.parquet`);
      await fs.rename(first, staged);
      await session.exec(`COPY (SELECT * REPLACE (${value} AS ${column}) FROM read_parquet(${sqlString(staged)})) TO ${sqlString(first)} (FORMAT parquet)`);
      inputs[0]!.size = (await fs.stat(first)).size;
      const { result } = await compact(store, inputs, { tableTypes });
      assert.equal((await typesOf(path.join(root, result.outputKey))).get(column), union, `${column} holding ${value}`);
    }
  });

  test("a column the table renamed (the plan's tableRenames), its old name in some inputs and its new one in others, is written once under the new name on every write path; two names of different types, or of a key column, are refused, nothing deleted", async () => {
    // Older ingest still writes scene_1_id; the table renamed it to scene_id, which newer ingest writes.
    const renamed = (): PartDef[] =>
      dedupParts().map((part, i) =>
        i === 0 ? part : { ...part, opts: { ...part.opts, omitColumns: [...(part.opts?.omitColumns ?? []), 'scene_1_id'], extraColumns: { scene_id: 'scene_1_id' } } },
      );
    const tableRenames = { scene_1_id: 'scene_id' };
    // The plan's renames from the name mapping: not an old name a column has now in another case (pyiceberg allows CC beside cc).
    const schema: IcebergSchema = { type: 'struct', 'schema-id': 0, fields: [{ id: 4, name: 'CC', required: false, type: 'string' }, { id: 5, name: 'cloud', required: false, type: 'string' }] };
    assert.deepEqual(tableRenames_(schema, JSON.stringify([{ 'field-id': 4, names: ['CC'] }, { 'field-id': 5, names: ['cc', 'cloud', 'clouds'] }])), { clouds: 'cloud' });
    for (const writePath of WRITE_PATHS) {
      const { root, store } = await newWarehouse();
      const inputs = await writeBucket(root, renamed());
      const expected = (await expectedBucketRows(inputs.map((i) => path.join(root, i.key)))).map((row) => {
        const { scene_1_id: old, ...rest } = row;
        return { ...rest, scene_id: rest.scene_id ?? old };
      });
      const { result } = await compact(store, inputs, { ...writePath.opts, tableRenames });
      const rows = await readOutputRows(path.join(root, result.outputKey));
      assert.ok(!Object.keys(rows[0]!).includes('scene_1_id'), `${writePath.name}: the old name is not written`);
      assertSameRows(rows, expected, writePath.name);
      assert.equal(rows.find((r) => r.id === 'D')!.scene_id, 'D-p0', `${writePath.name}: the winner from a file of the old name keeps its value`);
    }
    const { root, store } = await newWarehouse();
    const parts = renamed();
    parts[0]!.opts = { ...parts[0]!.opts, columnTypes: { scene_1_id: 'BLOB' } };
    const inputs = await writeBucket(root, parts);
    await assert.rejects(
      compact(store, inputs, { tableRenames }),
      (err: unknown) => err instanceof BadBucketDataError && /column 'scene_id' was renamed.*types that do not widen into one/.test(err.message) && err.message.includes(inputs[0]!.key),
    );
    assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'nothing deleted, no output');
    // Renamed twice: the mapping keeps two old names, each file has one of the three.
    const twice = { scene_1_id: 'scene_c', scene_b: 'scene_c' };
    const threeNames = (names: readonly string[]): PartDef[] =>
      dedupParts().map((part, i) =>
        names[i] === 'scene_1_id' ? part : { ...part, opts: { ...part.opts, omitColumns: [...(part.opts?.omitColumns ?? []), 'scene_1_id'], extraColumns: { [names[i]!]: 'scene_1_id' } } },
      );
    for (const [names, target] of [
      [['scene_1_id', 'scene_b', 'scene_c'], 'scene_c'],
      [['scene_1_id', 'scene_b', 'scene_b'], 'scene_1_id'],
    ] as const) {
      for (const writePath of WRITE_PATHS) {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, threeNames(names));
        const { result } = await compact(store, inputs, { ...writePath.opts, tableRenames: twice });
        const rows = await readOutputRows(path.join(root, result.outputKey));
        const columns = Object.keys(rows[0]!).filter((c) => ['scene_1_id', 'scene_b', 'scene_c'].includes(c));
        assert.deepEqual(columns, [target], `${writePath.name}, files of ${names.join('/')}: one column`);
        assert.deepEqual(new Set(rows.map((r) => r[target])).has(null), false, `${writePath.name}: every row valued`);
        assert.equal(rows.find((r) => r.id === 'D')![target], 'D-p0', `${writePath.name}: a winner of the first name keeps its value`);
      }
    }
    // Integers of different widths under the two names: written as the wider (or as the table types the column), on the small and the ranked paths.
    for (const writePath of WRITE_PATHS.slice(0, 2)) {
      const parts = dedupParts().map((part, i): PartDef => {
        const extraColumns: Record<string, string> = i === 0 ? { n_a: 'CAST(length(scene_1_id) AS INTEGER)' } : { n_b: 'CAST(length(scene_1_id) AS BIGINT)' };
        return { ...part, opts: { ...part.opts, extraColumns } };
      });
      for (const [tableTypes, written] of [[{}, 'BIGINT'], [{ n_b: 'double' }, 'DOUBLE']] as const) {
        const { root, store } = await newWarehouse();
        const inputs = await writeBucket(root, parts);
        const { result } = await compact(store, inputs, { ...writePath.opts, tableRenames: { n_a: 'n_b' }, tableTypes });
        const out = path.join(root, result.outputKey);
        const described = new Map((await session.rows(`DESCRIBE SELECT * FROM read_parquet(${sqlString(out)})`)).map((r) => [String(r.column_name), String(r.column_type)]));
        assert.deepEqual([described.get('n_b'), described.has('n_a')], [written, false], `${writePath.name}, table types ${JSON.stringify(tableTypes)}`);
      }
      // A struct under both names with a field no input gives a value (left out of each name's type): merged too.
      const { root: root2, store: store2 } = await newWarehouse();
      const structs = dedupParts().map((part, i) => ({
        ...part,
        opts: { ...part.opts, extraColumns: { [i === 0 ? 'cloud_a' : 'cloud_b']: "{'v': scene_1_id, 'n': NULL::INTEGER}" } },
      }));
      const structInputs = await writeBucket(root2, structs);
      const { result: merged } = await compact(store2, structInputs, { ...writePath.opts, tableRenames: { cloud_a: 'cloud_b' } });
      const mergedRows = await readOutputRows(path.join(root2, merged.outputKey));
      assert.ok(!Object.keys(mergedRows[0]!).includes('cloud_a') && mergedRows.every((r) => r.cloud_b !== null), `${writePath.name}: the struct under one name`);
    }
    // A key column renamed (or renamed back, its other name an alias): winners and order are chosen by it, so no merge.
    for (const [column, other, renames] of [
      ['updated', 'upd', { updated: 'upd' }],
      ['datetime', 'dt', { dt: 'datetime' }],
      ['geometry', 'geom', { geometry: 'geom' }],
    ] as const) {
      const { root, store } = await newWarehouse();
      const parts = dedupParts().map((part, i) =>
        i === 0 ? part : { ...part, opts: { ...part.opts, omitColumns: [...(part.opts?.omitColumns ?? []), column], extraColumns: { [other]: column } } },
      );
      const inputs = await writeBucket(root, parts);
      await assert.rejects(
        compact(store, inputs, { tableRenames: renames }),
        (err: unknown) =>
          err instanceof BadBucketDataError && new RegExp(`(deduplicates and sorts by|GeoParquet metadata names) '${column}'.*does not merge a rename of it`).test(err.message),
      );
      assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), `${column}: nothing deleted, no output`);
    }
  });

  test('parseDuckType reads the nested types DESCRIBE prints: quoted field names, lists, arrays, maps, types with spaces or arguments', async () => {
    const [described] = await session.rows(
      `DESCRIBE SELECT {'raster:bands': [{'unit': 'm', 'a"b': 1.5::DECIMAL(18,3)}], 'Weird Name': MAP {'k': now()}, 'arr': [1, 2]::INTEGER[2], 'e': 'x'::ENUM('x', 'y,z')} AS s`,
    );
    const scalar = (name: string) => ({ kind: 'scalar', name });
    assert.deepEqual(parseDuckType(String(described!.column_type)), {
      kind: 'struct',
      fields: [
        { name: 'raster:bands', type: { kind: 'list', element: { kind: 'struct', fields: [{ name: 'unit', type: scalar('VARCHAR') }, { name: 'a"b', type: scalar('DECIMAL(18,3)') }] } } },
        { name: 'Weird Name', type: { kind: 'map', key: scalar('VARCHAR'), value: scalar('TIMESTAMP WITH TIME ZONE') } },
        { name: 'arr', type: { kind: 'array', element: scalar('INTEGER'), size: '2' } },
        { name: 'e', type: scalar("ENUM('x', 'y,z')") },
      ],
    });
    assert.throws(() => parseDuckType('STRUCT(a VARCHAR'), /expected '\)' at 16 in DuckDB type STRUCT\(a VARCHAR/);
    // Text it does not know is compared whole, as before, rather than failing the bucket.
    assert.equal(tryParseDuckType('STRUCT(a VARCHAR'), undefined);
  });

  /** The part with links and assets as nested columns instead of the contract's JSON strings. */
  const nestedOpts = (part: PartDef, columns: Record<string, string>): PartFileOptions => ({
    ...part.opts,
    omitColumns: [...(part.opts?.omitColumns ?? []), 'links', 'assets'],
    extraColumns: columns,
  });

  /**
   * dedupParts compacted with each part's nested columns (nestedOpts): the output's types and its rows in file
   * order, nested values parsed from JSON, after checking that the winners come in output order.
   */
  const compactNested = async (writePath: (typeof WRITE_PATHS)[number], nested: readonly Record<string, string>[]) => {
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts().map((part, i) => ({ ...part, opts: nestedOpts(part, nested[i]!) })));
    const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
    const { result } = await compact(store, inputs, writePath.opts);
    const out = path.join(root, result.outputKey);
    const names = Object.keys(nested[0]!);
    const rows = await session.rows(
      `SELECT id, scene_1_id, ${names.map((n) => `to_json(${sqlIdent(n)})::VARCHAR AS ${sqlIdent(n)}`).join(', ')}
       FROM read_parquet(${sqlString(out)}, file_row_number = true) ORDER BY file_row_number`,
    );
    assert.deepEqual(rows.map((r) => r.id), expected.map((r) => r.id), `${writePath.name}: the winners in output order`);
    const described = await session.rows(`DESCRIBE SELECT ${names.map(sqlIdent).join(', ')} FROM read_parquet(${sqlString(out)})`);
    return {
      types: new Map(described.map((r) => [String(r.column_name), String(r.column_type)])),
      rows: rows.map((r) => ({ id: String(r.id), marker: String(r.scene_1_id), values: Object.fromEntries(names.map((n) => [n, JSON.parse(String(r[n]))])) })),
    };
  };

  test('nested columns as STAC producers write them (struct fields in another order, an asset more, a wider integer, an empty list typed INTEGER[]) compact by field name on every write path', async () => {
    // Each part writes links and assets as a STAC GeoParquet writer of its kind would; values follow scene_1_id (the row's marker).
    const nested: Record<string, string>[] = [
      { links: `[{'rel': 'self', 'href': scene_1_id}]`, assets: `{'B01': {'href': scene_1_id, 'n': 1::INTEGER}}` },
      { links: `[{'href': scene_1_id, 'rel': 'self', 'title': 't'}]`, assets: `{'AOT': {'href': scene_1_id || '-aot', 'n': 2::BIGINT}, 'B01': {'n': 3::BIGINT, 'href': scene_1_id}}` },
      { links: `[]::INTEGER[]`, assets: `{'B01': {'href': scene_1_id, 'n': 1::INTEGER}}` },
    ];
    const expectedNested = (marker: string) => {
      const part = Number(/-p(\d)/.exec(marker)![1]);
      const b01 = { href: marker, n: part === 1 ? 3 : 1 };
      return {
        links: part === 2 ? [] : [{ rel: 'self', href: marker, title: part === 1 ? 't' : null }],
        assets: { B01: b01, AOT: part === 1 ? { href: `${marker}-aot`, n: 2 } : null },
      };
    };
    for (const writePath of WRITE_PATHS) {
      const { types, rows } = await compactNested(writePath, nested);
      for (const r of rows) assert.deepEqual(r.values, expectedNested(r.marker), `${writePath.name}: ${r.id}`);
      assert.equal(types.get('links'), 'STRUCT(rel VARCHAR, href VARCHAR, title VARCHAR)[]', writePath.name);
      assert.equal(types.get('assets'), 'STRUCT(B01 STRUCT(href VARCHAR, n BIGINT), AOT STRUCT(href VARCHAR, n BIGINT))', writePath.name);
    }
  });

  test('a struct field without a value in any input (an all-null INTEGER, as DuckDB reads pyarrow\'s Null type) is left out of the output on every write path; one with a value somewhere is kept', async () => {
    // A Landsat band's `unit` is None in every item: pyarrow writes the Null type, which DuckDB reads (and used to write back) as INTEGER.
    const nested = [
      { assets: `{'B01': {'href': scene_1_id, 'unit': NULL::INTEGER, 'scale': NULL::INTEGER, 'bands': [{'name': 'b', 'nodata': NULL::INTEGER}]}}` },
      { assets: `{'B01': {'href': scene_1_id, 'unit': NULL::INTEGER, 'scale': 'x', 'bands': [{'name': 'b', 'nodata': NULL::INTEGER}]}}` },
      { assets: `{'B01': {'href': scene_1_id, 'unit': NULL::INTEGER, 'scale': NULL::INTEGER, 'bands': []}}` },
    ];
    for (const writePath of WRITE_PATHS) {
      const { types, rows } = await compactNested(writePath, nested);
      assert.equal(types.get('assets'), 'STRUCT(B01 STRUCT(href VARCHAR, scale VARCHAR, bands STRUCT("name" VARCHAR)[]))', writePath.name);
      for (const r of rows) {
        const part = Number(/-p(\d)/.exec(r.marker)![1]);
        assert.deepEqual(r.values, { assets: { B01: { href: r.marker, scale: part === 1 ? 'x' : null, bands: part === 2 ? [] : [{ name: 'b' }] } } }, `${writePath.name}: ${r.id}`);
      }
    }
  });

  test("a one-file bucket whose struct fields have pyarrow's Null type (the planner compacts it below the threshold) drops those fields, keeping the rest", async () => {
    const { root, store } = await newWarehouse();
    const part = dedupParts()[0]!;
    const [input] = await writeBucket(root, [{ ...part, opts: nestedOpts(part, { assets: `{'B01': {'href': scene_1_id, 'unit': 'm', 'bands': [{'name': 'b', 'nodata': 0}]}}` }) }]);
    const file = path.join(root, input!.key);
    await makeColumnNullTyped(file, 'assets.B01.unit');
    await makeColumnNullTyped(file, 'assets.B01.bands.element.nodata');
    input!.size = (await fs.stat(file)).size;
    const { result } = await compact(store, [input!]);
    const out = path.join(root, result.outputKey);
    const [described] = await session.rows(`SELECT column_type FROM (DESCRIBE SELECT assets FROM read_parquet(${sqlString(out)}))`);
    assert.equal(described?.column_type, 'STRUCT(B01 STRUCT(href VARCHAR, bands STRUCT("name" VARCHAR)[]))');
    const rows = await session.rows(`SELECT scene_1_id, to_json(assets)::VARCHAR AS assets FROM read_parquet(${sqlString(out)})`);
    assert.equal(rows.length, result.rowsOut);
    for (const r of rows) assert.deepEqual(JSON.parse(String(r.assets)), { B01: { href: r.scene_1_id, bands: [{ name: 'b' }] } });
  });

  test("a struct field of pyarrow's Null type is known to hold no value from the footer, without reading the column; an all-null INTEGER field is read", async () => {
    const { root } = await newWarehouse();
    const parts = dedupParts().slice(0, 2);
    const assets = `{'B01': {'href': scene_1_id, 'unit': NULL::INTEGER, 'scale': NULL::INTEGER}}`;
    const inputs = await writeBucket(root, parts.map((part) => ({ ...part, opts: nestedOpts(part, { assets }) })));
    // The first input as pyarrow writes it: unit of the Null type. The second keeps DuckDB's all-null INTEGERs.
    await makeColumnNullTyped(path.join(root, inputs[0]!.key), 'assets.B01.unit');
    const local = await Promise.all(inputs.map(async (i) => ({ key: i.key, path: path.join(root, i.key), size: (await fs.stat(path.join(root, i.key))).size })));
    const schemas = await Promise.all(local.map((i) => readInputSchema(session, i)));
    const statements: string[] = [];
    const counting = Object.assign(Object.create(session) as DuckSession, {
      rows: (sql: string) => (statements.push(sql), session.rows(sql)),
    });
    const output = await valuelessParts(counting, local, schemas);
    assert.deepEqual([...output.casts], [['assets', 'STRUCT("B01" STRUCT("href" VARCHAR))']]);
    const reads = (file: string, field: string) => statements.filter((sql) => sql.includes(sqlString(file)) && sql.includes(`struct_extract(v, '${field}')`)).length;
    assert.deepEqual([reads(local[0]!.path, 'unit'), reads(local[1]!.path, 'unit'), reads(local[0]!.path, 'scale')], [0, 1, 1]);
  });

  test('a nested field of another type with values, or spelled in another case, still fails the bucket naming the files', async () => {
    for (const [second, column] of [
      [{ assets: `{'B01': {'href': 5}}` }, 'assets'],
      [{ links: `[{'rel': 'self', 'Href': scene_1_id}]` }, 'links'],
    ] as const) {
      const { root, store } = await newWarehouse();
      const first = { links: `[{'rel': 'self', 'href': scene_1_id}]`, assets: `{'B01': {'href': scene_1_id}}` };
      const parts = dedupParts().slice(0, 2);
      parts[0]!.opts = nestedOpts(parts[0]!, first);
      parts[1]!.opts = nestedOpts(parts[1]!, { ...first, ...second });
      const inputs = await writeBucket(root, parts);
      await assert.rejects(compact(store, inputs), (err: unknown) => {
        assert.ok(err instanceof BadBucketDataError, String(err));
        assert.match(err.message, new RegExp(`^column '${column}' has conflicting types across inputs: ${inputs[0]!.key} \\(STRUCT.*\\), ${inputs[1]!.key} \\(STRUCT`));
        return true;
      });
      assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'nothing deleted, no output');
    }
  });

  test('an input the filesystem refuses to delete (immutable) fails the bucket at once as denied, saying the output is published and how many inputs went', async (t) => {
    // chattr needs root and a filesystem with attributes; a read-only directory would also refuse the output.
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts());
    const last = path.join(root, inputs[inputs.length - 1]!.key);
    const immutable = spawnSync('chattr', ['+i', last]);
    if (immutable.status !== 0) return t.skip(`chattr +i is not available here: ${String(immutable.stderr || immutable.error)}`);
    try {
      await assert.rejects(compact(store, inputs), (err: unknown) => {
        assert.ok(err instanceof StorageError && err.kind === 'denied', String(err));
        assert.match(err.message, new RegExp(`is published, but deleting its inputs was refused after ${inputs.length - 1} of ${inputs.length}; the rest stay`));
        assert.match(err.message, new RegExp(`cannot delete ${last.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: EPERM`));
        return true;
      });
    } finally {
      spawnSync('chattr', ['-i', last]);
    }
    const left = await keysUnder(root);
    assert.equal(left.length, 2, `the output and the undeletable input: ${left.join(', ')}`);
    assert.ok(left.includes(path.basename(last)));
  });

  /** A heavy part (writeHeavyPart; ids never wrap) in the test bucket, as a planned input. */
  async function heavyInput(root: string, name: string, opts: Omit<HeavyPartOptions, 'idModulo' | 'session'>): Promise<PlannedFile> {
    const key = `${PREFIX}/${name}.parquet`;
    await writeHeavyPart(path.join(root, key), { idModulo: 1e9, session, ...opts });
    return { key, size: (await fs.stat(path.join(root, key))).size };
  }

  /** Parts of 25k rows of ~2 KB each, ids overlapping by 20% between neighbouring parts. */
  async function writeHeavyParts(root: string, parts: number): Promise<PlannedFile[]> {
    const inputs: PlannedFile[] = [];
    for (let f = 0; f < parts; f++) {
      inputs.push(await heavyInput(root, `part_heavy_${f}`, { rows: 25_000, firstId: f * 20_000, stringBytes: 2048, updatedOffsetSeconds: f * 100 }));
    }
    return inputs;
  }

  /** Compaction options of the weekly row-group tests: ranked, out of core, output row groups of ~3,500 wide rows. */
  const WEEKLY_RANKED = { memoryLimitMb: 64, smallBucketBytes: 0, sortBudgetBytes: 5 * 1024 * 1024 };

  test('running out of DuckDB memory fails the bucket naming it and the budget, and deletes nothing', async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeHeavyParts(root, 2);
    // ~100 MB of wide rows against a 20 MB limit: not even ranges of a few hundred rows fit.
    await assert.rejects(
      compact(store, inputs, { memoryLimitMb: 20, threads: 2, smallBucketBytes: Number.MAX_SAFE_INTEGER }),
      (err: Error) => {
        assert.ok(err instanceof BucketMemoryError, `${err.name}: ${err.message}`);
        assert.match(err.message, new RegExp(`bucket ${PREFIX}: DuckDB ran out of its 20 MB memory limit`));
        assert.match(err.message, /2 input\(s\) of \d+ MB; nothing was deleted\. Give the workers a larger --memory-budget-mb/);
        assert.match(err.message, /DuckDB said: Out of Memory Error/);
        // Row groups of ~4 MB, far below the limit: not what failed, so not named.
        assert.doesNotMatch(err.message, /row group/);
        return true;
      },
    );
    assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'inputs kept, no output');
  });

  test('an out-of-memory failure of a few rows of many columns says the columns need the memory and the budget they need (smaller ranges cannot help)', async () => {
    const { root, store } = await newWarehouse();
    const extra = Array.from({ length: 1000 }, (_, i) => `'v' || i || '_${i}' AS "p_${i}"`).join(', ');
    const inputs: PlannedFile[] = [];
    await fs.mkdir(path.join(root, PREFIX), { recursive: true });
    for (let f = 0; f < 2; f++) {
      const key = `${PREFIX}/part_wide_${f}.parquet`;
      await session.exec(
        `COPY (SELECT 'id' || (i % 3) AS id, TIMESTAMPTZ '2022-01-01' + INTERVAL (i + ${f * 10}) MINUTE AS updated, TIMESTAMPTZ '2022-01-01' AS datetime,
                      'p' AS platform, ${sqlString(CELL)} AS grid_partition, ${extra} FROM range(4) t(i)) TO ${sqlString(path.join(root, key))} (FORMAT parquet)`,
      );
      inputs.push({ key, size: (await fs.stat(path.join(root, key))).size });
    }
    await assert.rejects(compact(store, inputs, { memoryLimitMb: 128, threads: 2 }), (err: Error) => {
      assert.ok(err instanceof BucketMemoryError, `${err.name}: ${err.message}`);
      assert.match(err.message, /Its rows have 1005 columns, and DuckDB's memory grows with the columns whatever the rows: give a budget of about 768 MB \(0\.75 MB per column\)/);
      return true;
    });
    assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'inputs kept, no output');
    assert.doesNotMatch(new BucketMemoryError(PREFIX, 512, 2, 1, 'Out of Memory Error', undefined, 1005).message, /columns/, 'not said when the budget is that already');
  });

  test('an out-of-memory failure names the largest input row group when it holds a quarter of the limit or more (DuckDB decodes it whole)', async () => {
    const root = await makeTempDir('ec-row-groups');
    const file = (name: string) => path.join(root, name);
    // 3,000 rows of ~1 KB: in row groups of 1,000 rows (~1 MB each), and in one row group (~3 MB).
    for (const [name, rowGroupSize] of [['small.parquet', 1000], ['one-group.parquet', 100_000]] as const) {
      await session.exec(
        `COPY (SELECT i AS id, repeat(md5(i::VARCHAR), 32) AS assets FROM range(3000) t(i))
         TO ${sqlString(file(name))} (FORMAT parquet, ROW_GROUP_SIZE ${rowGroupSize})`,
      );
    }
    const inputs = ['small.parquet', 'one-group.parquet'].map((name) => ({ key: `${PREFIX}/${name}`, path: file(name), size: 0 }));
    const largest = await largestRowGroup(session, inputs);
    assert.equal(largest?.key, `${PREFIX}/one-group.parquet`);
    assert.equal(largest?.rowGroup, 0);
    assert.ok(largest!.bytes > 3000 * 1024 && largest!.bytes < 4 * 1024 * 1024, `${largest!.bytes} bytes`);
    // Named at the largest limit of which it is a quarter or more, not at the next one.
    const limitMb = Math.floor((largest!.bytes * 4) / (1024 * 1024));
    const named = new BucketMemoryError(PREFIX, limitMb, 2, 1, 'Out of Memory Error', largest);
    assert.equal(largest?.rows, 3000);
    // An eighth of the limit in each new row group: at most half of the 3,000 rows of one that holds a quarter of it.
    const advised = Math.floor((3000 * limitMb * 1024 * 1024) / 8 / largest!.bytes);
    assert.ok(advised >= 1000 && advised <= 1500, `${advised} rows`);
    assert.match(
      named.message,
      new RegExp(
        `compact again: the next run plans the bucket anew\\. Its largest input row group \\(${PREFIX}/one-group\\.parquet, row group 0\\) holds 3 MB uncompressed, which DuckDB decodes whole \\(3000 row\\(s\\)\\): ` +
          `rewrite that file with smaller row groups \\(pyarrow's row_group_size=${advised} or fewer\\)`,
      ),
    );
    assert.match(named.message, /DuckDB said: Out of Memory Error$/);
    assert.doesNotMatch(new BucketMemoryError(PREFIX, limitMb + 1, 2, 1, 'Out of Memory Error', largest).message, /row group/);
  });

  // Mid-statement, and between two statements (on the next tick, as DuckDB starts the one after the
  // beat: an interrupt that reaches it before the statement has begun is lost unless repeated).
  const STOP_TIMINGS: { name: string; schedule: (stop: () => void) => void }[] = [
    { name: 'inside the statement in flight', schedule: (stop) => setTimeout(stop, 150) },
    { name: 'as the next statement starts', schedule: (stop) => process.nextTick(stop) },
  ];
  for (const timing of STOP_TIMINGS) {
    test(`a stop ${timing.name} ends the attempt there: it rejects with its reason, publishes and deletes nothing, and its session is not reused`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeHeavyParts(root, 4);
      const pool = new DuckSessionPool(path.join(scratchRoot, `stop-pool-${timing.name.length}`), 2);
      const controller = new AbortController();
      const reason = new Error('stopped by the test');
      const phasesAfterStop: string[] = [];
      let stopped = false;
      let writing = false;
      try {
        await assert.rejects(
          compact(store, inputs, {
            sessions: pool,
            threads: 2,
            memoryLimitMb: 1024,
            // One statement dedups, sorts and writes the 100,000 wide rows (about half a second).
            smallBucketBytes: Number.MAX_SAFE_INTEGER,
            signal: controller.signal,
            heartbeat: (p) => {
              if (stopped) phasesAfterStop.push(p.phase);
              else if (p.phase === 'write' && !writing) {
                writing = true;
                timing.schedule(() => {
                  stopped = true;
                  controller.abort(reason);
                });
              }
            },
          }),
          (err: unknown) => err === reason,
        );
        // Without the interruption the statement runs to its end and the next phase ('verify') is announced.
        assert.deepEqual(phasesAfterStop, [], 'no phase after the stop: the write was interrupted, not finished');
        assert.equal(pool.idleCount, 0, 'the interrupted session was closed, not pooled');
        assert.deepEqual(await keysUnder(root), inputs.map((i) => path.basename(i.key)).sort(), 'inputs kept, no output, no temporary file');

        const { result } = await compact(store, inputs, { sessions: pool, threads: 2, memoryLimitMb: 1024, smallBucketBytes: Number.MAX_SAFE_INTEGER });
        assert.equal(result.rowsOut, 85_000, 'the next attempt compacts the bucket');
      } finally {
        await pool.close();
      }
    });
  }

  test('a stop after the deletes are announced is not honoured: the attempt finishes and reports the bucket', async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeBucket(root, dedupParts());
    const controller = new AbortController();
    const { result } = await compact(store, inputs, {
      signal: controller.signal,
      heartbeat: (p) => {
        if (p.phase === 'delete') controller.abort(new Error('stopped by the test'));
      },
    });
    assert.ok(controller.signal.aborted);
    assert.equal(result.outcome, 'compacted');
    assert.deepEqual(await keysUnder(root), [path.basename(result.outputKey)], 'inputs deleted, output kept');
  });

  test("weekly: last week's compacted file is read by slices, only the new ingest is scattered", async () => {
    const { root, store } = await newWarehouse();
    const part = (name: string, firstId: number, updatedOffsetSeconds: number) =>
      heavyInput(root, name, { rows: 25_000, firstId, stringBytes: 512, updatedOffsetSeconds });
    // Last week: two parts, ids 0..44999 (5,000 in both).
    const week1 = [await part('week1_a', 0, 0), await part('week1_b', 20_000, 100)];
    const { result: last } = await compact(store, week1, { planId: 'week1' });
    assert.equal(last.rowsOut, 45_000);
    // This week: ids 40000..64999, of which 40000..44999 update last week's items (later `updated`).
    const inputs = [{ key: last.outputKey, size: last.bytesOut }, await part('week2', 40_000, 1_000)];
    const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));

    let chunks = 0;
    const { result, presorted } = await compact(store, inputs, {
      planId: 'week2',
      smallBucketBytes: 0,
      // Ranges of a few thousand rows: a shuffled file's slices would each span nearly all of it.
      sortBudgetBytes: 5 * 1024 * 1024,
      heartbeat: (p) => void (chunks = Math.max(chunks, p.chunks ?? 0)),
    });
    assert.equal(presorted, 1, "last week's output is read by slices, the new part is scattered");
    assert.ok(chunks > 4, `written in ranges (${chunks})`);
    assert.equal(result.rowsIn, 70_000);
    assert.equal(result.rowsOut, 65_000);
    assertSameRows(await readOutputRows(path.join(root, result.outputKey)), expected, 'oracle');
  });

  test("weekly, ingest clustered in time: last week's row groups that nothing changed in are copied as they are", async () => {
    const { root, store } = await newWarehouse();
    const part = (name: string, rows: number, firstId: number, updatedOffsetSeconds: number, dates?: { from: string; span: number }) =>
      heavyInput(root, name, { rows, firstId, stringBytes: 2048, updatedOffsetSeconds, datetimeFrom: dates?.from, datetimeSpanSeconds: dates?.span });
    // Last week's 45,000 rows are a dozen row groups.
    const { result: last } = await compact(store, [await part('week1_a', 25_000, 0, 0), await part('week1_b', 25_000, 20_000, 100)], { ...WEEKLY_RANKED, planId: 'week1' });
    const lastFile = path.join(root, last.outputKey);
    const lastGroups = (await session.rows(`SELECT count(DISTINCT row_group_id) AS n FROM parquet_metadata(${sqlString(lastFile)})`))[0]!.n;
    assert.ok(Number(lastGroups) >= 8, `last week's output has ${lastGroups} row groups`);
    // This week: 3,000 new items of the year's last week (they sort to the end of each platform) and
    // newer versions of three old items (same place in the order): the row groups around them change.
    const inputs = [
      { key: last.outputKey, size: last.bytesOut },
      await part('week2_new', 3_000, 45_000, 1_000, { from: '2020-12-24 00:00:00+00', span: 7 * 86_400 }),
      await part('week2_updates', 3, 30_000, 2_000),
    ];
    const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
    let passthrough = { groups: 0, rows: 0 };
    const { result } = await compact(store, inputs, {
      ...WEEKLY_RANKED,
      planId: 'week2',
      heartbeat: (p) => void (p.passthroughRowGroups !== undefined && (passthrough = { groups: p.passthroughRowGroups, rows: p.passthroughRows ?? 0 })),
    });
    assert.equal(result.rowsIn, 45_000 + 3_003);
    assert.equal(result.rowsOut, 48_000);
    assert.ok(passthrough.groups > 0 && passthrough.rows >= 20_000, `row groups copied as they are: ${JSON.stringify(passthrough)}`);
    const out = path.join(root, result.outputKey);
    assertSameRows(await readOutputRows(out), expected, 'oracle');
    // Point lookups go through the copied statistics and bloom filters.
    for (const i of [0, 7, 29_999, 30_000, 30_001, 44_999, 45_000, 47_999]) {
      const [hit] = await session.rows(`SELECT count(*) AS n FROM read_parquet(${sqlString(out)}) WHERE id = 'heavy_${i}'`);
      assert.equal(Number(hit!.n), 1, `heavy_${i} found once`);
    }
  });

  test('weekly, a few items ingested at row-group boundaries week after week: small row groups do not pile up', async () => {
    const { root, store } = await newWarehouse();
    const opts = { memoryLimitMb: 64, smallBucketBytes: 0, sortBudgetBytes: 40 * 1024 * 1024 };
    const part = (name: string, rows: number, firstId: number, updatedOffsetSeconds: number) =>
      heavyInput(root, name, { rows, firstId, stringBytes: 2048, updatedOffsetSeconds });
    let { result: last } = await compact(store, [await part('week1_a', 25_000, 0, 0), await part('week1_b', 25_000, 20_000, 100)], { ...opts, planId: 'week1' });
    const groupRows = async (file: string) => (await parquetFacts(file)).rowGroupRows;
    const small = (groups: number[]) => groups.slice(0, -1).filter((n) => n < 500).length;
    const smallByWeek: number[] = [];
    for (const week of [2, 3, 4]) {
      const lastFile = path.join(root, last.outputKey);
      const groups = await groupRows(lastFile);
      // A new item right after the last row of three row groups (same platform and datetime, an id just above).
      const boundaries = [1, 4, 7].map((g) => groups.slice(0, g + 1).reduce((a, b) => a + b, 0) - 1);
      const ingest = `${PREFIX}/week${week}_new.parquet`;
      await session.exec(
        `COPY (SELECT * EXCLUDE (file_row_number) REPLACE (id || '~${week}' AS id, updated + INTERVAL 1 DAY AS updated)
               FROM read_parquet(${sqlString(lastFile)}, file_row_number = true, hive_partitioning = false) WHERE file_row_number IN (${boundaries.join(', ')}))
         TO ${sqlString(path.join(root, ingest))} (FORMAT parquet)`,
      );
      const inputs = [{ key: last.outputKey, size: last.bytesOut }, { key: ingest, size: (await fs.stat(path.join(root, ingest))).size }];
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      let copied = 0;
      ({ result: last } = await compact(store, inputs, { ...opts, planId: `week${week}`, heartbeat: (p) => void (copied = p.passthroughRowGroups ?? copied) }));
      assertSameRows(await readOutputRows(path.join(root, last.outputKey)), expected, `week ${week}`);
      assert.ok(copied > 0, `week ${week} copied row groups`);
      smallByWeek.push(small(await groupRows(path.join(root, last.outputKey))));
    }
    // Written alone, each new item was a row group of one row, copied on every later week: 3, 6, 9.
    assert.ok(smallByWeek.every((n) => n <= 3), `row groups under 500 rows (not counting the last) by week: ${smallByWeek}`);
    assert.ok(smallByWeek[2]! <= smallByWeek[0]!, `no pile-up: ${smallByWeek}`);
  });

  test('weekly, a file of small row groups (left by ingest landing at one place week after week): neighbours that fit one are rewritten as one, once', async () => {
    const { root, store } = await newWarehouse();
    // Output row groups of ~7,000 wide rows (16 MB at a 128 MB limit); ranges of ~9,000 rows.
    const opts = { memoryLimitMb: 128, smallBucketBytes: 0, sortBudgetBytes: 40 * 1024 * 1024 };
    const part = (name: string, rows: number, firstId: number, updatedOffsetSeconds: number, dates?: { from: string; span: number }) =>
      heavyInput(root, name, { rows, firstId, stringBytes: 2048, updatedOffsetSeconds, datetimeFrom: dates?.from, datetimeSpanSeconds: dates?.span });
    const { result: first } = await compact(store, [await part('week1_a', 25_000, 0, 0), await part('week1_b', 25_000, 20_000, 100)], { ...opts, planId: 'week1' });
    const groupRows = async (file: string) => (await parquetFacts(file)).rowGroupRows;
    const cap = Math.max(...(await groupRows(path.join(root, first.outputKey))));
    assert.ok(cap >= 3 * 2048, `full row groups of ${cap} rows`);
    // The same rows in the same order, in row groups of 2,048 (what weeks of ingest at one place leave):
    // each is more than a quarter of the cap, so copying alone would keep them all.
    const smallKey = `${PREFIX}/compacted_small_groups.parquet`;
    await session.exec(
      `COPY (SELECT * EXCLUDE (file_row_number) FROM read_parquet(${sqlString(path.join(root, first.outputKey))}, file_row_number = true, hive_partitioning = false) ORDER BY file_row_number)
       TO ${sqlString(path.join(root, smallKey))} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 2048)`,
    );
    await fs.rm(path.join(root, first.outputKey));
    const before = await groupRows(path.join(root, smallKey));
    assert.ok(before.length >= 20 && before.slice(0, -1).every((n) => n === 2048), `small row groups: ${before}`);

    const week = async (n: number, lastKey: string) => {
      const inputs = [
        { key: lastKey, size: (await fs.stat(path.join(root, lastKey))).size },
        // One new item of the last platform (S2B) on the year's last day: it sorts to the end of the file.
        await part(`week${n}_new`, 1, 100_004 + n * 5, 1_000 * n, { from: '2020-12-31 00:00:00+00', span: 86_400 }),
      ];
      const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
      let copied = 0;
      const { result } = await compact(store, inputs, { ...opts, planId: `week${n}`, heartbeat: (p) => void (copied = p.passthroughRowGroups ?? copied) });
      assertSameRows(await readOutputRows(path.join(root, result.outputKey)), expected, `week ${n}`);
      return { result, copied, groups: await groupRows(path.join(root, result.outputKey)) };
    };
    const week2 = await week(2, smallKey);
    // Three 2,048-row groups fit one (6,144 rows): about a third as many row groups.
    assert.ok(week2.groups.length <= Math.ceil(before.length / 3) + 4, `row groups ${before.length} → ${week2.groups.length}: ${week2.groups}`);
    // Next week the merged row groups are copied as they are, not given back again (the last one takes
    // the new item).
    const week3 = await week(3, week2.result.outputKey);
    assert.ok(week3.copied >= week2.groups.length - 2, `week 3 copied ${week3.copied} of ${week2.groups.length} row groups: ${week2.groups} → ${week3.groups} (cap ${cap})`);
    assert.ok(week3.groups.length <= week2.groups.length + 1, `row groups ${week2.groups.length} → ${week3.groups.length}`);
  });

  test('weekly: a new column in the ingest rules out copying row groups (their schema would differ)', async () => {
    const { root, store } = await newWarehouse();
    const heavy = (name: string, rows: number, firstId: number, updatedOffsetSeconds: number, from?: string) =>
      heavyInput(root, name, { rows, firstId, stringBytes: 2048, updatedOffsetSeconds, datetimeFrom: from, datetimeSpanSeconds: from ? 86_400 : undefined });
    const week1 = [await heavy('w1_a', 20_000, 0, 0), await heavy('w1_b', 20_000, 15_000, 100)];
    const { result: last } = await compact(store, week1, { ...WEEKLY_RANKED, planId: 'week1' });
    const { key: plain } = await heavy('w2_plain', 1_000, 40_000, 1_000, '2020-12-30 00:00:00+00');
    // The same week without the new column, in a copy of the warehouse: row groups are copied there.
    const twin = await newWarehouse();
    await copyFiles(root, twin.root, [last.outputKey, plain]);
    let twinCopied = 0;
    await compact(twin.store, [{ key: last.outputKey, size: last.bytesOut }, { key: plain, size: (await fs.stat(path.join(root, plain))).size }], {
      ...WEEKLY_RANKED,
      planId: 'week2',
      heartbeat: (p) => void (twinCopied = Math.max(twinCopied, p.passthroughRowGroups ?? 0)),
    });
    assert.ok(twinCopied > 0, 'without the new column, row groups are copied');

    const drifted = `${PREFIX}/w2_drifted.parquet`;
    await session.exec(
      `COPY (SELECT *, 'x' AS "proj:wkt2" FROM read_parquet(${sqlString(path.join(root, plain))})) TO ${sqlString(path.join(root, drifted))} (FORMAT parquet)`,
    );
    await fs.rm(path.join(root, plain));
    const inputs = [{ key: last.outputKey, size: last.bytesOut }, { key: drifted, size: (await fs.stat(path.join(root, drifted))).size }];
    const expected = await expectedBucketRows(inputs.map((i) => path.join(root, i.key)));
    let copied: number | undefined;
    const { result } = await compact(store, inputs, { ...WEEKLY_RANKED, planId: 'week2', heartbeat: (p) => void (copied ??= p.passthroughRowGroups) });
    assert.equal(copied, undefined, 'no row group copied');
    assert.equal(result.rowsOut, 36_000);
    assertSameRows(await readOutputRows(path.join(root, result.outputKey)), expected, 'oracle, with the new column');
  });

  // The estimate of a row's memory is made wrong on purpose: a sort budget far above the memory limit
  // sizes statements as DuckDB's rows of deeply nested columns do (several times the estimate).
  for (const c of [
    { name: 'one statement', smallBucketBytes: Number.MAX_SAFE_INTEGER, sortBudgetBytes: 1024 * 1024 * 1024 },
    { name: 'one sort', smallBucketBytes: 0, sortBudgetBytes: 1024 * 1024 * 1024 },
    { name: 'ranges', smallBucketBytes: 0, sortBudgetBytes: 100 * 1024 * 1024 },
  ]) {
    test(`rows that take more memory than estimated (${c.name}) compact in smaller ranges`, async () => {
      const { root, store } = await newWarehouse();
      const inputs = await writeHeavyParts(root, 3);
      const warnings: string[] = [];
      const { result } = await compact(store, inputs, {
        memoryLimitMb: 64,
        threads: 2,
        smallBucketBytes: c.smallBucketBytes,
        sortBudgetBytes: c.sortBudgetBytes,
        warn: (m) => warnings.push(m),
      });
      assert.ok(
        warnings.some((w) => /took more memory than estimated \(Out of Memory Error.*\); (sorting ranges of \d+ rows|writing it through rank ranges) instead/.test(w)),
        `warnings: ${warnings.join(' | ')}`,
      );
      assert.equal(result.rowsIn, 75_000);
      assert.equal(result.rowsOut, 65_000);
      const out = path.join(root, result.outputKey);
      const [facts] = await session.rows(
        `SELECT count(*) AS n, count(DISTINCT id) AS ids, count(*) FILTER (WHERE k < prev) AS out_of_order
         FROM (SELECT id, (platform, epoch_us(datetime), id) AS k, lag((platform, epoch_us(datetime), id)) OVER (ORDER BY file_row_number) AS prev
               FROM read_parquet('${out}', hive_partitioning = false, file_row_number = true))`,
      );
      assert.deepEqual([Number(facts!.n), Number(facts!.ids), Number(facts!.out_of_order)], [65_000, 65_000, 0]);
      assert.deepEqual(await keysUnder(root), ['compacted_plan1.parquet'], 'inputs deleted, one output');
    });
  }

  test('deeply nested rows, whose memory the estimate undersizes by itself, compact in smaller ranges where they failed before', async () => {
    const { root, store } = await newWarehouse();
    const inputs: PlannedFile[] = [];
    // 16,000 ids over 40,000 rows; a later i is a later `updated`, so part 1 holds every winner.
    for (const part of [0, 1]) {
      inputs.push(await writeNestedPart(root, `part_${part}`, { from: part * 20_000, to: (part + 1) * 20_000, ids: 16_000, datetimes: 'in order' }));
    }
    const warnings: string[] = [];
    const { result } = await compact(store, inputs, { memoryLimitMb: 256, threads: 2, warn: (m) => warnings.push(m) });
    assert.ok(warnings.some((w) => /took more memory than estimated/.test(w)), `warnings: ${warnings.join(' | ')}`);
    assert.deepEqual([result.rowsIn, result.rowsOut], [40_000, 16_000]);
    const facts = await nestedOutputFacts(path.join(root, result.outputKey), ['id_5', 'id_9000']);
    assert.deepEqual(facts, [16_000, 16_000, 0, 'https://example.com/32005/a3.tif', 'https://example.com/25000/a3.tif']);
  });

  test('weekly: deeply nested ingest whose scatter runs out of memory is scattered again with smaller buffers', async () => {
    const { root, store } = await newWarehouse();
    const week1 = [
      await writeNestedPart(root, 'w1_a', { from: 0, to: 30_000, datetimes: { fromSecond: 0, span: 30_000 } }),
      await writeNestedPart(root, 'w1_b', { from: 30_000, to: 60_000, datetimes: { fromSecond: 0, span: 30_000 } }),
    ];
    const { result: last } = await compact(store, week1, { planId: 'week1', memoryLimitMb: 1024, threads: 2 });
    // New items from the last third of last week's datetimes on: the rows before them are copied as they are.
    const ingest = await writeNestedPart(root, 'w2', { from: 100_000, to: 130_000, datetimes: { fromSecond: 20_000, span: 30_000 } });
    const warnings: string[] = [];
    let copied = 0;
    // At this limit the ingest's scatter, its buffers sized from the estimate, ran out of memory and failed the bucket.
    const { result } = await compact(store, [{ key: last.outputKey, size: last.bytesOut }, ingest], {
      planId: 'week2',
      memoryLimitMb: 224,
      threads: 2,
      smallBucketBytes: 0,
      warn: (m) => warnings.push(m),
      heartbeat: (p) => void (copied = Math.max(copied, p.passthroughRowGroups ?? 0)),
    });
    assert.ok(warnings.some((w) => /took more memory than estimated/.test(w)), `warnings: ${warnings.join(' | ')}`);
    assert.ok(copied > 0, 'row groups of last week copied');
    assert.deepEqual([result.rowsIn, result.rowsOut], [90_000, 90_000]);
    const facts = await nestedOutputFacts(path.join(root, result.outputKey), ['id_7', 'id_100007']);
    assert.deepEqual(facts, [90_000, 90_000, 0, 'https://example.com/7/a3.tif', 'https://example.com/100007/a3.tif']);
  });

  test('a bucket several times larger than memory_limit compacts by spilling', async () => {
    const { root, store } = await newWarehouse();
    const inputs = await writeHeavyParts(root, 3);
    const [u] = await session.rows(
      `SELECT sum(total_uncompressed_size) AS b FROM parquet_metadata([${inputs.map((i) => `'${path.join(root, i.key)}'`).join(', ')}])`,
    );
    const memoryLimitMb = 64;
    assert.ok(Number(u!.b) > 2 * memoryLimitMb * 1024 * 1024, `inputs hold ${Number(u!.b) >> 20} MB uncompressed`);

    let chunks = 0;
    const { result } = await compact(store, inputs, {
      memoryLimitMb,
      threads: 2,
      heartbeat: (p) => void (chunks = Math.max(chunks, p.chunks ?? 0)),
    });
    assert.equal(result.rowsIn, 75_000);
    assert.equal(result.rowsOut, 65_000);
    assert.ok(chunks > 1, 'written through range partitions');

    const out = path.join(root, result.outputKey);
    const facts = await parquetFacts(out);
    assert.equal(facts.rows, 65_000);
    assert.ok(facts.rowGroupRows.length > 1 && facts.rowGroupRows.every((n) => n <= 122_880), `row groups ${facts.rowGroupRows}`);
    const keys = await session.rows(
      `SELECT platform, epoch_us(datetime) AS dt, id, file_row_number AS n FROM read_parquet('${out}', hive_partitioning = false, file_row_number = true)`,
    );
    keys.sort((x, y) => Number(x.n) - Number(y.n));
    const ids = new Set<string>();
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      ids.add(String(k.id));
      if (i === 0) continue;
      const p = keys[i - 1]!;
      const cmp =
        Buffer.compare(Buffer.from(String(p.platform)), Buffer.from(String(k.platform))) ||
        Number(BigInt(String(p.dt)) - BigInt(String(k.dt))) ||
        Buffer.compare(Buffer.from(String(p.id)), Buffer.from(String(k.id)));
      assert.ok(cmp < 0, `row ${i} out of order`);
    }
    assert.equal(ids.size, 65_000);
    const [winners] = await session.rows(
      `SELECT count(*) FILTER (WHERE id = 'heavy_20000') AS n, max(epoch(updated)) FILTER (WHERE id = 'heavy_20000') AS u FROM read_parquet('${out}', hive_partitioning = false)`,
    );
    assert.equal(Number(winners!.n), 1);
    // heavy_20000 is row 20000 of part 0 (offset 0) and row 0 of part 1 (offset 100 s): part 1 is newer.
    assert.equal(Number(winners!.u), Date.UTC(2021, 0, 1) / 1000 + 100);
  });
});

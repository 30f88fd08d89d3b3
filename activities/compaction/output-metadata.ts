/**
 * The key-value metadata of a compacted file: the first input's keys (each once), a `geo` key that
 * holds for every row of every input, and our provenance record.
 */
import { sqlStringList, type DuckSession } from './duckdb-session';
import type { TableNumberTypes } from './table-types';

export interface KvEntry {
  key: string;
  value: Uint8Array;
}

/** Written into every output: what was merged, so a retried attempt can check a published file. */
export const PROVENANCE_KEY = 'earthcatalog:compaction';

export interface Provenance {
  planId: string;
  bucket: string;
  inputs: string[];
  /** Rows in the output (distinct ids of the inputs). */
  rows: number;
  /** Rows and bytes across the inputs, so a retry after the inputs are gone still reports them. */
  rowsIn: number;
  bytesIn: number;
  /**
   * The version of each input (same order) whose bytes went into the output: an input found with another
   * version was rewritten afterwards and is not deleted. Absent in outputs of earlier releases.
   */
  inputVersions?: string[];
  /**
   * The table's number types the output was written with (the plan's), so that an attempt finding it
   * published can vouch for it (BucketResult.typedAsTable). Absent when the plan had none, and in outputs
   * of earlier releases.
   */
  tableTypes?: TableNumberTypes;
}

/**
 * Descriptions of the FIRST input's own columns, which readers trust over the Parquet schema: pyarrow's
 * serialized Arrow schema, and pandas' record of the frame it wrote (dtypes, index). For the union of
 * drifted inputs they are wrong: pyarrow's `to_pandas()` fails on a column the first input wrote as
 * pandas' nullable `Int64` when another input's doubles widened it (`Float value 1.5 was truncated`).
 */
const NOT_CARRIED = new Set(['ARROW:schema', 'pandas', PROVENANCE_KEY]);

const utf8 = new TextDecoder('utf-8', { fatal: true });

function textOf(value: Uint8Array): string | undefined {
  try {
    return utf8.decode(value);
  } catch {
    return undefined;
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseGeo(value: Uint8Array | undefined): JsonObject | undefined {
  const text = value && textOf(value);
  if (text === undefined) return undefined;
  try {
    const parsed = JSON.parse(text) as Json;
    return isObject(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

function numericBox(v: Json | undefined): number[] | undefined {
  return Array.isArray(v) && v.length >= 4 && v.length % 2 === 0 && v.every((x) => typeof x === 'number')
    ? (v as number[])
    : undefined;
}

/** Keys in sorted order at every level, so that two spellings of one JSON value compare equal. */
function canonical(v: Json | undefined): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v ?? null);
}

/** A declaration of a geometry column: `key` compares equal for the same meaning, `label` names it in a message. */
type Declared = { key: string; label: string };

/**
 * The coordinate reference system a geometry column declares, as a name to compare. GeoParquet stores
 * coordinates as longitude, latitude whatever the CRS's axis order, so EPSG:4326 and OGC:CRS84 (the
 * default when `crs` is absent) describe the same coordinates, as writers use them.
 */
function crsOf(col: JsonObject): Declared {
  const epoch = typeof col.epoch === 'number' ? ` at epoch ${col.epoch}` : '';
  const named = (name: string) => {
    const upper = name.toUpperCase();
    const key = upper === 'EPSG:4326' ? 'OGC:CRS84' : upper;
    return { key: key + epoch, label: name + epoch };
  };
  if (!('crs' in col)) return named('OGC:CRS84');
  const crs = col.crs;
  if (crs === null) return { key: `null${epoch}`, label: `an unknown CRS (crs: null)${epoch}` };
  if (typeof crs === 'string') return named(crs);
  if (isObject(crs) && isObject(crs.id) && typeof crs.id.authority === 'string' && (typeof crs.id.code === 'string' || typeof crs.id.code === 'number')) {
    return named(`${crs.id.authority}:${crs.id.code}`);
  }
  const name = isObject(crs) && typeof crs.name === 'string' ? `PROJJSON "${crs.name}"` : 'a PROJJSON CRS without an id';
  return { key: canonical(crs) + epoch, label: name + epoch };
}

/** Declarations of a geometry column that give its coordinates their meaning: one file can hold only one of each. */
const MEANINGS = {
  'coordinate reference system': crsOf,
  edges: (col: JsonObject): Declared => {
    const edges = typeof col.edges === 'string' ? col.edges : 'planar';
    return { key: edges, label: edges };
  },
} satisfies Record<string, (col: JsonObject) => Declared>;

/** Inputs that declare a geometry column in different ways no single `geo` entry can describe. */
export interface GeoConflict {
  column: string;
  declaration: keyof typeof MEANINGS;
  /** Each declared value with the indexes of the inputs that declare it, in input order. */
  values: { label: string; inputs: number[] }[];
}

/** The `geo` column entries of every input (undefined where an input has no `geo`, or no entry for it), by column. */
function geoColumns(geos: readonly (Uint8Array | undefined)[]): { parsed: (JsonObject | undefined)[]; columns: Map<string, (JsonObject | undefined)[]> } {
  const parsed = geos.map((g) => {
    const geo = parseGeo(g);
    return geo && isObject(geo.columns) ? geo : undefined;
  });
  const columns = new Map<string, (JsonObject | undefined)[]>();
  for (const geo of parsed) {
    for (const name of Object.keys(geo?.columns as JsonObject | undefined ?? {})) {
      if (!columns.has(name)) columns.set(name, parsed.map((g) => {
        const col = g && (g.columns as JsonObject)[name];
        return isObject(col) ? col : undefined;
      }));
    }
  }
  return { parsed, columns };
}

/**
 * The first geometry column whose inputs declare another CRS (or epoch) or other edges: merged into one
 * file under one declaration, some rows' coordinates would be read in the wrong system (a UTM easting
 * as a longitude). Inputs without a `geo` entry for the column declare nothing and conflict with none.
 */
export function findGeoConflict(geos: readonly (Uint8Array | undefined)[]): GeoConflict | undefined {
  for (const [column, entries] of geoColumns(geos).columns) {
    for (const [declaration, read] of Object.entries(MEANINGS) as [keyof typeof MEANINGS, (col: JsonObject) => Declared][]) {
      const byKey = new Map<string, { label: string; inputs: number[] }>();
      entries.forEach((col, i) => {
        if (!col) return;
        const { key, label } = read(col);
        const seen = byKey.get(key) ?? { label, inputs: [] };
        seen.inputs.push(i);
        byKey.set(key, seen);
      });
      if (byKey.size > 1) return { column, declaration, values: [...byKey.values()] };
    }
  }
  return undefined;
}

/** A box that crosses the antimeridian has xmin > xmax (GeoParquet allows it); a min/max union of it would exclude real rows. */
function crossesAntimeridian(box: readonly number[]): boolean {
  return box[0]! > box[box.length / 2]!;
}

function geometryTypes(col: JsonObject | undefined): string[] {
  const t = col?.geometry_types;
  // Before GeoParquet 1.0 a single type could be a string.
  if (typeof t === 'string') return [t];
  return Array.isArray(t) ? t.filter((x): x is string => typeof x === 'string') : [];
}

/**
 * The output's `geo`: the first input's (the first one that parses, when it does not) with every
 * geometry column any input declares, and for each a declaration that holds for every row. bbox and
 * geometry types are the union of the inputs' (carried over, the first part's bbox would be too small
 * and a reader filtering on it would skip real data); a bound some input does not declare, or a box
 * across the antimeridian, is dropped (bbox) or widened to "unknown" (geometry_types []), which
 * GeoParquet allows. `covering` (a bbox column readers prune on) and `orientation` are kept only when
 * every input declares the same: rows of an input without them have no bbox values (a reader filtering
 * on the covering would drop them) and rings of any winding order. CRS and edges are the first's; inputs
 * that differ there are refused before (findGeoConflict). Undefined when no input has a `geo` object;
 * an unparsable first `geo` is then carried as it is.
 */
export function mergeGeoMetadata(geos: readonly (Uint8Array | undefined)[]): Uint8Array | undefined {
  const { parsed, columns } = geoColumns(geos);
  const baseIndex = parsed.findIndex((g) => g !== undefined);
  if (baseIndex < 0) return geos.find((g) => g !== undefined);
  const geo: JsonObject = { ...parsed[baseIndex]! };
  const merged: JsonObject = {};
  for (const [name, entries] of columns) {
    const col: JsonObject = { ...entries.find((c) => c !== undefined)! };
    const all = entries.every((c) => c !== undefined) ? (entries as JsonObject[]) : undefined;

    const boxes = (all ?? []).map((c) => numericBox(c.bbox));
    const [first, ...rest] = boxes;
    if (all && first && rest.every((b) => b?.length === first.length) && boxes.every((b) => !crossesAntimeridian(b!))) {
      const half = first.length / 2;
      col.bbox = rest.reduce<number[]>((acc, b) => acc.map((v, i) => (i < half ? Math.min(v, b![i]!) : Math.max(v, b![i]!))), first);
    } else {
      delete col.bbox;
    }

    const typeLists = entries.map(geometryTypes);
    col.geometry_types = all && typeLists.every((t) => t.length > 0) ? [...new Set(typeLists.flat())].sort() : [];

    for (const key of ['covering', 'orientation']) {
      const same = all && all.every((c) => key in c && canonical(c[key]) === canonical(all[0]![key]));
      if (!same) delete col[key];
    }
    merged[name] = col;
  }
  geo.columns = merged;
  return new TextEncoder().encode(JSON.stringify(geo));
}

/**
 * Output metadata: first input's keys once each (in its order), geo merged from every input (in the first
 * input's place, or after its keys when it has none: the output is GeoParquet as soon as any of its rows
 * came from a GeoParquet file), provenance last.
 */
export function outputKvMetadata(
  firstInput: readonly KvEntry[],
  otherGeo: readonly (Uint8Array | undefined)[],
  provenance: Provenance,
): KvEntry[] {
  const geo = mergeGeoMetadata([firstInput.find((e) => e.key === 'geo')?.value, ...otherGeo]);
  const out: KvEntry[] = [];
  const seen = new Set<string>();
  for (const { key, value } of firstInput) {
    if (seen.has(key) || NOT_CARRIED.has(key)) continue;
    seen.add(key);
    out.push({ key, value: key === 'geo' ? geo! : value });
  }
  if (!seen.has('geo') && geo) out.push({ key: 'geo', value: geo });
  out.push({ key: PROVENANCE_KEY, value: new TextEncoder().encode(JSON.stringify(provenance)) });
  return out;
}

/** Reads our provenance back from an output's metadata, or undefined if absent or malformed. */
export function parseProvenance(kv: readonly KvEntry[]): Provenance | undefined {
  const entry = kv.find((e) => e.key === PROVENANCE_KEY);
  const text = entry && textOf(entry.value);
  if (text === undefined) return undefined;
  try {
    const p = JSON.parse(text) as Partial<Provenance>;
    if (
      typeof p.planId !== 'string' ||
      typeof p.bucket !== 'string' ||
      !Array.isArray(p.inputs) ||
      !p.inputs.every((k) => typeof k === 'string') ||
      typeof p.rows !== 'number' ||
      typeof p.rowsIn !== 'number' ||
      typeof p.bytesIn !== 'number' ||
      (p.inputVersions !== undefined &&
        (!Array.isArray(p.inputVersions) || p.inputVersions.length !== p.inputs.length || !p.inputVersions.every((v) => typeof v === 'string'))) ||
      (p.tableTypes !== undefined &&
        (typeof p.tableTypes !== 'object' || p.tableTypes === null || !Object.values(p.tableTypes).every((t) => t === 'long' || t === 'double')))
    ) {
      return undefined;
    }
    return p as Provenance;
  } catch {
    return undefined;
  }
}

/** Key-value metadata of each file (raw bytes, in file order), in one statement. */
export async function readKvMetadata(session: DuckSession, files: readonly string[]): Promise<KvEntry[][]> {
  const rows = await session.rows(`SELECT file_name, key, value FROM parquet_kv_metadata(${sqlStringList(files)})`);
  return files.map((f) =>
    rows
      .filter((r) => r.file_name === f)
      .map((r) => ({ key: Buffer.from(r.key as Uint8Array).toString('utf8'), value: new Uint8Array(r.value as Uint8Array) })),
  );
}

/**
 * The key-value metadata of a compacted file: the first input's keys (each once), a `geo` key whose
 * bbox and geometry types cover every input, and our provenance record.
 */
import { sqlStringList, type DuckSession } from './duckdb-session';

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
}

/**
 * pyarrow's serialized Arrow schema of the FIRST input only: for the union of drifted inputs it would
 * be wrong (missing columns, other types), and readers trust it over the Parquet schema.
 */
const NOT_CARRIED = new Set(['ARROW:schema', PROVENANCE_KEY]);

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

/**
 * The first input's `geo` with, per geometry column, the union of every input's bbox and geometry
 * types: carried over verbatim, the first part's bbox would be too small for the merged rows and a
 * reader filtering on it would skip real data. A bound that some input does not declare is dropped
 * (bbox) or widened to "unknown" (geometry_types []), which GeoParquet allows.
 */
export function mergeGeoMetadata(first: Uint8Array, others: readonly (Uint8Array | undefined)[]): Uint8Array {
  const geo = parseGeo(first);
  if (!geo || !isObject(geo.columns)) return first;
  const rest = others.map(parseGeo);
  for (const [name, col] of Object.entries(geo.columns)) {
    if (!isObject(col)) continue;
    const theirs = rest.map((g) => (g && isObject(g.columns) && isObject(g.columns[name]) ? g.columns[name] : undefined));
    let box = numericBox(col.bbox);
    for (const c of theirs) {
      const other = numericBox(c?.bbox);
      if (!box || !other || other.length !== box.length) {
        box = undefined;
        break;
      }
      const half = box.length / 2;
      box = box.map((v, i) => (i < half ? Math.min(v, other[i]!) : Math.max(v, other[i]!)));
    }
    if (box) col.bbox = box;
    else delete col.bbox;
    if (Array.isArray(col.geometry_types)) {
      const types = new Set<string>(col.geometry_types.filter((t): t is string => typeof t === 'string'));
      let known = types.size > 0;
      for (const c of theirs) {
        const t = c && Array.isArray(c.geometry_types) ? c.geometry_types : [];
        if (t.length === 0) known = false;
        for (const x of t) if (typeof x === 'string') types.add(x);
      }
      col.geometry_types = known ? [...types].sort() : [];
    }
  }
  return new TextEncoder().encode(JSON.stringify(geo));
}

/**
 * Output metadata: first input's keys once each (in its order), geo widened, provenance last. When
 * the first input has no `geo` but a later one does, that one is used: the output is GeoParquet as
 * soon as any of its rows came from a GeoParquet file.
 */
export function outputKvMetadata(
  firstInput: readonly KvEntry[],
  otherGeo: readonly (Uint8Array | undefined)[],
  provenance: Provenance,
): KvEntry[] {
  const out: KvEntry[] = [];
  const seen = new Set<string>();
  for (const { key, value } of firstInput) {
    if (seen.has(key) || NOT_CARRIED.has(key)) continue;
    seen.add(key);
    out.push({ key, value: key === 'geo' ? mergeGeoMetadata(value, otherGeo) : value });
  }
  const later = otherGeo.findIndex((g) => g !== undefined);
  if (!seen.has('geo') && later >= 0) {
    // The first input's rows have no declared bounds, so the merged bbox must be dropped.
    out.push({ key: 'geo', value: mergeGeoMetadata(otherGeo[later]!, [undefined, ...otherGeo.slice(later + 1)]) });
  }
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
        (!Array.isArray(p.inputVersions) || p.inputVersions.length !== p.inputs.length || !p.inputVersions.every((v) => typeof v === 'string')))
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

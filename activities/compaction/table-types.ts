/**
 * Numbers written as the table types them. pandas writes an integer property as float64 in a batch where
 * some item lacks it (`percent_valid_pixels`, a `long` column), and as int64 a float property whose values
 * in a batch happen to be whole (a `double` column). Iceberg promotes neither `double` to `long` nor
 * `long` to `double`, so readers (pyiceberg) fail on such a file, and on the output of a bucket made only
 * of such files, week after week. Compaction writes the table's type instead wherever no value changes.
 */
import type { FooterColumn } from '../catalog/parquet-footer';
import { nameMappingNames, type IcebergSchema } from '../catalog/iceberg-schema';
import { BadBucketDataError, listSome } from './bucket-errors';
import { sqlIdent, sqlString, type DuckSession } from './duckdb-session';
import { KEY_COLUMNS, columnUses, foldCase, holdsNoValue, integersExactAsDouble, typeFamily, type ColumnUse, type InputSchema, type LocalInput, type UnionColumn } from './input-schema';

/** The table's top-level `long` and `double` columns by exact name: what compaction can convert to. */
export type TableNumberTypes = Readonly<Record<string, 'long' | 'double'>>;

export function tableNumberTypes(schema: IcebergSchema): TableNumberTypes {
  const types: Record<string, 'long' | 'double'> = {};
  for (const f of schema.fields) if (f.type === 'long' || f.type === 'double') types[f.name] = f.type;
  return types;
}

/**
 * A renamed column's old top-level names, each to the column's current name, as the table's name mapping
 * keeps them. Files written before a rename (or by ingest not updated yet) carry the old name, readers map
 * it to the column; a bucket holding both names is written with the current one (renamedColumnMerges),
 * since a file with both is read as one of them, the other's values as null.
 */
export type TableRenames = Readonly<Record<string, string>>;

export function tableRenames(schema: IcebergSchema, nameMapping: string | undefined): TableRenames {
  const mapped = nameMappingNames(nameMapping);
  // Compared as DuckDB matches names: an old name that a column has now, in any case (`cc` beside `CC`, or the
  // renamed column's own in another case), is that column's, and a merge would take its values.
  const current = new Set(schema.fields.map((f) => foldCase(f.name)));
  const renames: Record<string, string> = {};
  for (const f of schema.fields) {
    for (const name of mapped.get(f.id) ?? []) if (!current.has(foldCase(name))) renames[name] = f.name;
  }
  return renames;
}

/** The contract's geometry column, which the output's `geo` metadata names. */
const GEOMETRY_COLUMN = 'geometry';

/** How the names of renamed columns are written as one (OutputColumns.merged). */
export interface RenamedColumnMerges {
  /** The union column written (the current name, or an old one when no input has the current), to the other names it takes values from. */
  merged: Map<string, string[]>;
  /** The type such a column is written as where its names' integer or float types differ (the wider). */
  types: Map<string, string>;
}

/**
 * The union columns to write as one: the names of each renamed column of `renames` (its current name and
 * every old one the name mapping keeps, a column renamed twice having two) of which the union has two or
 * more, written under the current name, or the first old one present when no input has the current. Names
 * of integers or floats of different widths are written as the wider; other differing types refuse the
 * bucket (a reader would take the old files' values as the column's type), and so does a rename of a
 * column the compaction deduplicates and sorts by.
 */
export async function renamedColumnMerges(
  session: DuckSession,
  union: readonly UnionColumn[],
  schemas: readonly InputSchema[],
  renames: TableRenames,
): Promise<RenamedColumnMerges> {
  const result: RenamedColumnMerges = { merged: new Map(), types: new Map() };
  const byFolded = new Map(union.map((c) => [foldCase(c.name), c]));
  const uses = columnUses(schemas);
  const olds = new Map<string, string[]>();
  for (const [old, current] of Object.entries(renames)) olds.set(current, [...(olds.get(current) ?? []), old]);
  for (const [current, names] of olds) {
    const present = [...new Set([current, ...names].map(foldCase))].flatMap((n) => byFolded.get(n) ?? []);
    if (present.length < 2) continue;
    const files = [...new Set(present.flatMap((c) => uses.get(foldCase(c.name)) ?? []).map((u) => u.key))];
    const spelled = present.map((c) => `'${c.name}'`).join(', ');
    const key = [current, ...present.map((c) => c.name)].map(foldCase).find((n) => KEY_COLUMNS.includes(n) || n === GEOMETRY_COLUMN);
    if (key !== undefined) {
      // Winners and order are chosen by the key columns as the files name them (rows under another name would
      // read as null there, and an older version could win), and the geo metadata names the geometry column.
      const why =
        key === GEOMETRY_COLUMN
          ? `the output's GeoParquet metadata names '${key}' as its geometry (SPEC), so the compaction`
          : `the compaction deduplicates and sorts by '${key}' (${KEY_COLUMNS.join(', ')}), so it`;
      throw new BadBucketDataError(
        `the table's column '${current}' was renamed, and the bucket's files hold more than one of its names (${spelled}); ${why} ` +
          `does not merge a rename of it. Rename the column back in the table and write '${key}' in the files. Nothing of the bucket was changed`,
        files,
      );
    }
    const [target, ...others] = present as [UnionColumn, ...UnionColumn[]];
    const families = new Set(present.map((c) => typeFamily(c.type)));
    if (new Set(present.map((c) => c.type)).size > 1) {
      const family = [...families][0];
      if (families.size !== 1 || (family !== 'integer' && family !== 'float')) {
        const holders = (c: UnionColumn) => `'${c.name}' ${c.type}: ${listSome((uses.get(foldCase(c.name)) ?? []).map((u) => `${u.key} (${u.type})`), 3)}`;
        throw new BadBucketDataError(
          `the table's column '${current}' was renamed, and the bucket's files hold its names with types that do not widen into one ` +
            `(${present.map(holders).join('; ')}), so they cannot be written as one column. ` +
            'Rewrite the files of one name with the type of the other. Nothing of the bucket was changed',
          files,
        );
      }
      const [row] = await session.rows(`DESCRIBE SELECT coalesce(${present.map((c) => `NULL::${c.type}`).join(', ')}) AS merged`);
      result.types.set(target.name, String(row!.column_type));
    }
    result.merged.set(target.name, others.map((c) => c.name));
  }
  return result;
}

/** Whether `a` and `b` type the same columns the same. */
export function sameNumberTypes(a: TableNumberTypes, b: TableNumberTypes): boolean {
  const names = Object.keys(a);
  return names.length === Object.keys(b).length && names.every((n) => b[n] === a[n]);
}

/**
 * The columns (by the union's name) to write as the table's type: DOUBLE where the table has a `double`
 * and the inputs hold integers, each exactly a double (up to 2^53); BIGINT where the table has a `long`
 * and the inputs hold floats, each a whole number within a long. Otherwise the column keeps the union's
 * type and the rebuild names the file, as before.
 */
export async function tableTypeCasts(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  union: readonly UnionColumn[],
  table: TableNumberTypes,
): Promise<Map<string, string>> {
  const casts = new Map<string, string>();
  const uses = columnUses(schemas);
  const paths = new Map(inputs.map((i) => [i.key, i.path]));
  for (const c of union) {
    const wanted = Object.hasOwn(table, c.name) ? table[c.name] : undefined;
    const family = typeFamily(c.type);
    // A renamed column's values under all its names (alsoFrom) are checked.
    const list = [c.name, ...(c.alsoFrom ?? [])].flatMap((n) => uses.get(foldCase(n)) ?? []);
    if (wanted === 'double' && family === 'integer' && (await integersExactAsDouble(session, paths, list))) casts.set(c.name, 'DOUBLE');
    if (wanted === 'long' && family === 'float' && (await floatsWholeLongs(session, paths, list))) casts.set(c.name, 'BIGINT');
  }
  return casts;
}

/** Whether every float value of `uses` (integer uses pass as they are) is a whole number within a long. */
async function floatsWholeLongs(session: DuckSession, paths: ReadonlyMap<string, string>, uses: readonly ColumnUse[]): Promise<boolean> {
  for (const use of uses) {
    if (typeFamily(use.type) !== 'float') continue;
    const file = paths.get(use.key)!;
    if (await holdsNoValue(session, file, use.name)) continue;
    const col = `CAST(${sqlIdent(use.name)} AS DOUBLE)`;
    // 2^63 is the first double beyond a long; NaN and the infinities are not finite.
    const [row] = await session.rows(
      `SELECT count(*) AS n FROM read_parquet(${sqlString(file)}, hive_partitioning = false)
       WHERE ${col} IS NOT NULL AND NOT (isfinite(${col}) AND ${col} = trunc(${col}) AND ${col} >= -9223372036854775808.0 AND ${col} < 9223372036854775808.0)`,
    );
    if (Number(row?.n ?? 0) > 0) return false;
  }
  return true;
}

const INTEGER_LOGICAL = /^(INTEGER\((8|16|32|64),signed\)|INT_(8|16|32|64)|INTEGER\((8|16|32),unsigned\)|UINT_(8|16|32))$/;

/**
 * Whether a file's top-level column is of a type the table's column cannot read and compaction may
 * convert (tableTypeCasts): an integer in a `double` column, a float in a `long` one. Told from the
 * footer, so a float column may still hold fractions; its bucket is then rewritten once, unchanged.
 */
export function convertibleToTableType(column: FooterColumn, table: TableNumberTypes): boolean {
  const wanted = Object.hasOwn(table, column.name) ? table[column.name] : undefined;
  const { physicalType: physical, logicalType: logical } = column;
  if (wanted === 'double') return (physical === 'INT32' || physical === 'INT64') && (logical === undefined || INTEGER_LOGICAL.test(logical));
  if (wanted === 'long') return (physical === 'FLOAT' || physical === 'DOUBLE') && logical === undefined;
  return false;
}

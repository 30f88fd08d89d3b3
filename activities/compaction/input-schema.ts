/**
 * Checks every input of a bucket on its own before anything is merged, so that a bad file is named:
 * once files are read together, DuckDB's errors (or, worse, its silent casts under union_by_name)
 * no longer say which object is at fault.
 */
import * as path from 'node:path';
import { BadBucketDataError, isDamagedFileError, listSome } from './bucket-errors';
import { sqlIdent, sqlString, sqlStringList, toNumber, type DuckSession } from './duckdb-session';
import { firstLineAbout } from '../error-text';
import { formatDuckType, isNestedType, tryParseDuckType, type DuckType } from './duckdb-type-text';
import { readParquetFooter, type ParquetNode } from '../catalog/parquet-footer';
import { groupShape, NoIcebergType } from '../catalog/schema-evolution';
import { LocalWarehouseStore } from '../storage/local-store';

/** A planned input: its warehouse key and a local file with its bytes. */
export interface LocalInput {
  key: string;
  path: string;
  size: number;
}

export interface InputSchema {
  key: string;
  /** Lower-cased column name → { name as written, DuckDB type }. DuckDB names are case-insensitive. */
  columns: Map<string, { name: string; type: string }>;
  rows: number;
}

/**
 * DuckDB's virtual columns that every bucket's SQL addresses rows by: a data column of one of these names
 * hides DuckDB's own (silently: its values would become the rows' positions).
 */
const RESERVED_COLUMNS = new Set(['file_index', 'file_row_number']);
/** The prefix of the columns the bucket's SQL adds itself (`__ec_rank`, `__ec_part`, `__ec_fi`). */
const INTERNAL_PREFIX = '__ec_';

/** What a column of this name would be taken for, if the compaction cannot keep it apart. */
function reservedNameClash(name: string): string | undefined {
  const lower = foldCase(name);
  if (RESERVED_COLUMNS.has(lower)) return "DuckDB's row positions (it would pick the wrong rows)";
  if (lower.startsWith(INTERNAL_PREFIX)) return 'its own working columns';
  return undefined;
}

/** The columns the compaction deduplicates and sorts by, which the catalog and its readers also look up by exact name. */
export const KEY_COLUMNS: readonly string[] = ['id', 'updated', 'platform', 'datetime'];

/**
 * A column name as DuckDB matches it: it ignores the case of ASCII letters only (`ärger` and `ÄRGER` are
 * two columns to it, as to every reader), so JavaScript's toLowerCase would merge names DuckDB keeps apart.
 */
export function foldCase(name: string): string {
  return name.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}

/** DuckDB renames the second of two columns whose names match case-insensitively `name_1` (and `name_1_1`…). */
const DEDUPLICATED_NAME = /_\d+$/;

/** Names that occur more than once when case is ignored, as first written. */
function repeatedNames(names: readonly string[]): string[] {
  const seen = new Map<string, string[]>();
  for (const n of names) seen.set(foldCase(n), [...(seen.get(foldCase(n)) ?? []), n]);
  return [...seen.values()].filter((spellings) => spellings.length > 1).flat();
}

/** DuckDB reads a column without a name as `C<position>`. */
const NAMELESS_COLUMN = /^C\d+$/;

/**
 * Refuses a file with a column whose name is empty, as the footer has it: DuckDB reads it as `C<position>`,
 * so the output would carry a column of another name than the file's (and than a bucket of that file
 * alone, which is not compacted, gives the table), one producer column becoming several in the table.
 */
async function assertNamedColumns(input: LocalInput): Promise<void> {
  const footer = await readParquetFooter(new LocalWarehouseStore(path.dirname(input.path)), path.basename(input.path), input.size);
  const nameless = footer.columns.findIndex((c) => c.name === '');
  if (nameless < 0) return;
  throw new BadBucketDataError(
    `input ${input.key} has a column without a name (its column ${nameless + 1}), which DuckDB would write as 'C${nameless}'; ` +
      'give it a name in the file. Nothing of the bucket was changed',
    [input.key],
  );
}

/** DuckDB's error about one input, naming it, cut to what fits a bucket's failure reason. */
function briefly(err: unknown, input: LocalInput): string {
  return firstLineAbout(err, input).slice(0, 300);
}

/** Reads one file's schema and row count from its footer; an empty, truncated or non-Parquet file fails here. */
export async function readInputSchema(session: DuckSession, input: LocalInput): Promise<InputSchema> {
  if (input.size === 0) {
    throw new BadBucketDataError(`input ${input.key} is an empty (zero-byte) object, not a Parquet file`, [input.key]);
  }
  let rows: Awaited<ReturnType<DuckSession['rows']>>;
  try {
    rows = await session.rows(
      `DESCRIBE SELECT * FROM read_parquet(${sqlString(input.path)}, hive_partitioning = false)`,
    );
  } catch (err) {
    // A name DuckDB gave a nameless column may be one the file has too.
    if (/duplicate column name/i.test(String(err))) {
      await assertNamedColumns(input);
      // The file's names themselves: every attempt would fail the same way.
      throw new BadBucketDataError(`input ${input.key} has column names DuckDB cannot read: ${briefly(err, input)}`, [input.key]);
    }
    // Memory, an interruption or the OS (a vanished or unreadable path) is retried, never blamed on the file.
    if (!isDamagedFileError(err)) throw err;
    throw new BadBucketDataError(`input ${input.key} is not a readable Parquet file: ${briefly(err, input)}`, [input.key]);
  }
  const columns = new Map<string, { name: string; type: string }>();
  for (const r of rows) {
    const name = String(r.column_name);
    columns.set(foldCase(name), { name, type: String(r.column_type) });
  }
  if ([...columns.values()].some((c) => NAMELESS_COLUMN.test(c.name))) await assertNamedColumns(input);
  // Readers count a file's rows by its row groups, not by the footer's total: a file whose total says 0
  // while its row groups hold rows is not empty (withoutEmptyInputs would delete it unread).
  const [meta] = await session.rows(
    `SELECT greatest((SELECT num_rows FROM parquet_file_metadata(${sqlString(input.path)})),
       (SELECT coalesce(sum(row_group_num_rows) FILTER (WHERE column_id = 0), 0) FROM parquet_metadata(${sqlString(input.path)}))) AS num_rows`,
  );
  return { key: input.key, columns, rows: toNumber(meta?.num_rows) };
}

/** Throws BadBucketDataError naming the input when a column of its schema is one the compaction cannot take. */
export async function assertUsableColumns(input: LocalInput, schema: InputSchema): Promise<void> {
  const { columns } = schema;
  for (const { name } of columns.values()) {
    const clash = reservedNameClash(name);
    if (!clash) continue;
    throw new BadBucketDataError(
      `input ${input.key} has a column named '${name}', a name the compaction cannot tell apart from ${clash}; ` +
        'rename that column in the file. Nothing of the bucket was changed',
      [input.key],
    );
  }
  if ([...columns.keys()].some((lower) => DEDUPLICATED_NAME.test(lower) && columns.has(lower.replace(DEDUPLICATED_NAME, '')))) {
    // The names as written, from the footer: DuckDB's DESCRIBE shows them renamed.
    const footer = await readParquetFooter(new LocalWarehouseStore(path.dirname(input.path)), path.basename(input.path), input.size);
    const repeated = repeatedNames(footer.columns.map((c) => c.name));
    if (repeated.length > 0) {
      throw new BadBucketDataError(
        `input ${input.key} has columns whose names repeat or differ only in case (${repeated.map((n) => `'${n}'`).join(', ')}); ` +
          'DuckDB would keep one under a new name. Rewrite the file with distinct names. Nothing of the bucket was changed',
        [input.key],
      );
    }
  }
  if (!columns.has('id')) {
    throw new BadBucketDataError(`input ${input.key} has no 'id' column; rows cannot be deduplicated`, [input.key]);
  }
  for (const name of KEY_COLUMNS) {
    const written = columns.get(name)?.name;
    if (written === undefined || written === name) continue;
    throw new BadBucketDataError(
      `input ${input.key} spells the column '${name}' as '${written}': the compaction would read it as '${name}' (DuckDB ignores case), ` +
        `but the catalog and the table's readers look columns up by exact name, so the output would not match the table's '${name}'. ` +
        `Rename it to '${name}' in the file. ` +
        'Nothing of the bucket was changed',
      [input.key],
    );
  }
}

/**
 * The inputs without the ones that hold no row. A writer's empty file (an empty DataFrame, written with
 * whatever types its columns defaulted to, or without an `id`) holds nothing to merge; held to the
 * bucket's columns (assertUsableColumns, assertCompatibleSchemas), it would fail the bucket every week.
 * It is deleted with the other inputs once the output is published.
 */
export function withoutEmptyInputs(inputs: readonly LocalInput[], schemas: readonly InputSchema[]): { inputs: LocalInput[]; schemas: InputSchema[] } {
  const kept = schemas.flatMap((s, i) => (s.rows > 0 ? [i] : []));
  return { inputs: kept.map((i) => inputs[i]!), schemas: kept.map((i) => schemas[i]!) };
}

const INTEGERS = new Set(['TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'UTINYINT', 'USMALLINT', 'UINTEGER']);
const FLOATS = new Set(['FLOAT', 'DOUBLE']);
const NAIVE_TIMESTAMPS = new Set(['TIMESTAMP', 'TIMESTAMP_S', 'TIMESTAMP_MS', 'TIMESTAMP_NS']);

/**
 * Types that widen to one another without loss or change of meaning share a family. Integers and
 * floats in one bucket take the union's DOUBLE only when every integer is exactly a double
 * (integersExactAsDouble). Decimals of one scale are one family whatever their precision: pyarrow infers a
 * decimal's precision from each batch's values (12.5 is DECIMAL(4,2), 1234.75 DECIMAL(6,2)), DuckDB's union
 * takes the larger, and Iceberg widens a decimal's precision, not its scale.
 */
export function typeFamily(type: string): string {
  if (INTEGERS.has(type)) return 'integer';
  if (FLOATS.has(type)) return 'float';
  if (NAIVE_TIMESTAMPS.has(type)) return 'timestamp';
  const decimal = /^DECIMAL\(\d+,(\d+)\)$/.exec(type);
  if (decimal) return `decimal, scale ${decimal[1]}`;
  return type;
}

/**
 * Throws BadBucketDataError for the first column whose types disagree across inputs (e.g. `platform`
 * BIGINT in one part and VARCHAR in another), naming each file with its type.
 *
 * A file in which a column holds no value at all is no evidence of its type: pyarrow writes a column
 * that was None in every row of a batch with the Null type (DuckDB reads it as INTEGER), and our own
 * output keeps that INTEGER. Such a use is left out, as long as the type DuckDB's union gives the column
 * is still the type of the files that hold values. Looked at only when there is a conflict, so the
 * common case costs no extra metadata read.
 *
 * A nested column (struct, list, map) differs from file to file as STAC producers write it: struct fields
 * in another order, a field (an asset) more or less, an empty list typed INTEGER[]. DuckDB's union merges
 * structs by field name and its casts do too, so such a column compacts when every file's type lies
 * within the union's field by field (nestedFit).
 */
export async function assertCompatibleSchemas(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
): Promise<void> {
  assertOneSpelling(schemas);
  const conflicts = conflictingColumns(schemas);
  if (conflicts.size === 0) return;
  const paths = new Map(inputs.map((i) => [i.key, i.path]));
  let union: Map<string, string> | undefined;
  for (const [column, uses] of conflicts) {
    const typed = [];
    for (const use of uses) if (!(await holdsNoValue(session, paths.get(use.key)!, use.name))) typed.push(use);
    const families = new Set(typed.map((u) => typeFamily(u.type)));
    union ??= new Map((await unionColumns(session, inputs)).map((c) => [foldCase(c.name), c.type]));
    const unionType = union.get(column);
    // With no file holding a value any type loses nothing; otherwise the union must keep the typed files' type.
    if (unionType !== undefined && (families.size === 0 || (families.size === 1 && families.has(typeFamily(unionType))))) continue;
    if (unionType === 'DOUBLE' && families.size === 2 && families.has('integer') && families.has('float') && (await integersExactAsDouble(session, paths, typed))) continue;
    if (unionType !== undefined && isNestedType(unionType) && (await fitsNestedUnion(session, paths, typed, unionType))) continue;
    if (unionType === ZONED && typed.every((u) => u.type === ZONED || NAIVE_TO_ZONED.has(u.type))) continue;
    throw conflictError(column, uses);
  }
}

const ZONED = 'TIMESTAMP WITH TIME ZONE';
/**
 * Naive timestamps that a zoned one holds exactly (not TIMESTAMP_NS: the zoned type has microseconds).
 * A writer that dropped the zone beside files that kept it: the session reads naive values as UTC, as
 * Iceberg readers already read them in a `timestamptz` column, and the output is zoned, which ends the
 * conflict instead of failing the bucket every week.
 */
const NAIVE_TO_ZONED = new Set(['TIMESTAMP', 'TIMESTAMP_S', 'TIMESTAMP_MS']);

/** 2^53: every integer up to it in magnitude is exactly a double. */
const DOUBLE_EXACT_INTEGER = 9007199254740992n;

/**
 * Whether every integer value of `uses` (other uses are skipped) is exactly a double, so that the union's
 * DOUBLE loses nothing: pandas writes an integer property as float64 in a batch where it is missing
 * somewhere, beside int64 in the other batches, and such a bucket would otherwise never compact.
 */
export async function integersExactAsDouble(session: DuckSession, paths: ReadonlyMap<string, string>, uses: readonly ColumnUse[]): Promise<boolean> {
  for (const use of uses) {
    if (typeFamily(use.type) !== 'integer') continue;
    const [row] = await session.rows(
      `SELECT coalesce(max(abs(CAST(${sqlIdent(use.name)} AS HUGEINT))), 0)::VARCHAR AS largest FROM read_parquet(${sqlString(paths.get(use.key)!)}, hive_partitioning = false)`,
    );
    if (BigInt(String(row?.largest ?? '0')) > DOUBLE_EXACT_INTEGER) return false;
  }
  return true;
}

/** One step into a nested value: a struct's field, a list's or array's elements, a map's keys or values. */
type NestedStep = { field: string } | 'element' | 'key' | 'value';

/**
 * Where within the union's type `input` lies: undefined when it does not (another type somewhere, a field
 * the union spells differently); otherwise the paths at which the input has an INTEGER the union types
 * otherwise, which is only the Null type of a field without values (pyarrow's `[]` or `None` in every row)
 * if nothing is there (checked by the caller). Leaves of one family widen as at the top level.
 */
function nestedFit(input: DuckType, union: DuckType, at: readonly NestedStep[] = []): NestedStep[][] | undefined {
  if (input.kind === 'scalar' && union.kind === 'scalar' && typeFamily(input.name) === typeFamily(union.name)) return [];
  if (input.kind === 'scalar' && input.name === 'INTEGER') return [[...at]];
  if (input.kind === 'struct' && union.kind === 'struct') {
    const out: NestedStep[][] = [];
    for (const field of input.fields) {
      // Exactly as spelled: DuckDB would match `Href` to `href`, readers of the table would not.
      const target = union.fields.find((f) => f.name === field.name);
      const fit = target && nestedFit(field.type, target.type, [...at, { field: field.name }]);
      if (!fit) return undefined;
      out.push(...fit);
    }
    return out;
  }
  if ((input.kind === 'list' && union.kind === 'list') || (input.kind === 'array' && union.kind === 'array' && input.size === union.size)) {
    return nestedFit(input.element, union.element, [...at, 'element']);
  }
  if (input.kind === 'map' && union.kind === 'map') {
    const keys = nestedFit(input.key, union.key, [...at, 'key']);
    const values = keys && nestedFit(input.value, union.value, [...at, 'value']);
    return keys && values && [...keys, ...values];
  }
  return undefined;
}

/** Whether every use lies within the union's nested type, with no value where it has an INTEGER the union types otherwise. */
async function fitsNestedUnion(session: DuckSession, paths: ReadonlyMap<string, string>, uses: readonly ColumnUse[], unionType: string): Promise<boolean> {
  const union = tryParseDuckType(unionType);
  if (!union) return false;
  for (const use of uses) {
    const type = tryParseDuckType(use.type);
    const valueless = type && nestedFit(type, union);
    if (!valueless) return false;
    for (const steps of valueless) if ((await valuesAt(session, paths.get(use.key)!, use.name, steps)) > 0) return false;
  }
  return true;
}

/**
 * How many non-null values the file has at `steps` within `column`. A part of Parquet's Null type (as
 * pyarrow writes a struct field without values) has none, told from the footer; anything else is
 * counted, which reads the file's whole column.
 */
async function valuesAt(session: DuckSession, file: string, column: string, steps: readonly NestedStep[]): Promise<number> {
  if (await isNullTypedAt(session, file, column, steps)) return 0;
  let sql = `SELECT ${sqlIdent(column)} AS v FROM read_parquet(${sqlString(file)}, hive_partitioning = false)`;
  for (const step of steps) {
    const next =
      step === 'element' ? 'unnest(v)' : step === 'key' ? 'unnest(map_keys(v))' : step === 'value' ? 'unnest(map_values(v))' : `struct_extract(v, ${sqlString(step.field)})`;
    sql = `SELECT ${next} AS v FROM (${sql})`;
  }
  const [row] = await session.rows(`SELECT count(v) AS n FROM (${sql})`);
  return Number(row?.n ?? 0);
}

/**
 * A file's Parquet schema as DuckDB's parquet_schema() lists it (depth first), in the footer reader's
 * terms, so that groupShape reads its LIST and MAP layouts as the rebuild does.
 */
async function parquetSchemaTree(session: DuckSession, file: string): Promise<ParquetNode | undefined> {
  const rows = await session.rows(`SELECT name, type, repetition_type, num_children, logical_type, converted_type FROM parquet_schema(${sqlString(file)})`);
  let at = 0;
  const element = (): ParquetNode | undefined => {
    const row = rows[at++];
    if (!row) return undefined;
    const logicalType = row.logical_type === 'NullType()' ? 'NULL' : row.converted_type === null ? undefined : String(row.converted_type);
    const node: ParquetNode = { name: String(row.name), ...(logicalType ? { logicalType } : {}) };
    if (row.repetition_type !== null) node.repetition = String(row.repetition_type) as ParquetNode['repetition'];
    const count = Number(row.num_children ?? 0);
    if (count > 0) {
      node.children = [];
      for (let c = count; c > 0; c--) {
        const child = element();
        if (child) node.children.push(child);
      }
    } else if (row.type !== null) node.physicalType = String(row.type);
    return node;
  };
  return element();
}

/**
 * Whether the part of `column` at `steps` has Parquet's Null type in the file. A layout groupShape does
 * not understand answers false (the caller then reads).
 */
async function isNullTypedAt(session: DuckSession, file: string, column: string, steps: readonly NestedStep[]): Promise<boolean> {
  const root = await parquetSchemaTree(session, file);
  let at = root?.children?.find((c) => c.name === column);
  try {
    for (const step of steps) {
      if (!at) return false;
      const shape = groupShape(at);
      if (step === 'element') at = shape.kind === 'list' ? shape.element : undefined;
      else if (step === 'key' || step === 'value') at = shape.kind === 'map' ? shape[step] : undefined;
      else at = shape.kind === 'struct' ? shape.fields.find((f) => f.name === step.field) : undefined;
    }
  } catch (err) {
    if (err instanceof NoIcebergType) return false;
    throw err;
  }
  return at !== undefined && !at.children && at.logicalType === 'NULL';
}

export type ColumnUse = { key: string; name: string; type: string; /** Index of the input (plan order). */ input: number };

/** Every input's use of each column, by lower-cased name. */
export function columnUses(schemas: readonly InputSchema[]): Map<string, ColumnUse[]> {
  const byColumn = new Map<string, ColumnUse[]>();
  schemas.forEach((s, input) => {
    for (const [lower, col] of s.columns) {
      let list = byColumn.get(lower);
      if (!list) byColumn.set(lower, (list = []));
      list.push({ key: s.key, name: col.name, type: col.type, input });
    }
  });
  return byColumn;
}

/**
 * DuckDB matches column names without regard to case and writes the first input's spelling for all
 * rows: `Platform` in one part and `platform` in another would come out as `Platform`, a column the
 * table does not have (readers look names up exactly, so they lose the values of the whole bucket).
 */
function assertOneSpelling(schemas: readonly InputSchema[]): void {
  for (const uses of columnUses(schemas).values()) {
    if (new Set(uses.map((u) => u.name)).size < 2) continue;
    const detail = listSome(uses.map((u) => `${u.key} (${u.name})`));
    throw new BadBucketDataError(
      `column '${uses[0]!.name}' is spelled differently across inputs: ${detail}; readers tell the spellings apart, DuckDB does not. Rewrite the files with one spelling`,
      [...new Set(uses.map((u) => u.key))],
    );
  }
}

function conflictingColumns(schemas: readonly InputSchema[]): Map<string, ColumnUse[]> {
  return new Map([...columnUses(schemas)].filter(([, uses]) => new Set(uses.map((u) => typeFamily(u.type))).size > 1));
}

function conflictError(column: string, uses: readonly ColumnUse[]): BadBucketDataError {
  // The files of the rarer types first: the odd file among a hundred parts is the one to look at, and
  // the message names only ten.
  const count = new Map<string, number>();
  for (const u of uses) count.set(u.type, (count.get(u.type) ?? 0) + 1);
  const rarerFirst = [...uses].sort((a, b) => count.get(a.type)! - count.get(b.type)!);
  const detail = listSome(rarerFirst.map((u) => `${u.key} (${u.type})`));
  return new BadBucketDataError(`column '${column}' has conflicting types across inputs: ${detail}`, [...new Set(uses.map((u) => u.key))]);
}

/** The column is of the Parquet Null type, or null in every row of every row group (by the footer's statistics). */
export async function holdsNoValue(session: DuckSession, file: string, column: string): Promise<boolean> {
  if (await isNullTypedAt(session, file, column, [])) return true;
  const [stats] = await session.rows(
    `SELECT count(*) AS groups, count(stats_null_count) AS counted, sum(stats_null_count) AS nulls, sum(num_values) AS n_values
     FROM parquet_metadata(${sqlString(file)}) WHERE path_in_schema = ${sqlString(column)}`,
  );
  return stats !== undefined && Number(stats.groups) > 0 && Number(stats.counted) === Number(stats.groups) && Number(stats.nulls) === Number(stats.n_values);
}

/**
 * Columns of the contract, kept in every output whatever their values, and their types: one without any
 * value in a bucket is written as its type, all nulls (not as the INTEGER DuckDB gives pyarrow's Null type,
 * which readers cannot read as the table's string or timestamp).
 */
const CONTRACT_COLUMN_TYPES: ReadonlyMap<string, string> = new Map([
  ['id', 'VARCHAR'],
  ['grid_partition', 'VARCHAR'],
  ['geometry', 'BLOB'],
  ['datetime', 'TIMESTAMP WITH TIME ZONE'],
  ['platform', 'VARCHAR'],
  ['updated', 'TIMESTAMP WITH TIME ZONE'],
]);

/** How an output's columns differ from the union of its inputs (valuelessParts, tableTypeCasts). */
export interface OutputColumns {
  /** Top-level columns left out, named as the first input spells them. */
  omitted: string[];
  /**
   * Columns (by the union's name) written as another type than the union's: nested columns without their
   * valueless struct fields, numbers as the table types them.
   */
  casts: Map<string, string>;
  /**
   * Columns (by the union's name) written as their value or, where null, the value of other union columns
   * (left out themselves): a renamed column's other names (renamedColumnMerges).
   */
  merged: Map<string, string[]>;
}

/**
 * Parts of the union that hold no value in any input and that DuckDB types INTEGER only for that reason
 * (pyarrow's Null type, or an all-null INTEGER an earlier output kept): top-level columns, and struct
 * fields within nested columns (a Landsat band's `unit`, None in every item). Written, such a part is an
 * int32 that readers cannot read as the table's type (a string, say), and pyiceberg fails the bucket's
 * file; left out, it reads as null, as it was. Told from the schemas first, so a bucket without such a
 * part costs no extra read.
 */
export async function valuelessParts(session: DuckSession, inputs: readonly LocalInput[], schemas: readonly InputSchema[]): Promise<OutputColumns> {
  const columns: string[] = [];
  const nested: string[] = [];
  const casts = new Map<string, string>();
  const uses = columnUses(schemas);
  for (const [lower, list] of uses) {
    if (list.some((u) => u.type.includes('INTEGER') && isNestedType(u.type))) nested.push(lower);
    if (!list.every((u) => u.type === 'INTEGER')) continue;
    let valueless = true;
    for (const u of list) if (!(valueless = await holdsNoValue(session, inputs[u.input]!.path, u.name))) break;
    if (!valueless) continue;
    const contractType = CONTRACT_COLUMN_TYPES.get(lower);
    // The union names a column as its first input spells it.
    if (contractType) casts.set(list[0]!.name, contractType);
    else columns.push(list[0]!.name);
  }
  if (nested.length === 0) return { omitted: columns, casts, merged: new Map() };
  for (const c of await unionColumns(session, inputs)) {
    if (!nested.includes(foldCase(c.name))) continue;
    const union = tryParseDuckType(c.type);
    const list = uses.get(foldCase(c.name))!;
    const typed = list.flatMap((use) => {
      const type = tryParseDuckType(use.type);
      return type ? [{ use, type }] : [];
    });
    if (!union || typed.length < list.length) continue;
    const valueless = async (steps: readonly NestedStep[]): Promise<boolean> => {
      for (const { use, type } of typed) {
        const at = typeAt(type, steps);
        if (at === undefined) continue;
        if (at.kind !== 'scalar' || at.name !== 'INTEGER' || (await valuesAt(session, inputs[use.input]!.path, use.name, steps)) > 0) return false;
      }
      return true;
    };
    const pruned = formatDuckType(await withoutValuelessFields(union, [], valueless));
    if (pruned !== formatDuckType(union)) casts.set(c.name, pruned);
  }
  return { omitted: columns, casts, merged: new Map() };
}

/** `type` without the INTEGER struct fields `valueless` says hold nothing; a struct keeps at least one field. */
async function withoutValuelessFields(type: DuckType, at: readonly NestedStep[], valueless: (steps: readonly NestedStep[]) => Promise<boolean>): Promise<DuckType> {
  switch (type.kind) {
    case 'struct': {
      const fields: { name: string; type: DuckType }[] = [];
      for (const f of type.fields) {
        const steps = [...at, { field: f.name }];
        if (f.type.kind === 'scalar' && f.type.name === 'INTEGER' && (await valueless(steps))) continue;
        fields.push({ name: f.name, type: await withoutValuelessFields(f.type, steps, valueless) });
      }
      return fields.length ? { kind: 'struct', fields } : type;
    }
    case 'list':
    case 'array':
      return { ...type, element: await withoutValuelessFields(type.element, [...at, 'element'], valueless) };
    case 'map':
      return { ...type, value: await withoutValuelessFields(type.value, [...at, 'value'], valueless) };
    case 'scalar':
      return type;
  }
}

/** The part of `type` at `steps`, or undefined where it has no such field. */
function typeAt(type: DuckType, steps: readonly NestedStep[]): DuckType | undefined {
  let at: DuckType | undefined = type;
  for (const step of steps) {
    if (at === undefined) return undefined;
    if (step === 'element') at = at.kind === 'list' || at.kind === 'array' ? at.element : undefined;
    else if (step === 'key' || step === 'value') at = at.kind === 'map' ? at[step] : undefined;
    else at = at.kind === 'struct' ? at.fields.find((f) => f.name === step.field)?.type : undefined;
  }
  return at;
}

/** The value of the first of `names` (a renamed column's, in order) that is not null in `alias`'s row. */
export function firstValueOf(alias: string, names: readonly string[]): string {
  const refs = names.map((n) => `${alias}.${sqlIdent(n)}`);
  return refs.length === 1 ? refs[0]! : `coalesce(${refs.join(', ')})`;
}

/** `alias.*` as the output writes it: without `exclude` and the omitted columns, the others cast as `output` says. */
export function outputStar(alias: string, exclude: readonly string[], output: OutputColumns): string {
  const value = (name: string): string => firstValueOf(alias, [name, ...(output.merged.get(name) ?? [])]);
  const replace = [...new Set([...output.casts.keys(), ...output.merged.keys()])].map((name) => {
    const type = output.casts.get(name);
    return `${type ? `CAST(${value(name)} AS ${type})` : value(name)} AS ${sqlIdent(name)}`;
  });
  return `${alias}.* EXCLUDE (${[...exclude, ...output.omitted.map(sqlIdent)].join(', ')})${replace.length ? ` REPLACE (${replace.join(', ')})` : ''}`;
}

const TEMPORAL = new Set(['TIMESTAMP WITH TIME ZONE', 'DATE', ...NAIVE_TIMESTAMPS]);

/** How `updated` compares: by microseconds, by nanoseconds (naive TIMESTAMP_NS, as pandas writes), or not at all (no value anywhere). */
export type UpdatedPrecision = 'us' | 'ns' | 'none';

/**
 * The precision the winner of an id must be chosen at. `updated` must be a point in time: text would
 * compare alphabetically ('…+02:00' against '…Z') and keep an older version. A file in which it holds
 * no value at all (pyarrow's Null type, read as INTEGER) is no evidence of its type.
 */
export async function updatedPrecision(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
): Promise<UpdatedPrecision> {
  const paths = new Map(inputs.map((i) => [i.key, i.path]));
  const temporal: string[] = [];
  for (const s of schemas) {
    const col = s.columns.get('updated');
    if (!col) continue;
    if (TEMPORAL.has(col.type)) temporal.push(col.type);
    else if (!(await holdsNoValue(session, paths.get(s.key)!, col.name))) {
      throw new BadBucketDataError(
        `column 'updated' of ${s.key} is ${col.type}, not a timestamp: the latest version of an id cannot be told by it`,
        [s.key],
      );
    }
  }
  if (temporal.length === 0) return 'none';
  return temporal.includes('TIMESTAMP_NS') ? 'ns' : 'us';
}

/** A column of the union of all inputs' schemas, in the order DuckDB's union_by_name gives them. */
export interface UnionColumn {
  name: string;
  type: string;
  /** Other union columns whose value it takes where its own is null, in order (OutputColumns.merged). */
  alsoFrom?: readonly string[];
}

/** Columns of the union of the inputs (metadata only), as read_parquet(union_by_name) lays them out. */
export async function unionColumns(session: DuckSession, inputs: readonly LocalInput[]): Promise<UnionColumn[]> {
  const rows = await session.rows(
    `DESCRIBE SELECT * FROM read_parquet(${sqlStringList(inputs.map((i) => i.path))}, union_by_name = true, hive_partitioning = false)`,
  );
  return rows.map((r) => ({ name: String(r.column_name), type: String(r.column_type) }));
}

/** True when some input has the column (compare lower-cased). */
export function anyHasColumn(schemas: readonly InputSchema[], lower: string): boolean {
  return schemas.some((s) => s.columns.has(lower));
}

/**
 * A merge statement failed converting one input's column to the type the union of all inputs gives it
 * (year 9999 in milliseconds does not fit nanoseconds). Each file reads cleanly on its own, so only
 * DuckDB's message tells the file; the same inputs fail the same way on every retry.
 */
export function unionCastFailure(err: unknown, inputs: readonly LocalInput[]): BadBucketDataError | undefined {
  if (!(err instanceof Error)) return undefined;
  const m = /^Conversion Error: Error while reading file "(.+?)": failed to cast column "(.+?)" from type (.+?) to (.+?):/.exec(err.message);
  const input = m && inputs.find((i) => i.path === m[1]);
  if (!m || !input) return undefined;
  return new BadBucketDataError(
    `input ${input.key}: column '${m[2]}' (${m[3]}) holds a value that does not fit the type the bucket's inputs together give it (${m[4]}); ` +
      `rewrite the file or its column. DuckDB said: ${briefly(err, input)}`,
    [input.key],
  );
}

/**
 * After a merge statement failed: reads every column of every input separately and names the first
 * one that cannot be decoded (a corrupt page behind a valid footer). Undefined if all read cleanly,
 * meaning the failure was not the data's fault (memory, disk, interruption) and is worth a retry.
 */
export async function findUnreadableInput(
  session: DuckSession,
  inputs: readonly LocalInput[],
): Promise<BadBucketDataError | undefined> {
  for (const input of inputs) {
    try {
      await session.rows(
        `SELECT count(hash(t)) AS n FROM read_parquet(${sqlString(input.path)}, hive_partitioning = false) t`,
      );
    } catch (err) {
      if (!isDamagedFileError(err)) throw err;
      return new BadBucketDataError(`input ${input.key} cannot be read: ${briefly(err, input)}`, [input.key]);
    }
  }
  return undefined;
}

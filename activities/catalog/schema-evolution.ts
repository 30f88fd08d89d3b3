/**
 * The table's schema against the columns of the files a rebuild registers. The pipeline adds columns
 * over time (a STAC extension's fields) and may write one wider than before (int64 where it wrote
 * int32). Registered as they are, such files break readers: pyiceberg fails every scan that touches a
 * file with a column its name mapping lacks, and one whose type is wider than the table's. So the
 * rebuild evolves the schema as Iceberg's `union_by_name` does: columns the table lacks (and fields a
 * struct lacks) are added as optional fields with new ids, an int widens to long, a float to double, a
 * decimal to a larger precision. What no evolution makes readable (a type of another kind, a name that
 * differs from the table's only in case, a name the file repeats, Parquet's Null type, field ids of another
 * numbering) is reported; the file stays registered, as leaving it out would hide its rows from every reader.
 */
import { nameMappingNames, type IcebergField, type IcebergSchema, type IcebergType, type PartitionField } from './iceberg-schema';
import type { FooterColumn, ParquetNode } from './parquet-footer';

/** A column that has no Iceberg type; the message says why. */
export class NoIcebergType extends Error {}

/** What one file asked of the schema. */
export interface Admission {
  /** Why readers still cannot read the file as the table; undefined when they can. */
  problem?: string;
  /** Ids of fields whose type this file widened. */
  widened: number[];
  /**
   * A column this rebuild added took another type with this file: the type of this file, which has
   * values where the files before had none, or double for floats where the files before held integers.
   * The files admitted before read it by the wrong type and must be looked at again.
   */
  retypedProvisional: boolean;
}

export class SchemaEvolution {
  private fields: IcebergField[];
  private current: IcebergSchema;
  private lastId: number;
  /** The names each field id is known by: its own, and the aliases of the table's name mapping (a renamed column). */
  readonly aliases: ReadonlyMap<number, readonly string[]>;
  /** Top-level fields this rebuild added from columns without any value: their type is a guess until a file has values. */
  private provisional = new Set<number>();
  /** Top-level fields this rebuild added: no reader has seen their type yet, so it may still change. */
  private addedHere = new Set<number>();
  /** Columns added, as dotted paths, in the order they were first seen. */
  readonly added: string[] = [];
  /** Columns whose type widened: `path: from -> to`. */
  readonly widened: string[] = [];
  private admission: Admission = { widened: [], retypedProvisional: false };
  private readonly partitionNames: ReadonlyMap<string, string>;

  constructor(
    private readonly base: IcebergSchema,
    lastColumnId: number,
    /** The schema ids the table has: a changed schema takes the next one. */
    private readonly schemaIds: readonly number[],
    /** The table's name mapping (JSON text), whose aliases match a renamed column's files. */
    nameMapping?: string,
    /** The table's partition fields, whose names a new column may not take (partitionNames). */
    partitionFields: readonly PartitionField[] = [],
  ) {
    this.partitionNames = partitionNames(partitionFields, base);
    this.fields = base.fields;
    this.current = base;
    this.lastId = lastColumnId;
    // Without a usable mapping fields are known by their names only (the rebuild writes a new mapping).
    this.aliases = nameMappingNames(nameMapping);
  }

  get changed(): boolean {
    return this.fields !== this.base.fields;
  }

  get lastColumnId(): number {
    return this.lastId;
  }

  /** The table's schema as far as the files admitted so far need: the base itself when nothing changed. */
  schema(): IcebergSchema {
    return this.current;
  }

  /** Fits a file's columns into the schema, adding and widening what it can. */
  admit(columns: readonly FooterColumn[]): Admission {
    const problems: string[] = [];
    this.admission = { widened: [], retypedProvisional: false };
    // Only a top-level primitive's footer totals tell that it holds no value.
    const valueless = new Set(columns.filter((c) => c.totals && c.totals.nullCount === c.totals.valueCount).map((c) => c.name));
    const before = { added: this.added.length, widened: this.widened.length, lastId: this.lastId, provisional: new Set(this.provisional), addedHere: new Set(this.addedHere) };
    let fields = this.mergeStruct(this.fields, columns.map((c) => c.node), '', problems, valueless);
    // (A table that already has such a clash, from an earlier release, is not held to it.)
    const clash = fields === this.fields || nameClash(this.fields) ? undefined : nameClash(fields);
    if (clash) {
      // Readers index every field by its dotted path and refuse a schema in which two fields share one,
      // for good: a schema once written stays in the table's metadata. So this file changes nothing.
      problems.push(
        `column '${clash.name}' would be a second field of that dotted name in the table's schema (beside field ${Math.min(...clash.ids)}), ` +
          'and Iceberg readers refuse such a schema, so the file does not evolve it: rename the column in the file',
      );
      fields = this.fields;
      this.added.length = before.added;
      this.widened.length = before.widened;
      this.lastId = before.lastId;
      this.provisional = before.provisional;
      this.addedHere = before.addedHere;
      this.admission = { widened: [], retypedProvisional: false };
    }
    if (fields !== this.fields) {
      this.fields = fields;
      this.current = { ...this.base, 'schema-id': Math.max(...this.schemaIds, this.base['schema-id']) + 1, fields };
    }
    const problem = problems.length ? problems.slice(0, 3).join('; ') + (problems.length > 3 ? `; and ${problems.length - 3} more` : '') : undefined;
    return { ...this.admission, ...(problem ? { problem } : {}) };
  }

  private mergeStruct(fields: IcebergField[], nodes: readonly ParquetNode[], prefix: string, problems: string[], valueless?: ReadonlySet<string>): IcebergField[] {
    let out = fields;
    // Readers index a file's columns by name and refuse a file in which one repeats (pyiceberg fails every
    // scan that reaches it): such a column neither adds to nor widens the table.
    const repeated = timesNamed(nodes);
    for (const name of [...repeated.keys()]) problems.push(`column '${prefix}${name}' occurs ${repeated.get(name)} times in the file, and readers refuse a file whose columns repeat a name: rewrite the file with distinct names`);
    // A renamed column's old and new names in one file both map to its field, and readers take only one of
    // them: the other's values read as null.
    const namedFor = new Map<number, string>();
    for (const node of nodes) {
      const path = prefix + node.name;
      if (repeated.has(node.name)) continue;
      // A renamed column's files still carry the old name, which the name mapping keeps as an alias.
      const exact = out.findIndex((f) => f.name === node.name);
      const index = exact >= 0 ? exact : out.findIndex((f) => (this.aliases.get(f.id) ?? []).includes(node.name));
      if (index < 0) {
        const alike = out.find((f) => f.name.toLowerCase() === node.name.toLowerCase());
        if (alike) {
          problems.push(`column '${path}' matches the table's '${prefix}${alike.name}' only in case, and readers look columns up by exact name`);
          continue;
        }
        const partition = prefix === '' ? this.partitionNames.get(node.name) : undefined;
        if (partition) {
          problems.push(
            `column '${path}' has the name of the partition field ${partition}, and Iceberg's Java library (Spark, Trino, Athena) ` +
              'refuses a table whose schema has both, so it is not added: rename the column in the file',
          );
          continue;
        }
        const added = this.newField(node, path, problems);
        if (added) {
          // The walk of an existing column, for the field ids a file may carry.
          this.mergeType(added.id, added.type, node, path, problems);
          out = [...out, added];
          this.added.push(path);
          if (valueless?.has(node.name)) this.provisional.add(added.id);
          if (valueless) this.addedHere.add(added.id);
        }
        continue;
      }
      const field = out[index]!;
      const other = namedFor.get(field.id);
      if (other !== undefined) {
        // Compaction merges the names of renamed top-level columns only (renamedColumnMerges).
        const remedy =
          prefix === ''
            ? 'a compaction of the bucket merges them (a file alone in its bucket: compact with --threshold 1 for its cell and year)'
            : 'rewrite the file with one of them (compaction merges renamed top-level columns only)';
        problems.push(
          `columns '${prefix}${other}' and '${path}' are both names of the table's column '${prefix}${field.name}' (renamed), and readers read only one ` +
            `of them, the other as null: ${remedy}`,
        );
        continue;
      }
      namedFor.set(field.id, node.name);
      const type = this.mergeType(field.id, field.type, node, path, problems, valueless ? !valueless.has(node.name) : undefined);
      if (type !== field.type) out = out.map((f, i) => (i === index ? { ...f, type } : f));
    }
    return out;
  }

  private newField(node: ParquetNode, path: string, problems: string[]): IcebergField | undefined {
    const before = this.lastId;
    const id = ++this.lastId;
    const type = typed(path, problems, () => this.convert(node));
    if (type !== undefined) return { id, name: node.name, required: false, type };
    this.lastId = before;
    return undefined;
  }

  /** The Iceberg type of a new column, its nested fields numbered after the column's own id. */
  private convert(node: ParquetNode): IcebergType {
    const shape = groupShape(node);
    if (shape.kind === 'primitive') return primitiveType(node);
    if (shape.kind === 'list') {
      const elementId = ++this.lastId;
      return { type: 'list', 'element-id': elementId, element: this.convert(shape.element), 'element-required': false };
    }
    if (shape.kind === 'map') {
      const keyId = ++this.lastId;
      const valueId = ++this.lastId;
      return { type: 'map', 'key-id': keyId, key: this.convert(shape.key), 'value-id': valueId, value: this.convert(shape.value), 'value-required': false };
    }
    const ids = shape.fields.map(() => ++this.lastId);
    return { type: 'struct', fields: shape.fields.map((f, i) => ({ id: ids[i]!, name: f.name, required: false, type: this.convert(f) })) };
  }

  /**
   * The table's type of an existing column, widened or given new struct fields where the file needs it.
   * `holdsValues` is known for top-level columns only.
   */
  private mergeType(id: number, type: IcebergType, node: ParquetNode, path: string, problems: string[], holdsValues?: boolean): IcebergType {
    // A file written for an Iceberg table carries field ids, and readers match columns by them, not by
    // name: ids of another numbering read another column (or none) with no error. A compaction rewrites
    // the file without ids.
    if (node.fieldId !== undefined && node.fieldId !== id) {
      problems.push(`column '${path}' carries Parquet field id ${node.fieldId}, the table's field has id ${id} (readers take a file's ids over the name mapping)`);
    }
    const shape = typed(path, problems, () => groupShape(node));
    if (shape === undefined) return type;
    if (typeof type === 'string') {
      if (shape.kind !== 'primitive') {
        problems.push(`column '${path}' is a ${shape.kind} in the file, ${type} in the table`);
        return type;
      }
      const fileType = typed(path, problems, () => primitiveType(node));
      if (fileType === undefined) return type;
      const provisional = this.provisional.has(id) && holdsValues === true;
      if (provisional) this.provisional.delete(id);
      if (readsAs(fileType, type)) return type;
      const wider = widened(type, fileType);
      if (wider) {
        this.widened.push(`${path}: ${type} -> ${wider}`);
        this.admission.widened.push(id);
        return wider;
      }
      if (provisional) {
        // Its type came from files without a value in it; this one's values decide.
        this.admission.retypedProvisional = true;
        return fileType;
      }
      if (this.addedHere.has(id) && (type === 'int' || type === 'long') && (fileType === 'float' || fileType === 'double')) {
        // A new property pandas wrote as int64 in some batches and float64 in others (where an item lacks
        // it). Either type leaves the other files unreadable until compaction rewrites them as the
        // table's (tableTypeCasts): integers always become doubles (up to 2^53), floats become longs only
        // when whole, so double is the type every file can reach.
        this.admission.retypedProvisional = true;
        return 'double';
      }
      problems.push(`column '${path}' is ${fileType} in the file, ${type} in the table`);
      return type;
    }
    if (type.type !== shape.kind) {
      problems.push(`column '${path}' is a ${shape.kind} in the file, a ${type.type} in the table`);
      return type;
    }
    if (type.type === 'struct' && shape.kind === 'struct') {
      const fields = this.mergeStruct(type.fields, shape.fields, `${path}.`, problems);
      return fields === type.fields ? type : { ...type, fields };
    }
    if (type.type === 'list' && shape.kind === 'list') {
      const element = this.mergeType(type['element-id'], type.element, shape.element, `${path}.element`, problems);
      return element === type.element ? type : { ...type, element };
    }
    if (type.type === 'map' && shape.kind === 'map') {
      const key = this.mergeType(type['key-id'], type.key, shape.key, `${path}.key`, problems);
      const value = this.mergeType(type['value-id'], type.value, shape.value, `${path}.value`, problems);
      return key === type.key && value === type.value ? type : { ...type, key, value };
    }
    return type;
  }
}

/**
 * Two fields of `fields` that share a dotted path, as Iceberg's name index spells them (`a.b` for field b
 * of struct a; `element`, `key` and `value` for the parts of lists and maps): a top-level column named
 * `props.c` beside a struct `props` with a field `c`.
 */
function nameClash(fields: readonly IcebergField[]): { name: string; ids: [number, number] } | undefined {
  const seen = new Map<string, number>();
  const visit = (name: string, id: number, type: IcebergType): { name: string; ids: [number, number] } | undefined => {
    const other = seen.get(name);
    if (other !== undefined) return { name, ids: [other, id] };
    seen.set(name, id);
    if (typeof type === 'string') return undefined;
    if (type.type === 'struct') {
      for (const f of type.fields) {
        const found = visit(`${name}.${f.name}`, f.id, f.type);
        if (found) return found;
      }
      return undefined;
    }
    if (type.type === 'list') return visit(`${name}.element`, type['element-id'], type.element);
    return visit(`${name}.key`, type['key-id'], type.key) ?? visit(`${name}.value`, type['value-id'], type.value);
  };
  for (const f of fields) {
    const found = visit(f.name, f.id, f.type);
    if (found) return found;
  }
  return undefined;
}

/** `read()`, or undefined after noting in `problems` why the column at `path` has no Iceberg type. */
function typed<T>(path: string, problems: string[], read: () => T): T | undefined {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof NoIcebergType)) throw err;
    problems.push(`column '${path}' ${err.message}`);
    return undefined;
  }
}

/**
 * Partition field name → how it is derived (`year(datetime)`), for the fields no column may be named
 * like: Iceberg's Java library refuses a schema column named like a partition field unless the field is
 * the identity of that very column (`grid_partition`).
 */
function partitionNames(fields: readonly PartitionField[], schema: IcebergSchema): Map<string, string> {
  const names = new Map<string, string>();
  for (const f of fields) {
    const source = schema.fields.find((x) => x.id === f['source-id'])?.name ?? `field ${f['source-id']}`;
    if (!(f.transform === 'identity' && source === f.name)) names.set(f.name, `'${f.name}' (${f.transform}(${source}))`);
  }
  return names;
}

export type Shape =
  | { kind: 'primitive' }
  | { kind: 'list'; element: ParquetNode }
  | { kind: 'map'; key: ParquetNode; value: ParquetNode }
  | { kind: 'struct'; fields: ParquetNode[] };

/** What a node is, by the Parquet spec's LIST and MAP layouts (three-level, and the two-level form old writers used). */
export function groupShape(node: ParquetNode): Shape {
  if (!node.children) {
    if (node.repetition === 'REPEATED') throw new NoIcebergType('is a repeated field without a LIST annotation, which Iceberg cannot describe');
    return { kind: 'primitive' };
  }
  if (node.logicalType === 'LIST') {
    const repeated = node.children.length === 1 ? node.children[0]! : undefined;
    if (!repeated || repeated.repetition !== 'REPEATED') throw new NoIcebergType('is a LIST whose layout is not the Parquet spec\'s');
    // Three levels (list / element). The element itself: a repeated primitive, a repeated group of several
    // fields, or one named `array` or `<list>_tuple` (the two-level layouts of old writers, per the Parquet spec).
    const legacy = !repeated.children || repeated.children.length !== 1 || repeated.name === 'array' || repeated.name === `${node.name}_tuple`;
    const element = legacy ? { ...repeated, repetition: 'REQUIRED' as const } : repeated.children![0]!;
    return { kind: 'list', element };
  }
  if (node.logicalType === 'MAP' || node.logicalType === 'MAP_KEY_VALUE') {
    const kv = node.children.length === 1 ? node.children[0]! : undefined;
    if (!kv || kv.repetition !== 'REPEATED' || kv.children?.length !== 2) throw new NoIcebergType('is a MAP whose layout is not the Parquet spec\'s');
    return { kind: 'map', key: kv.children[0]!, value: kv.children[1]! };
  }
  return { kind: 'struct', fields: node.children };
}

const SIGNED_32 = /^(INTEGER\((8|16|32),signed\)|INT_(8|16|32)|INTEGER\((8|16),unsigned\)|UINT_(8|16))$/;
const DECIMAL = /^DECIMAL\((\d+),(\d+)\)$/;

/** The Iceberg (format 2) type a primitive Parquet column reads as. */
function primitiveType(node: ParquetNode): string {
  const logical = node.logicalType ?? '';
  if (logical === 'NULL') throw new NoIcebergType('is of the Parquet Null type (pyarrow writes it for a column without any value), which Iceberg has no type for');
  const decimal = DECIMAL.exec(logical);
  if (decimal && Number(decimal[1]) > 38) throw new NoIcebergType(`is ${logical}, wider than Iceberg's decimals (38 digits)`);
  if (decimal) return `decimal(${decimal[1]}, ${decimal[2]})`;
  const timestamp = /^TIMESTAMP\((MILLIS|MICROS|NANOS),(UTC|local)\)$/.exec(logical);
  switch (node.physicalType) {
    case 'BOOLEAN':
      return 'boolean';
    case 'INT32':
      if (!logical || SIGNED_32.test(logical)) return 'int';
      if (logical === 'INTEGER(32,unsigned)' || logical === 'UINT_32') return 'long';
      if (logical === 'DATE') return 'date';
      if (/^TIME/.test(logical)) return 'time';
      break;
    case 'INT64':
      if (!logical || logical === 'INTEGER(64,signed)' || logical === 'INT_64') return 'long';
      // Format 2 has microseconds only; readers convert milliseconds and nanoseconds.
      if (timestamp) return timestamp[2] === 'UTC' ? 'timestamptz' : 'timestamp';
      if (logical === 'TIMESTAMP_MICROS' || logical === 'TIMESTAMP_MILLIS') return 'timestamptz';
      if (/^TIME/.test(logical)) return 'time';
      break;
    case 'INT96':
      // Spark's legacy timestamp, which Iceberg's readers read as a point in time.
      return 'timestamptz';
    case 'FLOAT':
      return 'float';
    case 'DOUBLE':
      return 'double';
    case 'BYTE_ARRAY':
      if (logical === 'STRING' || logical === 'UTF8' || logical === 'JSON' || logical === 'ENUM') return 'string';
      return 'binary';
    case 'FIXED_LEN_BYTE_ARRAY':
      if (logical === 'UUID') return 'uuid';
      if (logical === 'FLOAT16') break;
      return node.typeLength !== undefined ? `fixed[${node.typeLength}]` : 'binary';
  }
  throw new NoIcebergType(`is ${node.physicalType ?? 'a group'}${logical ? ` (${logical})` : ''}, which Iceberg has no type for`);
}

function decimalOf(type: string): { precision: number; scale: number } | undefined {
  const m = /^decimal\((\d+),\s*(\d+)\)$/.exec(type);
  return m ? { precision: Number(m[1]), scale: Number(m[2]) } : undefined;
}

/** Whether a reader reads a file column of `fileType` as the table's `tableType` (equal, or a promotion readers make). */
function readsAs(fileType: string, tableType: string): boolean {
  if (fileType === tableType) return true;
  if (fileType === 'int' && tableType === 'long') return true;
  if (fileType === 'float' && tableType === 'double') return true;
  // Naive and zoned timestamps, and the byte kinds, are told apart by annotations writers disagree on: not ours to refuse.
  const lenient = [new Set(['timestamp', 'timestamptz']), new Set(['string', 'binary', 'uuid'])];
  if (lenient.some((kinds) => kinds.has(fileType) && kinds.has(tableType))) return true;
  if (/^fixed\[/.test(fileType) && (tableType === 'binary' || /^fixed\[/.test(tableType) || tableType === 'uuid')) return true;
  const [f, t] = [decimalOf(fileType), decimalOf(tableType)];
  return f !== undefined && t !== undefined && f.scale === t.scale && f.precision <= t.precision;
}

/** The table's type widened to read `fileType`, when Iceberg allows that promotion. */
function widened(tableType: string, fileType: string): string | undefined {
  if (tableType === 'int' && fileType === 'long') return 'long';
  if (tableType === 'float' && fileType === 'double') return 'double';
  const [t, f] = [decimalOf(tableType), decimalOf(fileType)];
  if (t && f && t.scale === f.scale && f.precision > t.precision && f.precision <= 38) return `decimal(${f.precision}, ${f.scale})`;
  return undefined;
}

/** The names that more than one of `nodes` has, with how many have each. */
export function timesNamed(nodes: readonly { name: string }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { name } of nodes) counts.set(name, (counts.get(name) ?? 0) + 1);
  return new Map([...counts].filter(([, n]) => n > 1));
}

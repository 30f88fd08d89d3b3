/**
 * The Iceberg schema model we need, and the default table of the earthcatalog pipeline
 * (shared/reference/iceberg-schema.md). Used only for a table that does not exist yet: an existing
 * table keeps its own schema, spec and properties.
 */

export interface IcebergListType {
  type: 'list';
  'element-id': number;
  element: IcebergType;
  'element-required': boolean;
}

export interface IcebergMapType {
  type: 'map';
  'key-id': number;
  key: IcebergType;
  'value-id': number;
  value: IcebergType;
  'value-required': boolean;
}

export interface IcebergStructType {
  type: 'struct';
  fields: IcebergField[];
}

export type IcebergType = string | IcebergStructType | IcebergListType | IcebergMapType;

export interface IcebergField {
  id: number;
  name: string;
  required: boolean;
  type: IcebergType;
  doc?: string;
}

export interface IcebergSchema extends IcebergStructType {
  'schema-id': number;
  'identifier-field-ids'?: number[];
}

export interface PartitionField {
  'source-id': number;
  'field-id': number;
  transform: string;
  name: string;
}

export interface PartitionSpec {
  'spec-id': number;
  fields: PartitionField[];
}

export interface SortOrder {
  'order-id': number;
  fields: unknown[];
}

export const NAME_MAPPING_PROPERTY = 'schema.name-mapping.default';

const DEFAULT_COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ['id', 'string'],
  ['grid_partition', 'string'],
  ['geometry', 'binary'],
  ['datetime', 'timestamptz'],
  ['platform', 'string'],
  ['percent_valid_pixels', 'long'],
  ['date_dt', 'long'],
  ['proj:code', 'string'],
  ['assets', 'string'],
  ['links', 'string'],
  ['stac_version', 'string'],
  ['type', 'string'],
  ['start_datetime', 'timestamptz'],
  ['version', 'string'],
  ['sat:orbit_state', 'string'],
  ['scene_1_id', 'string'],
  ['scene_2_id', 'string'],
  ['scene_1_frame', 'string'],
  ['scene_2_frame', 'string'],
  ['mid_datetime', 'string'],
  ['created', 'timestamptz'],
  ['updated', 'timestamptz'],
  ['end_datetime', 'timestamptz'],
  ['stac_extensions', 'string'],
  ['collection', 'string'],
  ['latitude', 'double'],
  ['longitude', 'double'],
  ['bbox', 'string'],
];

/** The 28-column default schema: field ids 1..28 in the documented order, all optional. */
export function defaultSchema(): IcebergSchema {
  return {
    type: 'struct',
    'schema-id': 0,
    'identifier-field-ids': [],
    fields: DEFAULT_COLUMNS.map(([name, type], i) => ({ id: i + 1, name, required: false, type })),
  };
}

/** identity(grid_partition) + year(datetime), partition field ids 100/101. */
export function defaultPartitionSpec(): PartitionSpec {
  return {
    'spec-id': 0,
    fields: [
      { 'source-id': 2, 'field-id': 100, transform: 'identity', name: 'grid_partition' },
      { 'source-id': 4, 'field-id': 101, transform: 'year', name: 'year' },
    ],
  };
}

export function defaultSortOrder(): SortOrder {
  return { 'order-id': 0, fields: [] };
}

/** Properties of a table this tool creates. The data files carry no Iceberg field ids: readers need the name mapping. */
export function defaultTableProperties(schema: IcebergSchema): Record<string, string> {
  return {
    [NAME_MAPPING_PROPERTY]: nameMappingFor(schema),
    'write.parquet.compression-codec': 'zstd',
  };
}

export interface MappedField {
  'field-id': number;
  names: string[];
  fields?: MappedField[];
}

/**
 * The names a name mapping (JSON text) gives each field id, at every level (ids are unique in a schema):
 * a renamed column's are its old ones too. Empty for text that is no name mapping.
 */
export function nameMappingNames(nameMapping: string | undefined): Map<number, string[]> {
  const names = new Map<number, string[]>();
  const walk = (entries: unknown): void => {
    if (!Array.isArray(entries)) return;
    for (const e of entries as MappedField[]) {
      if (!e || typeof e['field-id'] !== 'number' || !Array.isArray(e.names)) continue;
      names.set(e['field-id'], e.names.filter((n): n is string => typeof n === 'string'));
      walk(e.fields);
    }
  };
  try {
    if (nameMapping) walk(JSON.parse(nameMapping));
  } catch {
    // No usable mapping: fields are known by their names only.
  }
  return names;
}

/** The Iceberg name mapping (JSON text) that maps every column name of `schema` to its field id. */
export function nameMappingFor(schema: IcebergStructType): string {
  return JSON.stringify(mapStruct(schema));
}

/**
 * `existing` (another engine's, or ours) with an entry for every field of `schema` it lacks, its own
 * entries (aliases included) kept; undefined when it lacks none. Text that is no name mapping is
 * replaced: readers cannot use it either.
 */
export function extendNameMapping(existing: string | undefined, schema: IcebergStructType): string | undefined {
  if (existing === undefined) return nameMappingFor(schema);
  let entries: MappedField[];
  try {
    entries = JSON.parse(existing) as MappedField[];
    if (!Array.isArray(entries)) return nameMappingFor(schema);
  } catch {
    return nameMappingFor(schema);
  }
  const [merged, added] = extendEntries(entries, mapStruct(schema));
  return added ? JSON.stringify(merged) : undefined;
}

function extendEntries(entries: MappedField[], wanted: readonly MappedField[]): [MappedField[], boolean] {
  let added = false;
  const out = [...entries];
  for (const w of wanted) {
    const i = out.findIndex((e) => e && e['field-id'] === w['field-id']);
    if (i < 0) {
      out.push(w);
      added = true;
      continue;
    }
    if (!w.fields) continue;
    const [fields, nestedAdded] = extendEntries(Array.isArray(out[i]!.fields) ? out[i]!.fields! : [], w.fields);
    if (nestedAdded) {
      out[i] = { ...out[i]!, fields };
      added = true;
    }
  }
  return [out, added];
}

function mapStruct(struct: IcebergStructType): MappedField[] {
  return struct.fields.map((f) => withNested({ 'field-id': f.id, names: [f.name] }, f.type));
}

function withNested(entry: MappedField, type: IcebergType): MappedField {
  if (typeof type === 'string') return entry;
  if (type.type === 'struct') return { ...entry, fields: mapStruct(type) };
  if (type.type === 'list') return { ...entry, fields: [withNested({ 'field-id': type['element-id'], names: ['element'] }, type.element)] };
  return {
    ...entry,
    fields: [
      withNested({ 'field-id': type['key-id'], names: ['key'] }, type.key),
      withNested({ 'field-id': type['value-id'], names: ['value'] }, type.value),
    ],
  };
}

/** Finds a top-level field by id (partition sources are top-level in every table we write). */
export function topLevelField(schema: IcebergSchema, id: number): IcebergField | undefined {
  return schema.fields.find((f) => f.id === id);
}

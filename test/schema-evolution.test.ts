/**
 * How the rebuild fits the table's schema to the files' columns (SchemaEvolution), on footer columns as
 * the footer reader gives them: the cases readers depend on that the rebuild tests do not reach with
 * files DuckDB writes (aliases of a renamed column, two-level lists, Spark's INT96, wide decimals, a
 * column first seen without values).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SchemaEvolution } from '../activities/catalog/schema-evolution';
import type { IcebergSchema } from '../activities/catalog/iceberg-schema';
import type { FooterColumn, ParquetNode } from '../activities/catalog/parquet-footer';

const table: IcebergSchema = {
  type: 'struct',
  'schema-id': 0,
  fields: [
    { id: 1, name: 'id', required: false, type: 'string' },
    { id: 2, name: 'platform_name', required: false, type: 'string' },
    { id: 3, name: 'n_obs', required: false, type: 'int' },
  ],
};
const mapping = JSON.stringify([
  { 'field-id': 1, names: ['id'] },
  { 'field-id': 2, names: ['platform_name', 'platform'] },
  { 'field-id': 3, names: ['n_obs'] },
]);

function column(node: ParquetNode, values = 10, nulls = 0): FooterColumn {
  return { name: node.name, node, physicalType: node.physicalType, logicalType: node.logicalType, ...(node.children ? {} : { totals: { valueCount: values, nullCount: nulls, compressedBytes: 1 } }) };
}
const text = (name: string): ParquetNode => ({ name, repetition: 'OPTIONAL', physicalType: 'BYTE_ARRAY', logicalType: 'STRING' });
const int32 = (name: string): ParquetNode => ({ name, repetition: 'OPTIONAL', physicalType: 'INT32' });

test("a renamed column's files match it through the name mapping's alias: nothing added, nothing reported", () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const admission = evolution.admit([column(text('id')), column(text('platform'))]);
  assert.deepEqual(admission, { widened: [], retypedProvisional: false });
  assert.equal(evolution.changed, false);
});

test("a file holding a renamed column under its old and its new name is a mismatch naming both (readers take one, the other reads as null)", () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const admission = evolution.admit([column(text('id')), column(text('platform_name')), column(text('platform'))]);
  assert.match(admission.problem ?? '', /columns 'platform_name' and 'platform' are both names of the table's column 'platform_name'/);
  assert.equal(evolution.changed, false);
});

test('a column first seen without a value takes the type of the first file with values; files before it are looked at again', () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  assert.equal(evolution.admit([column(text('id')), column(int32('scene'), 10, 10)]).problem, undefined);
  assert.deepEqual(evolution.added, ['scene']);
  const withValues = evolution.admit([column(text('id')), column(text('scene'))]);
  assert.equal(withValues.retypedProvisional, true);
  assert.equal(evolution.schema().fields.find((f) => f.name === 'scene')!.type, 'string');
  // What the next pass then says of the first file:
  assert.equal(evolution.admit([column(text('id')), column(int32('scene'), 10, 10)]).problem, "column 'scene' is int in the file, string in the table");
});

test('a column this rebuild adds as integers becomes double when a later file holds it as floats (the files before are looked at again); a column the table had does not', () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const int64 = (name: string): ParquetNode => ({ name, repetition: 'OPTIONAL', physicalType: 'INT64' });
  const float64 = (name: string): ParquetNode => ({ name, repetition: 'OPTIONAL', physicalType: 'DOUBLE' });
  assert.equal(evolution.admit([column(text('id')), column(int64('count'))]).problem, undefined);
  const floats = evolution.admit([column(text('id')), column(float64('count'))]);
  assert.deepEqual([floats.retypedProvisional, floats.problem], [true, undefined]);
  assert.equal(evolution.schema().fields.find((f) => f.name === 'count')!.type, 'double');
  // What the next pass then says of the first file, and that the column stays double:
  assert.equal(evolution.admit([column(text('id')), column(int64('count'))]).problem, "column 'count' is long in the file, double in the table");
  assert.equal(evolution.schema().fields.find((f) => f.name === 'count')!.type, 'double');
  const existing = evolution.admit([column(text('id')), column(float64('n_obs'))]);
  assert.deepEqual([existing.retypedProvisional, existing.problem], [false, "column 'n_obs' is double in the file, int in the table"]);
});

test('a widening is reported by the file that asks for it only', () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const wide = evolution.admit([column(text('id')), column({ name: 'n_obs', repetition: 'OPTIONAL', physicalType: 'INT64' })]);
  assert.deepEqual(wide.widened, [3]);
  assert.deepEqual(evolution.admit([column(text('id')), column(int32('n_obs'))]).widened, [], 'an int file reads as the long column');
  assert.deepEqual(evolution.widened, ['n_obs: int -> long']);
});

test("two-level lists of old writers (a repeated group named `array` or `<name>_tuple`) have the group itself as element", () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const legacy = (name: string, group: string): ParquetNode => ({
    name,
    repetition: 'OPTIONAL',
    logicalType: 'LIST',
    children: [{ name: group, repetition: 'REPEATED', children: [{ name: 'x', repetition: 'OPTIONAL', physicalType: 'INT32' }] }],
  });
  evolution.admit([column(text('id')), column(legacy('a', 'array')), column(legacy('b', 'b_tuple')), column(legacy('c', 'list'))]);
  const types = Object.fromEntries(evolution.schema().fields.map((f) => [f.name, f.type]));
  assert.deepEqual(types.a, { type: 'list', 'element-id': 5, element: { type: 'struct', fields: [{ id: 6, name: 'x', required: false, type: 'int' }] }, 'element-required': false });
  assert.equal((types.b as { element: { type: string } }).element.type, 'struct');
  assert.equal((types.c as { element: unknown }).element, 'int', 'the standard three-level layout');
});

test("Spark's INT96 reads as a timestamp; a decimal wider than 38 digits has no Iceberg type", () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const admission = evolution.admit([
    column(text('id')),
    column({ name: 'acquired', repetition: 'OPTIONAL', physicalType: 'INT96' }),
    column({ name: 'huge', repetition: 'OPTIONAL', physicalType: 'FIXED_LEN_BYTE_ARRAY', logicalType: 'DECIMAL(40,2)', typeLength: 17 }),
  ]);
  assert.equal(evolution.schema().fields.find((f) => f.name === 'acquired')!.type, 'timestamptz');
  assert.equal(admission.problem, "column 'huge' is DECIMAL(40,2), wider than Iceberg's decimals (38 digits)");
  assert.deepEqual(evolution.added, ['acquired']);
});

test("field ids a file carries must be the table's, at every level; a new column's id is the one the table gives it", () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const ided = (node: ParquetNode, fieldId: number): ParquetNode => ({ ...node, fieldId });
  assert.deepEqual(evolution.admit([column(ided(text('id'), 1)), column(ided(text('platform_name'), 2))]), { widened: [], retypedProvisional: false });
  const list = (fieldId: number, elementId: number): ParquetNode => ({
    name: 'tags',
    repetition: 'OPTIONAL',
    logicalType: 'LIST',
    fieldId,
    children: [{ name: 'list', repetition: 'REPEATED', children: [ided(text('element'), elementId)] }],
  });
  // tags is new: the table numbers it 4 and its element 5.
  assert.equal(evolution.admit([column(list(4, 5))]).problem, undefined);
  assert.deepEqual(evolution.added, ['tags']);
  assert.equal(
    evolution.admit([column(ided(int32('n_obs'), 2)), column(list(4, 9))]).problem,
    "column 'n_obs' carries Parquet field id 2, the table's field has id 3 (readers take a file's ids over the name mapping); " +
      "column 'tags.element' carries Parquet field id 9, the table's field has id 5 (readers take a file's ids over the name mapping)",
  );
  const fresh = new SchemaEvolution(table, 3, [0], mapping);
  assert.equal(
    fresh.admit([column(ided(text('scene'), 7))]).problem,
    "column 'scene' carries Parquet field id 7, the table's field has id 4 (readers take a file's ids over the name mapping)",
  );
});

test("a column whose dotted name is another field's path (`props.c` beside struct props with field c, either way round) is not added: readers refuse a schema with two fields of one name, for good", () => {
  const struct = (name: string, children: ParquetNode[]): ParquetNode => ({ name, repetition: 'OPTIONAL', children });
  const withProps: IcebergSchema = { ...table, fields: [...table.fields, { id: 4, name: 'props', required: false, type: { type: 'struct', fields: [{ id: 5, name: 'c', required: false, type: 'string' }] } }] };
  const evolution = new SchemaEvolution(withProps, 5, [0], mapping);
  // The whole file changes nothing, its harmless new column included: it is reported, and a renamed file evolves the table next time.
  const clash = evolution.admit([column(text('id')), column(text('props.c')), column(text('scene'))]);
  assert.equal(
    clash.problem,
    "column 'props.c' would be a second field of that dotted name in the table's schema (beside field 5), and Iceberg readers refuse such a schema, so the file does not evolve it: rename the column in the file",
  );
  assert.deepEqual([evolution.changed, evolution.added, evolution.lastColumnId], [false, [], 5]);
  // A later file that adds only the harmless column does, with the next id.
  assert.equal(evolution.admit([column(text('id')), column(text('scene'))]).problem, undefined);
  assert.deepEqual([evolution.added, evolution.schema().fields.at(-1)!.id], [['scene'], 6]);

  // The other way round: the table has a top-level `new.col`, a file brings struct `new` with field `col`.
  const dotted: IcebergSchema = { ...table, fields: [...table.fields, { id: 4, name: 'new.col', required: false, type: 'string' }] };
  const other = new SchemaEvolution(dotted, 4, [0], mapping);
  assert.match(other.admit([column(struct('new', [text('col')]))]).problem ?? '', /^column 'new\.col' would be a second field of that dotted name in the table's schema \(beside field 4\)/);
  assert.equal(other.changed, false);
  // A list's element is named `element` in the path: `tags.element` beside a list `tags` clashes too.
  const lists = new SchemaEvolution(table, 3, [0], mapping);
  const list: ParquetNode = { name: 'tags', repetition: 'OPTIONAL', logicalType: 'LIST', children: [{ name: 'list', repetition: 'REPEATED', children: [text('element')] }] };
  assert.equal(lists.admit([column(list)]).problem, undefined);
  assert.match(lists.admit([column(text('tags.element'))]).problem ?? '', /^column 'tags\.element' would be a second field/);
});

test('a name the file repeats (pyarrow writes such files; readers refuse them) neither adds nor widens a column, and is named', () => {
  const evolution = new SchemaEvolution(table, 3, [0], mapping);
  const int64 = (name: string): ParquetNode => ({ name, repetition: 'OPTIONAL', physicalType: 'INT64' });
  const admission = evolution.admit([column(text('id')), column(int64('n_obs')), column(int32('n_obs')), column(text('scene')), column(text('scene'))]);
  assert.equal(
    admission.problem,
    "column 'n_obs' occurs 2 times in the file, and readers refuse a file whose columns repeat a name: rewrite the file with distinct names; " +
      "column 'scene' occurs 2 times in the file, and readers refuse a file whose columns repeat a name: rewrite the file with distinct names",
  );
  assert.deepEqual([evolution.changed, evolution.added, evolution.widened], [false, [], []]);
});

/** The workflow input's validation (the contract every way of starting a run goes through). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as workflows from '../workflows';
import { COMPACTION_WORKFLOW_TYPE, parseBucketSelection, parseCompactionInput } from '../workflows/contract';

const base = { warehouse: '/data/warehouse', catalog: '/data/catalog.db' };
const TABLE_BUCKET = 'arn:aws:s3tables:us-east-1:123456789012:bucket/ec-tables';

test('the workflow type the client starts, lists and schedules is the workflow function the worker registers', () => {
  assert.equal(typeof (workflows as Record<string, unknown>)[COMPACTION_WORKFLOW_TYPE], 'function');
});

test('empty cell or year lists are refused, naming the field; absent lists mean all', () => {
  assert.throws(() => parseCompactionInput({ ...base, cells: [] }), /^Error: invalid compaction input: cells: list at least one cell, or leave cells out for all$/);
  assert.throws(() => parseCompactionInput({ ...base, years: [] }), /^Error: invalid compaction input: years: list at least one year, or leave years out for all$/);
  const all = parseCompactionInput(base);
  assert.equal(all.cells, undefined);
  assert.equal(all.years, undefined);
  assert.deepEqual(parseCompactionInput({ ...base, cells: ['a1'], years: [2020] }).years, [2020]);
  // A cell is named as its folder is, Hive escapes included.
  assert.deepEqual(parseCompactionInput({ ...base, cells: ['h3%3A8a2a'] }).cells, ['h3%3A8a2a']);
  for (const cell of ['zürich', 'zu\u0308rich', '東京', 'a b', 'x+y', 'a.b']) assert.deepEqual(parseCompactionInput({ ...base, cells: [cell] }).cells, [cell]);
  for (const bad of ['a/b', 'a=b', 'a\\b', 'a\tb', '..']) {
    assert.throws(() => parseCompactionInput({ ...base, cells: [bad] }), /cells\.0: a cell is its folder name after grid_partition=, spelled as the folder is: no '\/', '=', '\\' or control characters, and not '\.' or '\.\.'$/, bad);
  }
});

test('a dry run of a resume is refused, not shown as a fresh plan', () => {
  assert.throws(
    () => parseCompactionInput({ ...base, dryRun: true, resumePlanId: 'latest' }),
    /^Error: invalid compaction input: dryRun: a resume cannot be a dry run \(a dry run plans anew, so it would not show what the resume does\)$/,
  );
  assert.equal(parseCompactionInput({ ...base, resumePlanId: 'latest' }).dryRun, false);
  assert.equal(parseCompactionInput({ ...base, dryRun: true }).resumePlanId, undefined);
});

test('a resume with cells or years is refused (it finishes its plan as made), not run on the whole plan', () => {
  for (const selection of [{ cells: ['a1'] }, { years: [2026] }]) {
    assert.throws(
      () => parseCompactionInput({ ...base, resumePlanId: 'latest', ...selection }),
      /^Error: invalid compaction input: resumePlanId: a resume finishes its plan as it was made \(its cells, years and threshold\): leave out cells and years$/,
    );
  }
});

test('a warehouse whose path DuckDB would read as a glob pattern is refused', () => {
  for (const warehouse of ['/data/wh[1]', 's3://bucket/wh*', '/data/{a,b}']) {
    assert.throws(
      () => parseCompactionInput({ ...base, warehouse }),
      /^Error: invalid compaction input: warehouse: warehouse must not contain \* \? \[ \] \{ \} \(DuckDB reads them as a glob pattern\)$/,
      warehouse,
    );
  }
  assert.equal(parseCompactionInput({ ...base, warehouse: '/data/wh-1_(old)' }).warehouse, '/data/wh-1_(old)');
});

test('newer rules: control characters, a location too long for a lock id, the filesystem root, a query string in an s3:// catalog, a # in an s3:// warehouse, a name S3 Tables does not allow with its catalog; off for a replaying workflow', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ warehouse: '/data/wh\u0000' }, /^Error: invalid compaction input: warehouse: must not contain control characters \(a NUL, a newline, a tab\)$/],
    [{ catalog: '/data/cat\talog.db' }, /^Error: invalid compaction input: catalog: must not contain control characters/],
    [{ warehouse: `/data/${'w'.repeat(795)}` }, /^Error: invalid compaction input: warehouse: at most 800 characters \(it names a lock workflow, whose id Temporal limits\), got 801$/],
    // Temporal counts bytes: 300 characters of 日 are 900 (a run of such a path waited for ever for its lock).
    [{ warehouse: `/data/${'日'.repeat(300)}` }, /^Error: invalid compaction input: warehouse: at most 800 bytes in UTF-8 \(it names a lock workflow, whose id Temporal limits to 1000 bytes; é takes two, 日 three\), got 906$/],
    [{ warehouse: '/' }, /^Error: invalid compaction input: warehouse: the filesystem root is not a warehouse/],
    [{ warehouse: '/data/..' }, /the filesystem root is not a warehouse/],
    [{ catalog: 's3://bucket/catalog.db?X-Amz-Signature=SIGNATURE' }, /^Error: invalid compaction input: catalog: an s3:\/\/ catalog is a plain location, without a query string or fragment \(\? #\): a presigned URL would keep its signature in the run's history$/],
    [{ catalog: 's3://bucket/catalog.db#x' }, /catalog: an s3:\/\/ catalog is a plain location/],
    [{ warehouse: 's3://bucket/wh#x' }, /^Error: invalid compaction input: warehouse: an s3:\/\/ warehouse must not contain # \(Iceberg readers take it for the end of an s3:\/\/ location/],
    [{ catalog: TABLE_BUCKET, namespace: 'awsns' }, /^Error: invalid compaction input: namespace: namespace "awsns" is not allowed in S3 Tables \(arn:aws:s3tables:us-east-1:123456789012:bucket\/ec-tables\): 1 to 255 lowercase letters, digits and underscores, beginning and ending with a letter or digit, not beginning with "aws"$/],
    [{ catalog: TABLE_BUCKET, namespace: 'EarthCatalog' }, /namespace: namespace "EarthCatalog" is not allowed in S3 Tables/],
    [{ catalog: TABLE_BUCKET, table: '_stac_items' }, /^Error: invalid compaction input: table: table name "_stac_items" is not allowed in S3 Tables \(.*\): 1 to 255 lowercase letters, digits and underscores, beginning and ending with a letter or digit$/],
  ];
  // Any catalog's rule comes first, saying what it allows.
  assert.throws(
    () => parseCompactionInput({ ...base, catalog: TABLE_BUCKET, table: 'stac-items' }),
    /^Error: invalid compaction input: table: must be a simple identifier: letters, digits and underscores, not beginning with a digit$/,
  );
  for (const [fields, message] of cases) {
    assert.throws(() => parseCompactionInput({ ...base, ...fields }), message, JSON.stringify(fields));
    // The workflow parses without them and applies them behind patched(): a run started before them goes on.
    assert.doesNotThrow(() => parseCompactionInput({ ...base, ...fields }, { newerRules: false }));
  }
  assert.equal(parseCompactionInput({ ...base, warehouse: `/data/${'w'.repeat(794)}` }).warehouse.length, 800);
  assert.equal(parseCompactionInput({ ...base, warehouse: 's3://bucket' }).warehouse, 's3://bucket', 'a bucket root is a warehouse');
  assert.equal(parseCompactionInput({ ...base, catalog: '/data/cat#1/catalog.db' }).catalog, '/data/cat#1/catalog.db', 'a local path is no URL');
  assert.equal(parseCompactionInput({ ...base, warehouse: '/data/wh#1' }).warehouse, '/data/wh#1', 'nor is a local warehouse');
  // S3 Tables' name rule is for S3 Tables only: a SQLite catalog takes any identifier.
  assert.deepEqual(
    [parseCompactionInput({ ...base, namespace: 'awsns', table: '_stac_items' }).namespace, parseCompactionInput({ ...base, catalog: TABLE_BUCKET }).table],
    ['awsns', 'stac_items'],
  );
  for (const fields of [{ catalog: 's3://bucket/catalog.db?X-Amz-Signature=SIGNATURE' }, { warehouse: '/data/wh\u0000' }]) {
    assert.throws(() => parseCompactionInput({ ...base, ...fields }), (err: Error) => !err.message.includes('SIGNATURE') && !err.message.includes('\u0000'), 'the refusal does not repeat the value');
  }
});

test('a year that is not four digits is named with its value; an unknown field is followed by the fields there are', () => {
  assert.throws(() => parseCompactionInput({ ...base, years: [2020, 26] }), /^Error: invalid compaction input: years\.1: a year has four digits \(1000 to 9999\), got 26$/);
  assert.throws(() => parseCompactionInput({ ...base, years: [20201] }), /^Error: invalid compaction input: years\.0: a year has four digits \(1000 to 9999\), got 20201$/);
  assert.throws(
    () => parseCompactionInput({ ...base, maxParallel: 8, dry_run: true }),
    (err: Error) => {
      assert.match(err.message, /^invalid compaction input: input: Unrecognized keys: "maxParallel", "dry_run" \(the fields are warehouse, catalog, threshold, dryRun, useLock, pipelineLock, maxParallelBuckets, /);
      for (const field of ['cells', 'years', 'resumePlanId', 'lockTimeoutSeconds']) assert.ok(err.message.includes(field), field);
      return true;
    },
  );
  assert.throws(() => parseBucketSelection({ year: [2020] }), /^Error: invalid selection: selection: Unrecognized key: "year" \(the fields are cells, years\)$/);
});

/**
 * How bucket errors become Temporal failures: which are retried and which stop at once. The errors
 * themselves are caused for real in compact-bucket.test.ts (a real DuckDB out-of-memory, real bad
 * files); here only the attempt number comes from the SDK's MockActivityEnvironment, the one part of
 * an activity's context this classification reads.
 * Local listing errors are synthetic errno errors: EIO or ESTALE cannot be caused on purpose here (and root ignores permissions).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { toActivityFailure } from '../activities';
import { BadBucketDataError, BucketMemoryError, InvalidBucketRequestError } from '../activities/compaction/bucket-errors';
import { FailureTypes, MAX_FAILURE_REASON_CHARS, capFailureReason } from '../workflows/contract';
import { MAX_REPORTED_FAILURES } from '../workflows/compact-warehouse';
import { listingError } from '../activities/storage/local-store';

const oom = () => new BucketMemoryError('grid_partition=x/year=2020', 256, 8, 1_086_000_000, 'Out of Memory Error: could not allocate block');

async function failureAt(attempt: number, err: Error): Promise<ApplicationFailure> {
  const f = await new MockActivityEnvironment({ attempt }).run(async () => toActivityFailure(err));
  assert.ok(f instanceof ApplicationFailure, `${err.name} becomes an ApplicationFailure`);
  return f;
}

test('running out of memory is retried once, then fails the bucket with the budget advice', async () => {
  const first = await failureAt(1, oom());
  assert.equal(first.type, FailureTypes.memoryBudget);
  assert.equal(first.nonRetryable, false);
  const second = await failureAt(2, oom());
  assert.equal(second.type, FailureTypes.memoryBudget);
  assert.equal(second.nonRetryable, true);
  assert.match(second.message, /^bucket grid_partition=x\/year=2020: DuckDB ran out of its 256 MB memory limit .* 8 input\(s\) of 1036 MB; nothing was deleted\. Give the workers a larger --memory-budget-mb/);
});

test('bad data and malformed requests stop at the first attempt; other errors are left to the retry policy', async () => {
  assert.equal((await failureAt(1, new BadBucketDataError('bad', ['k']))).nonRetryable, true);
  assert.equal((await failureAt(1, new InvalidBucketRequestError('malformed'))).type, FailureTypes.invalidInput);
  const other = new Error('connection reset');
  assert.equal(await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(other)), other);
});

test('a local listing error is permanent only when access is refused (EMFILE, EIO, ESTALE are retried)', async () => {
  const errno = (code: string) => Object.assign(new Error(`${code}: listing failed`), { code });
  for (const code of ['EACCES', 'EPERM']) {
    const f = await failureAt(1, listingError('/wh/grid_partition=a', errno(code)));
    assert.equal(f.type, FailureTypes.storageDenied);
    assert.equal(f.nonRetryable, true);
    assert.match(f.message, /^cannot list \/wh\/grid_partition=a: /);
  }
  for (const code of ['EMFILE', 'EIO', 'ESTALE']) {
    const err = listingError('/wh/grid_partition=a', errno(code));
    assert.equal(await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(err)), err, `${code} is left to the retry policy`);
    assert.match(err.message, /cannot list \/wh\/grid_partition=a/);
  }
});

test('a failure reason kept by the run is capped, so 200 of them stay far below the 2 MB payload limit', () => {
  assert.equal(capFailureReason('short reason'), 'short reason');
  const long = `column 'platform' has conflicting types across inputs: ${'grid_partition=x/year=2020/part.parquet (BIGINT), '.repeat(1000)}`;
  const kept = capFailureReason(long);
  assert.ok(kept.startsWith(long.slice(0, MAX_FAILURE_REASON_CHARS)));
  assert.ok(kept.endsWith(`… (${long.length - MAX_FAILURE_REASON_CHARS} more characters)`), kept.slice(-60));
  const failures = Array.from({ length: MAX_REPORTED_FAILURES }, (_, i) => ({ bucket: `grid_partition=c${i}/year=2020`, type: FailureTypes.badBucketData, reason: kept }));
  assert.ok(JSON.stringify(failures).length < 512 * 1024, `${JSON.stringify(failures).length} bytes of failures`);
});

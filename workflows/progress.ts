/** The progress of a compaction, as the `progress` query returns it. Pure data, safe in the sandbox. */
import { defineQuery } from '@temporalio/workflow';
import type { BucketFailure } from './contract';
import type { LockWaitState } from './lock';

export type CompactionPhase =
  | 'validating'
  | 'waiting-for-lock'
  /** `--use-lock`: waiting for the Python pipeline's lock object (its activity retries while another owner holds it). */
  | 'waiting-for-pipeline-lock'
  | 'planning'
  | 'compacting'
  | 'waiting-for-catalog-lock'
  | 'rebuilding-catalog'
  /** Cancelled or failed after compacting buckets: the table was rebuilt from the files as they are, and the run ended. */
  | 'rebuilt-before-ending'
  | 'done';

export interface CompactionProgress {
  phase: CompactionPhase;
  planId: string | null;
  bucketsTotal: number;
  bucketsDone: number;
  bucketsCompacted: number;
  /** Of those, buckets an earlier attempt or run had already finished (resume): recognised, not redone. */
  bucketsAlreadyCompacted: number;
  bucketsFailed: number;
  /** Planned input files of the buckets compacted so far (and replaced by their outputs). */
  filesIn: number;
  /** `--use-lock`: whose stale or abandoned object the run took over (CompactionSummary.pipelineLock; absent when none). */
  pipelineLock?: string;
  /** Inputs rewritten after they were read, left in place for the next run (absent when none). */
  filesRewritten?: number;
  /** CompactionSummary.untypedOutputs so far (absent when none; runs before them carried neither). */
  untypedOutputs?: string[];
  untypedOutputsTotal?: number;
  rowsBefore: number;
  rowsAfter: number;
  bytesBefore: number;
  bytesAfter: number;
  currentBuckets: string[];
  failures: BucketFailure[];
  locks: LockWaitState[];
  /** Number of continue-as-new hand-overs so far. */
  generation: number;
}

export const progressQuery = defineQuery<CompactionProgress>('progress');

/** The progress of a run that has done nothing yet. */
export function initialProgress(): CompactionProgress {
  return {
    phase: 'validating',
    planId: null,
    bucketsTotal: 0,
    bucketsDone: 0,
    bucketsCompacted: 0,
    bucketsAlreadyCompacted: 0,
    bucketsFailed: 0,
    filesIn: 0,
    rowsBefore: 0,
    rowsAfter: 0,
    bytesBefore: 0,
    bytesAfter: 0,
    currentBuckets: [],
    failures: [],
    locks: [],
    generation: 0,
  };
}

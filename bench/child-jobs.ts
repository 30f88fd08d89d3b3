/** What the parent asks a case process to do, and what the case process reports back. */
import type { BucketRef, BucketTask, PlannedFile } from '../workflows/contract';

export interface EngineSettings {
  /** DuckDB memory_limit of one bucket (the activity's memory budget). */
  memoryMb: number;
  threads: number;
  /** Private scratch directory of the case (spill files, chunk files). */
  scratch: string;
}

export type ChildJob =
  | { kind: 'baseline'; settings: EngineSettings; probe: string }
  | { kind: 'copy-floor'; settings: EngineSettings; inputs: string[]; out: string }
  | { kind: 'compact'; settings: EngineSettings; warehouse: string; bucket: BucketRef; inputs: PlannedFile[] }
  | {
      kind: 'tiny-direct';
      settings: EngineSettings;
      warehouse: string;
      /** Compacted first and not measured: JIT and first-use costs, which a long worker run amortizes. */
      warmup: BucketTask[];
      tasks: BucketTask[];
      parallel: number;
    }
  | { kind: 'orchestration'; settings: EngineSettings; warehouse: string; catalog: string; parallel: number };

export interface ChildResult {
  /** Wall time of the measured work only (not process start, module loading or server start). */
  seconds: number;
  /** CPU time (user + system, all threads) of the measured work: steadier than wall time on a shared machine. */
  cpuSeconds: number;
  /** Peak resident set of the case process (getrusage ru_maxrss). */
  maxRssMb: number;
  /** Resident set when the work started (Node, modules, and for Temporal the worker). */
  startRssMb: number;
  /** Largest size the scratch directory reached (DuckDB spill and chunk files). */
  peakScratchMb: number;
  rowsIn?: number;
  rowsOut?: number;
  bytesOut?: number;
  buckets?: number;
  bucketsFailed?: number;
  /** Runs of the workflow's continue-as-new chain. */
  workflowRuns?: number;
  /** Row groups of presorted inputs copied into the output as they are, and their rows. */
  copiedRowGroups?: number;
  copiedRows?: number;
  /** Seconds per phase, in the order they ran. */
  phases?: [string, number][];
  /** Peak resident set seen while each phase ran (sampled every 200 ms), in MB. */
  phasePeakRssMb?: [string, number][];
}

/** argv[2] of the case process: a JSON file holding the job; the result is written beside it. */
export function resultFileFor(jobFile: string): string {
  return jobFile.replace(/\.json$/, '') + '.result.json';
}

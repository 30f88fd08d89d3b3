/**
 * Entry point of one case process: `node --import tsx bench/case-process.ts <job.json>`. Each case runs
 * in a process of its own so that its peak RSS (getrusage, read at the end) is its own.
 */
import { promises as fs } from 'node:fs';
import { resultFileFor, type ChildJob } from './child-jobs';
import { runBaseline, runCompact, runCopyFloor, runTinyDirect } from './engine-cases';
import { Measured } from './measure';
import { runOrchestration } from './orchestration-case';

async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(await fs.readFile(jobFile, 'utf8')) as ChildJob;
  await fs.mkdir(job.settings.scratch, { recursive: true });
  const m = new Measured(job.settings.scratch);
  switch (job.kind) {
    case 'baseline':
      await runBaseline(job, m);
      break;
    case 'copy-floor':
      await runCopyFloor(job, m);
      break;
    case 'compact':
      await runCompact(job, m);
      break;
    case 'tiny-direct':
      await runTinyDirect(job, m);
      break;
    case 'orchestration':
      await runOrchestration(job, m);
      break;
  }
  await fs.writeFile(resultFileFor(jobFile), JSON.stringify(m.result()));
}

const jobFile = process.argv[2];
if (!jobFile) {
  console.error('usage: case-process.ts <job.json>');
  process.exit(2);
}
main(jobFile).then(
  // Native handles (DuckDB, Temporal) can keep the loop alive after the work is done.
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  },
);

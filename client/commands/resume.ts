import { UsageError } from '../cli-args';
import { runCompactCommand } from './compact';

export const resumeUsage = `earthcatalog-compact resume --warehouse W --catalog C [--plan PLAN_ID] [compact flags]
    Finishes the newest unfinished plan of the warehouse (or PLAN_ID) as it was made (its threshold, cells
    and years): finished buckets are not redone.`;

/** `--plan ID` or `--plan=ID` taken out of the arguments; the rest are the compaction's flags. */
export function resumeArgs(argv: string[]): { planId: string | undefined; rest: string[] } {
  const i = argv.findIndex((a) => a === '--plan' || a.startsWith('--plan='));
  if (i < 0) return { planId: undefined, rest: argv };
  const inline = argv[i]!.startsWith('--plan=') ? argv[i]!.slice('--plan='.length) : undefined;
  const planId = inline ?? argv[i + 1];
  if (!planId || planId.startsWith('-')) throw new UsageError('--plan needs a plan id');
  return { planId, rest: [...argv.slice(0, i), ...argv.slice(i + (inline === undefined ? 2 : 1))] };
}

/** A resume is a compaction that adopts an existing plan instead of planning anew. */
export async function runResumeCommand(argv: string[]): Promise<number> {
  const { planId, rest } = resumeArgs(argv);
  const selection = rest.find((a) => /^--(threshold|cells|years)(=|$)/.test(a));
  if (selection) {
    throw new UsageError(`a resume finishes its plan as it was made (its threshold, cells and years): leave out ${selection.split('=')[0]}`);
  }
  return runCompactCommand(rest, { resumePlanId: planId ?? 'latest' });
}

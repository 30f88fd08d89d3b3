import { parse } from '../cli-args';
import { runCompactCommand } from './compact';

export const resumeUsage = `earthcatalog-compact resume --warehouse W --catalog C [--plan PLAN_ID] [compact flags]
    Finishes the newest unfinished plan of the warehouse (or PLAN_ID): finished buckets are not redone.`;

/** A resume is a compaction that adopts an existing plan instead of planning anew. */
export async function runResumeCommand(argv: string[]): Promise<number> {
  const planIdx = argv.indexOf('--plan');
  const planId = planIdx >= 0 ? argv[planIdx + 1] : undefined;
  const rest = planIdx >= 0 ? [...argv.slice(0, planIdx), ...argv.slice(planIdx + 2)] : argv;
  if (planIdx >= 0 && (!planId || planId.startsWith('--'))) parse(['--plan'], { plan: { type: 'string' } });
  return runCompactCommand(rest, { resumePlanId: planId ?? 'latest' });
}

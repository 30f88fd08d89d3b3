#!/usr/bin/env node
/** earthcatalog-compact: the operator's command line. Errors print one line and exit non-zero. */
import { STATE_EXIT, StateError, UsageError } from './cli-args';
import { compactUsage, runCompactCommand } from './commands/compact';
import { runWorkerCommand, workerUsage } from './commands/worker';
import { resumeUsage, runResumeCommand } from './commands/resume';
import { runStatusCommand, statusUsage } from './commands/status';
import { demoUsage, runDemoCommand } from './commands/demo';
import { runScheduleCommand, scheduleUsage } from './commands/schedule';
import { runVerifyCommand, verifyUsage } from './commands/verify';
import { cancelUsage, runCancelCommand } from './commands/cancel';
import { firstLine } from '../activities/error-text';

type Command = { run: (argv: string[]) => Promise<number>; usage: string };

const commands: Record<string, Command> = {
  worker: { run: runWorkerCommand, usage: workerUsage },
  resume: { run: runResumeCommand, usage: resumeUsage },
  status: { run: runStatusCommand, usage: statusUsage },
  cancel: { run: runCancelCommand, usage: cancelUsage },
  demo: { run: runDemoCommand, usage: demoUsage },
  schedule: { run: runScheduleCommand, usage: scheduleUsage },
  verify: { run: runVerifyCommand, usage: verifyUsage },
};

function usage(): string {
  return [`usage: ${compactUsage}`, ...Object.values(commands).map((c) => `       ${c.usage}`)].join('\n');
}

const wantsHelp = (args: string[]) => args.includes('--help') || args.includes('-h');

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === 'help' || (!first?.match(/^[a-z]/) && wantsHelp(argv))) {
    console.log(usage());
    return 0;
  }
  const command = first && !first.startsWith('-') ? commands[first] : undefined;
  try {
    if (first && !first.startsWith('-') && !command) throw new UsageError(`unknown command ${JSON.stringify(first)}`);
    if (command && wantsHelp(rest)) {
      console.log(`usage: ${command.usage}`);
      return 0;
    }
    return command ? await command.run(rest) : await runCompactCommand(argv);
  } catch (err) {
    console.error(`earthcatalog-compact: ${firstLine(err)}`);
    if (err instanceof StateError) return STATE_EXIT;
    if (!(err instanceof UsageError)) return 1;
    // The usage of the command at fault, not of all of them.
    console.error(command ? `usage: ${command.usage}` : `usage: ${compactUsage}\n(earthcatalog-compact --help lists every command)`);
    return 64;
  }
}

/**
 * Runs a command and ends the process with its exit code once stdout and stderr are written: a pipe takes
 * what fits its buffer (64 KB) at once and the rest later, so an exit straight after `verify --json`'s
 * report cut it off for `jq`.
 */
export function runCli(argv: string[]): void {
  const exit = (code: number) => process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
  main(argv).then(exit, (err: unknown) => {
    console.error(`earthcatalog-compact: ${err instanceof Error ? err.message : String(err)}`);
    exit(1);
  });
}

if (require.main === module) runCli(process.argv.slice(2));

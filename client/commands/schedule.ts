/**
 * `earthcatalog-compact schedule …`: the weekly compaction as a Temporal Schedule, and the programmatic
 * `createCompactionSchedule` / `describeCompactionSchedule` for platform code.
 *
 * Overlap policy SKIP: a scheduled run is not started while an earlier run of this schedule is still
 * going. Runs started by anything else (CLI, `temporal workflow start`) are serialized by the
 * workflow-level warehouse lock instead: the scheduled run waits for them, it is not skipped.
 */
import {
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  type Client,
  type ScheduleDescription,
  type ScheduleHandle,
  type ScheduleOptionsStartWorkflowAction,
  type ScheduleSpec,
  type ScheduleSpecDescription,
  type Range,
} from '@temporalio/client';
import type { Workflow } from '@temporalio/common';
import { compactionFlags, compactionInputFromFlags, connectionFlags, parse, StateError, UsageError } from '../cli-args';
import { connectClient, resolveTarget } from '../connection';
import { COMPACTION_WORKFLOW_TYPE, compactionWorkflowIdProblem, DEFAULT_TASK_QUEUE, parseCompactionInput, type CompactionInput } from '../../workflows/contract';

export const DEFAULT_SCHEDULE_ID = 'earthcatalog-compaction-weekly';
/** Sundays at 03:00 UTC. */
export const DEFAULT_CRON = '0 3 * * 0';
export const DEFAULT_CATCHUP_WINDOW_MS = 24 * 60 * 60 * 1000;

export const scheduleUsage = `earthcatalog-compact schedule create|describe|update|pause|unpause|trigger|delete [--schedule-id ID] [--address host:port] [--namespace NS]
    create  --warehouse W --catalog C [compact flags] [--cron EXPR (default '${DEFAULT_CRON}') | --every 7d] [--timezone TZ]
            [--catchup-window 1d] [--paused] [--note TEXT] [--workflow-id-prefix P] [--task-queue Q]
    update  [--cron EXPR | --every DUR] [--timezone TZ] [--catchup-window DUR] [--task-queue Q] [compact flags] [--no-dry-run] [--no-use-lock]
            [--replace-input (the compaction input becomes exactly the compact flags given: what they leave out takes its default,
             except the table's warehouse, catalog, --iceberg-namespace, --table and --catalog-name, kept unless given)]
    describe   pause|unpause [--note TEXT]   trigger   delete
    Every verb takes --json (one JSON object on stdout). Exit 4: the schedule exists (create) or does not (the others).
    Schedule id default: ${DEFAULT_SCHEDULE_ID}. Overlap policy SKIP. Durations: 30s, 10m, 6h, 7d, 2w.`;

export interface CompactionScheduleOptions {
  /** The compaction's input, validated before anything is created. */
  input: CompactionInput;
  scheduleId?: string;
  taskQueue?: string;
  /** When to run. Default: `DEFAULT_CRON` (weekly, Sunday 03:00 UTC). */
  spec?: ScheduleSpec;
  /** How late a missed run (server down) may still be taken. Default 1 day. */
  catchupWindowMs?: number;
  paused?: boolean;
  note?: string;
  /** Workflow ids are `<prefix>-<scheduled time>`; default the schedule id, so two schedules never collide. */
  workflowIdPrefix?: string;
}

/** Schedules described at once by the prefix check. */
const PREFIX_CHECK_BATCH = 20;

/**
 * Why schedule runs may not get ids `<prefix>-<time>`: ids of a lock workflow's form, or a prefix another
 * schedule of the namespace already uses. Two schedules firing in the same second would then start the
 * same id, and the server drops the second start without a word: that schedule would never run.
 */
async function workflowIdPrefixProblem(client: Client, scheduleId: string, prefix: string): Promise<string | undefined> {
  const lockShaped = compactionWorkflowIdProblem(`${prefix}-`);
  if (lockShaped) return `--workflow-id-prefix (default: the schedule id) ${prefix}: ${lockShaped}`;
  const others: string[] = [];
  for await (const other of client.schedule.list()) if (other.scheduleId !== scheduleId) others.push(other.scheduleId);
  // The listing does not carry the action's workflow id: each schedule is described, a batch at a time.
  for (let i = 0; i < others.length; i += PREFIX_CHECK_BATCH) {
    const batch = others.slice(i, i + PREFIX_CHECK_BATCH);
    const described = await Promise.all(batch.map((id) => client.schedule.getHandle(id).describe().catch(() => undefined)));
    const clash = batch.find((_, j) => described[j]?.action.type === 'startWorkflow' && described[j]!.action.workflowId === prefix);
    if (clash) {
      return `schedule ${clash} already starts its runs as ${prefix}-<time>: two schedules firing in the same second would start one workflow id and one of them would silently not run; give --workflow-id-prefix another value`;
    }
  }
  return undefined;
}

/** Creates the schedule; throws a clear Error when one with that id exists or its workflow ids would clash. */
export async function createCompactionSchedule(client: Client, opts: CompactionScheduleOptions): Promise<ScheduleHandle> {
  const scheduleId = opts.scheduleId ?? DEFAULT_SCHEDULE_ID;
  const prefix = opts.workflowIdPrefix ?? scheduleId;
  const problem = await workflowIdPrefixProblem(client, scheduleId, prefix);
  if (problem) throw new UsageError(problem);
  try {
    return await client.schedule.create({
      scheduleId,
      spec: opts.spec ?? { cronExpressions: [DEFAULT_CRON] },
      action: compactionAction(opts.input, opts.taskQueue ?? DEFAULT_TASK_QUEUE, prefix),
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: opts.catchupWindowMs ?? DEFAULT_CATCHUP_WINDOW_MS },
      state: { paused: opts.paused ?? false, ...(opts.note ? { note: opts.note } : {}) },
    });
  } catch (err) {
    if (err instanceof ScheduleAlreadyRunning) {
      throw new StateError(`schedule ${scheduleId} already exists in namespace ${client.options.namespace}; use \`schedule update\` or \`schedule delete\``);
    }
    throw err;
  }
}

function compactionAction(input: CompactionInput, taskQueue: string, workflowId: string): ScheduleOptionsStartWorkflowAction<Workflow> {
  // Validated here so that a bad input fails now, not at the first scheduled run next week.
  const parsed = parseCompactionInput(input);
  return {
    type: 'startWorkflow',
    workflowType: COMPACTION_WORKFLOW_TYPE,
    taskQueue,
    workflowId,
    args: [input],
    staticSummary: `scheduled compaction of ${parsed.warehouse}${parsed.dryRun ? ' (dry run)' : ''}`,
    staticDetails: `catalog ${parsed.catalog} · threshold ${parsed.threshold}`,
  };
}

export interface ScheduledRun {
  scheduledAt: string;
  takenAt: string;
  workflowId: string;
  runId: string;
  /** Status of the latest run of that workflow id (continue-as-new keeps the id); null if it is gone. */
  status: string | null;
}

export interface CompactionScheduleReport {
  scheduleId: string;
  paused: boolean;
  note: string | null;
  /** Human-readable lines, e.g. `cron 0 3 * * SUNDAY (UTC)` or `every 7d`. */
  spec: string[];
  specRaw: ScheduleSpecDescription;
  workflowType: string;
  taskQueue: string;
  workflowIdPrefix: string;
  input: unknown;
  overlap: string;
  catchupWindowMs: number;
  pauseOnFailure: boolean;
  nextActionTimes: string[];
  recentActions: ScheduledRun[];
  runningWorkflowIds: string[];
  numActionsTaken: number;
  numActionsSkippedOverlap: number;
  numActionsMissedCatchupWindow: number;
  createdAt: string;
}

export async function describeCompactionSchedule(client: Client, scheduleId: string = DEFAULT_SCHEDULE_ID): Promise<CompactionScheduleReport> {
  const d = await describeOrExplain(client, scheduleId);
  const recentActions = await Promise.all(
    d.info.recentActions.map(async (a): Promise<ScheduledRun> => {
      const { workflowId, firstExecutionRunId } = a.action.workflow;
      const status = await client.workflow
        .getHandle(workflowId)
        .describe()
        .then((w) => w.status.name as string)
        .catch(() => null);
      return { scheduledAt: a.scheduledAt.toISOString(), takenAt: a.takenAt.toISOString(), workflowId, runId: firstExecutionRunId, status };
    }),
  );
  return {
    scheduleId: d.scheduleId,
    paused: d.state.paused,
    note: d.state.note ?? null,
    spec: formatSpec(d.spec),
    specRaw: d.spec,
    workflowType: d.action.workflowType,
    taskQueue: d.action.taskQueue,
    workflowIdPrefix: d.action.workflowId ?? '',
    input: d.action.args?.[0] ?? null,
    overlap: d.policies.overlap ?? 'server default',
    catchupWindowMs: d.policies.catchupWindow,
    pauseOnFailure: d.policies.pauseOnFailure,
    // A paused schedule keeps the times the server computed when it was paused; those passed without a run.
    nextActionTimes: d.info.nextActionTimes.filter((t) => t.getTime() > Date.now()).map((t) => t.toISOString()),
    recentActions,
    runningWorkflowIds: d.info.runningActions.map((a) => a.workflow.workflowId),
    numActionsTaken: d.info.numActionsTaken,
    numActionsSkippedOverlap: d.info.numActionsSkippedOverlap,
    numActionsMissedCatchupWindow: d.info.numActionsMissedCatchupWindow,
    createdAt: d.info.createdAt.toISOString(),
  };
}

async function describeOrExplain(client: Client, scheduleId: string): Promise<ScheduleDescription> {
  try {
    return await client.schedule.getHandle(scheduleId).describe();
  } catch (err) {
    throw notFound(client, scheduleId, err);
  }
}

const TRIGGER_OUTCOME_WAIT_MS = 10_000;

/**
 * What became of a trigger: the server's scheduler takes it a moment later, and under overlap SKIP a
 * trigger while a run of the schedule still runs is dropped, which "triggered" alone would hide.
 */
async function triggerOutcome(client: Client, scheduleId: string, before: ScheduleDescription): Promise<{ text: string; json: TriggerOutcome }> {
  const running = before.info.runningActions[0]?.workflow.workflowId;
  const overlap = before.policies.overlap;
  const base = { scheduleId, ...(overlap ? { overlap } : {}) };
  const alongside = running ? { runningWorkflowId: running } : {};
  const deadline = Date.now() + TRIGGER_OUTCOME_WAIT_MS;
  for (;;) {
    const now = await describeOrExplain(client, scheduleId);
    if (now.info.numActionsTaken > before.info.numActionsTaken) {
      const started = now.info.recentActions[now.info.recentActions.length - 1]?.action.workflow.workflowId;
      return { text: `schedule ${scheduleId} triggered: started ${started ?? 'a run'}`, json: { ...base, outcome: 'started', ...(started ? { workflowId: started } : {}) } };
    }
    if (now.info.numActionsSkippedOverlap > before.info.numActionsSkippedOverlap) {
      return {
        text: `schedule ${scheduleId} trigger skipped: overlap ${overlap} and ${running ?? 'an earlier run of it'} is still running; nothing was started`,
        json: { ...base, outcome: 'skipped', ...alongside },
      };
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    text: `schedule ${scheduleId} triggered (overlap ${overlap}${running ? `; ${running} is still running` : ''}); the server has not started it yet`,
    json: { ...base, outcome: 'pending', ...alongside },
  };
}

/** `schedule trigger --json`: whether the server started a run (its id), skipped it for the overlap policy, or has not acted yet. */
export interface TriggerOutcome {
  scheduleId: string;
  outcome: 'started' | 'skipped' | 'pending';
  overlap?: string;
  workflowId?: string;
  runningWorkflowId?: string;
}

function notFound(client: Client, scheduleId: string, err: unknown): unknown {
  return err instanceof ScheduleNotFoundError
    ? new StateError(`schedule ${scheduleId} does not exist in namespace ${client.options.namespace}`)
    : err;
}

// ---- spec and duration flags ------------------------------------------------------------------------

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `30s`, `10m`, `6h`, `7d`, `2w` → milliseconds. */
export function parseDurationFlag(name: string, raw: string): number {
  const m = /^(\d+)([smhdw])$/.exec(raw.trim());
  const ms = m ? Number(m[1]) * UNIT_MS[m[2]!]! : NaN;
  if (!(ms > 0)) throw new UsageError(`--${name} must be a duration such as 30s, 10m, 6h, 7d or 2w, got ${JSON.stringify(raw)}`);
  return ms;
}

export function formatDuration(ms: number): string {
  for (const unit of ['w', 'd', 'h', 'm', 's']) {
    const size = UNIT_MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

const specFlags = {
  cron: { type: 'string' },
  every: { type: 'string' },
  timezone: { type: 'string' },
  'catchup-window': { type: 'string' },
} as const;

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function str(values: Values, key: string): string | undefined {
  const v = values[key];
  return typeof v === 'string' ? v : undefined;
}

/**
 * `--timezone`, checked here so that a typo is a usage error naming the flag, not the server's bare
 * "unknown time zone" after connecting. Node and the server read the same IANA database.
 */
function timezoneFlag(values: Values): string | undefined {
  const timezone = str(values, 'timezone');
  if (timezone === undefined) return undefined;
  try {
    new Intl.DateTimeFormat('en', { timeZone: timezone });
  } catch {
    throw new UsageError(`--timezone: unknown time zone ${JSON.stringify(timezone)} (an IANA name such as Europe/Berlin, or UTC)`);
  }
  return timezone;
}

/** `--cron`, checked for its shape (5 to 7 fields or an @-descriptor) as the server checks it; the server checks the fields' values. */
function cronFlag(values: Values): string | undefined {
  const cron = str(values, 'cron');
  if (cron === undefined) return undefined;
  const fields = cron.replace(/^\s*CRON_TZ=\S+/, '').replace(/#.*$/, '').trim();
  if (!fields.startsWith('@') && !/^\S+(\s+\S+){4,6}$/.test(fields)) {
    throw new UsageError(`--cron must have 5 to 7 fields (minute hour day-of-month month day-of-week, optionally with seconds and years) or be a descriptor such as @weekly, got ${JSON.stringify(cron)}`);
  }
  return cron;
}

/** The spec the flags ask for, or undefined when they name none. */
function specFromFlags(values: Values): ScheduleSpec | undefined {
  const cron = cronFlag(values);
  const every = str(values, 'every');
  const timezone = timezoneFlag(values);
  if (cron && every) throw new UsageError('give either --cron or --every, not both');
  if (every) return { intervals: [{ every: parseDurationFlag('every', every) }], ...(timezone ? { timezone } : {}) };
  if (cron) return { cronExpressions: [cron], ...(timezone ? { timezone } : {}) };
  return undefined;
}

const ANY: Record<string, [number | string, number | string]> = {
  second: [0, 59],
  minute: [0, 59],
  hour: [0, 23],
  dayOfMonth: [1, 31],
  month: ['JANUARY', 'DECEMBER'],
  dayOfWeek: ['SUNDAY', 'SATURDAY'],
};

function formatField(name: string, ranges: Range<number | string>[] | undefined): string {
  if (!ranges || ranges.length === 0) return '*';
  const any = ANY[name];
  return ranges
    .map((r) => {
      const end = r.end ?? r.start;
      if (any && r.start === any[0] && end === any[1] && (r.step ?? 1) <= 1) return '*';
      const base = end === r.start ? String(r.start) : `${r.start}-${end}`;
      return r.step && r.step > 1 ? `${base}/${r.step}` : base;
    })
    .join(',');
}

/** One line per calendar or interval: calendars read as cron fields (minute hour day month weekday). */
export function formatSpec(spec: ScheduleSpecDescription): string[] {
  const tz = spec.timezone || 'UTC';
  const lines: string[] = [];
  for (const c of spec.calendars ?? []) {
    const second = formatField('second', c.second);
    const fields = [formatField('minute', c.minute), formatField('hour', c.hour), formatField('dayOfMonth', c.dayOfMonth), formatField('month', c.month), formatField('dayOfWeek', c.dayOfWeek)];
    const year = formatField('year', c.year);
    lines.push(`cron ${fields.join(' ')}${second !== '0' ? ` second ${second}` : ''}${year !== '*' ? ` year ${year}` : ''} (${tz})${c.comment ? ` # ${c.comment}` : ''}`);
  }
  for (const i of spec.intervals ?? []) lines.push(`every ${formatDuration(i.every)}${i.offset ? ` offset ${formatDuration(i.offset)}` : ''}`);
  return lines.length ? lines : ['(no times)'];
}

function formatReport(r: CompactionScheduleReport): string {
  const lines = [
    `schedule ${r.scheduleId}: ${r.paused ? 'PAUSED' : 'active'}${r.note ? ` — ${r.note}` : ''}`,
    ...r.spec.map((s, i) => `  ${i === 0 ? 'when      ' : '          '}${s}`),
    `  action    ${r.workflowType} on task queue ${r.taskQueue}, workflow ids ${r.workflowIdPrefix}-<time>`,
    `  input     ${JSON.stringify(r.input)}`,
    `  policies  overlap ${r.overlap}, catch-up window ${formatDuration(r.catchupWindowMs)}${r.pauseOnFailure ? ', pause on failure' : ''}`,
    `  taken     ${r.numActionsTaken} run(s), ${r.numActionsSkippedOverlap} skipped (overlap), ${r.numActionsMissedCatchupWindow} missed (catch-up window)`,
    `  next      ${r.paused ? '(paused) ' : ''}${r.nextActionTimes.slice(0, 3).join(', ') || '—'}`,
  ];
  if (r.runningWorkflowIds.length) lines.push(`  running   ${r.runningWorkflowIds.join(', ')}`);
  if (r.recentActions.length) {
    lines.push('  recent');
    for (const a of r.recentActions) lines.push(`    ${a.scheduledAt}  ${a.workflowId}  ${a.status ?? 'unknown'}`);
  }
  return lines.join('\n');
}

// ---- the command ----------------------------------------------------------------------------------

const VERBS = ['create', 'describe', 'update', 'pause', 'unpause', 'trigger', 'delete'] as const;
type Verb = (typeof VERBS)[number];

const baseFlags = { ...connectionFlags, 'schedule-id': { type: 'string' } } as const;

export async function runScheduleCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (!verb || !(VERBS as readonly string[]).includes(verb)) {
    throw new UsageError(`schedule needs one of ${VERBS.join(', ')}${verb ? `, got ${JSON.stringify(verb)}` : ''}`);
  }
  switch (verb as Verb) {
    case 'create': {
      const { values } = parse(rest, {
        ...baseFlags,
        ...compactionFlags,
        ...specFlags,
        paused: { type: 'boolean' },
        note: { type: 'string' },
        'workflow-id-prefix': { type: 'string' },
        json: { type: 'boolean' },
      });
      const input = compactionInputFromFlags(values);
      // A timezone alone applies to the default cron (03:00 on Sundays where the operator is).
      const timezone = timezoneFlag(values);
      const spec = specFromFlags(values) ?? (timezone ? { cronExpressions: [DEFAULT_CRON], timezone } : undefined);
      const catchupWindowMs = values['catchup-window'] ? parseDurationFlag('catchup-window', values['catchup-window']) : undefined;
      return withClient(values, async (client, taskQueue, scheduleId) => {
        await createCompactionSchedule(client, {
          scheduleId,
          input,
          taskQueue,
          spec,
          catchupWindowMs,
          paused: values.paused,
          note: values.note,
          workflowIdPrefix: values['workflow-id-prefix'],
        });
        return report(client, scheduleId, values.json, 'created');
      });
    }
    case 'describe': {
      const { values } = parse(rest, { ...baseFlags, json: { type: 'boolean' } });
      return withClient(values, (client, _q, scheduleId) => report(client, scheduleId, values.json));
    }
    case 'update': {
      const { values } = parse(rest, {
        ...baseFlags,
        ...compactionFlags,
        ...specFlags,
        'no-dry-run': { type: 'boolean' },
        'no-use-lock': { type: 'boolean' },
        'replace-input': { type: 'boolean' },
        json: { type: 'boolean' },
      });
      for (const flag of ['dry-run', 'use-lock'] as const) {
        // Either one winning silently would leave the schedule otherwise than half the command says.
        if (values[flag] && values[`no-${flag}`]) throw new UsageError(`--${flag} and --no-${flag} contradict each other: give one of them`);
      }
      // The schedule's times, read (and checked) before connecting.
      const times = { spec: specFromFlags(values), timezone: timezoneFlag(values) };
      return withClient(values, async (client, _q, scheduleId) => {
        await updateSchedule(client, scheduleId, values, times);
        return report(client, scheduleId, values.json, 'updated');
      });
    }
    case 'pause':
    case 'unpause': {
      const { values } = parse(rest, { ...baseFlags, note: { type: 'string' }, json: { type: 'boolean' } });
      return withClient(values, async (client, _q, scheduleId) => {
        const handle = client.schedule.getHandle(scheduleId);
        const note = values.note ?? `${verb}d with earthcatalog-compact at ${new Date().toISOString()}`;
        await (verb === 'pause' ? handle.pause(note) : handle.unpause(note)).catch((err: unknown) => {
          throw notFound(client, scheduleId, err);
        });
        console.log(values.json ? JSON.stringify({ scheduleId, paused: verb === 'pause', note }) : `schedule ${scheduleId} ${verb}d: ${note}`);
        return 0;
      });
    }
    case 'trigger': {
      const { values } = parse(rest, { ...baseFlags, json: { type: 'boolean' } });
      return withClient(values, async (client, _q, scheduleId) => {
        // The SDK's trigger defaults to ALLOW_ALL; a manual run keeps the schedule's own policy.
        const d = await describeOrExplain(client, scheduleId);
        await client.schedule.getHandle(scheduleId).trigger(d.policies.overlap);
        const outcome = await triggerOutcome(client, scheduleId, d);
        console.log(values.json ? JSON.stringify(outcome.json) : outcome.text);
        return 0;
      });
    }
    case 'delete': {
      const { values } = parse(rest, { ...baseFlags, json: { type: 'boolean' } });
      return withClient(values, async (client, _q, scheduleId) => {
        await client.schedule
          .getHandle(scheduleId)
          .delete()
          .catch((err: unknown) => {
            throw notFound(client, scheduleId, err);
          });
        console.log(values.json ? JSON.stringify({ scheduleId, deleted: true }) : `schedule ${scheduleId} deleted (running compactions it started keep running)`);
        return 0;
      });
    }
  }
}

async function withClient(
  values: { address?: string; namespace?: string; 'task-queue'?: string; 'schedule-id'?: string },
  fn: (client: Client, taskQueue: string, scheduleId: string) => Promise<number>,
): Promise<number> {
  const target = resolveTarget({ address: values.address, namespace: values.namespace, taskQueue: values['task-queue'] });
  const client = await connectClient(target);
  try {
    return await fn(client, target.taskQueue, values['schedule-id'] ?? DEFAULT_SCHEDULE_ID);
  } finally {
    await client.connection.close();
  }
}

async function report(client: Client, scheduleId: string, json: boolean | undefined, verb?: string): Promise<number> {
  const r = await describeCompactionSchedule(client, scheduleId);
  if (json) console.log(JSON.stringify(r, null, 2));
  else console.log(`${verb ? `${verb} ` : ''}${formatReport(r)}`);
  return 0;
}

const INPUT_FLAGS = Object.keys(compactionFlags);

async function updateSchedule(
  client: Client,
  scheduleId: string,
  values: Values,
  { spec, timezone }: { spec: ScheduleSpec | undefined; timezone: string | undefined },
): Promise<void> {
  const catchup = str(values, 'catchup-window');
  const taskQueue = str(values, 'task-queue');
  // Without it, a flag once stored could never be taken away (back to all years), and a deploy script's
  // `create || update` would keep what the script no longer says.
  const replace = !!values['replace-input'];
  const inputTouched = replace || INPUT_FLAGS.some((k) => values[k] !== undefined) || !!values['no-dry-run'] || !!values['no-use-lock'];
  if (!spec && !timezone && !catchup && !taskQueue && !inputTouched) {
    throw new UsageError('schedule update needs a spec, --catchup-window, --task-queue or compaction flags to change');
  }
  const handle = client.schedule.getHandle(scheduleId);
  await handle
    .update((prev) => {
      // Its action would be replaced by a compaction's: another workflow's schedule is not ours to change.
      const runs = prev.action.type === 'startWorkflow' ? prev.action.workflowType : prev.action.type;
      if (runs !== COMPACTION_WORKFLOW_TYPE) {
        throw new UsageError(`schedule ${scheduleId} starts ${runs}, not a compaction (${COMPACTION_WORKFLOW_TYPE}); earthcatalog-compact changes only compaction schedules`);
      }
      const prevInput = (prev.action.args?.[0] ?? {}) as CompactionInput;
      let args = prev.action.args;
      if (inputTouched) {
        const fromFlags = compactionInputFromFlags({
          ...values,
          // Which table the runs rebuild is kept unless named: reset to the default, the next run would
          // rebuild another table while the one meant keeps listing the inputs it deletes.
          warehouse: str(values, 'warehouse') ?? prevInput.warehouse,
          catalog: str(values, 'catalog') ?? prevInput.catalog,
          'iceberg-namespace': str(values, 'iceberg-namespace') ?? prevInput.namespace,
          table: str(values, 'table') ?? prevInput.table,
          'catalog-name': str(values, 'catalog-name') ?? prevInput.catalogName,
          // --pipeline-lock alone changes the object of a schedule that already takes one.
          'use-lock': values['use-lock'] ?? (!replace && prevInput.useLock === true && !values['no-use-lock']),
        });
        const next: CompactionInput = replace ? fromFlags : { ...prevInput, ...fromFlags };
        if (values['no-dry-run']) next.dryRun = false;
        if (values['no-use-lock']) {
          next.useLock = false;
          delete next.pipelineLock;
        }
        args = [next];
      }
      // What the flags do not name stays as it was, also what was set outside this CLI (a timezone,
      // jitter, an execution timeout, a retry policy, memo, search attributes).
      const action = {
        ...prev.action,
        // Described back, unset fields of a retry policy read 0, which the SDK refuses to send again.
        retry: prev.action.retry && Object.fromEntries(Object.entries(prev.action.retry).filter(([, v]) => v !== 0 && v !== undefined && v !== null)),
        ...compactionAction((args?.[0] ?? prevInput) as CompactionInput, taskQueue ?? prev.action.taskQueue, prev.action.workflowId ?? scheduleId),
      };
      const times = spec ? { calendars: undefined, intervals: undefined, ...spec } : {};
      return {
        ...prev,
        spec: { ...prev.spec, ...times, timezone: timezone ?? prev.spec.timezone },
        action,
        policies: { ...prev.policies, ...(catchup ? { catchupWindow: parseDurationFlag('catchup-window', catchup) } : {}) },
      };
    })
    .catch((err: unknown) => {
      throw notFound(client, scheduleId, err);
    });
}

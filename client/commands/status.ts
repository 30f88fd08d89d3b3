import type { Client, WorkflowHandle } from '@temporalio/client';
import { connectionFlags, parse } from '../cli-args';
import { connectClient, resolveTarget } from '../connection';
import { createProgressRenderer, progressLine } from '../progress-bar';
import { queryProgress } from '../start-compaction';

export const statusUsage = `earthcatalog-compact status [--workflow-id ID] [--watch] [--json] [--address host:port] [--namespace NS]
    Without --workflow-id: every running compaction.`;

export async function runStatusCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { ...connectionFlags, 'workflow-id': { type: 'string' }, watch: { type: 'boolean' }, json: { type: 'boolean' } });
  const target = resolveTarget({ address: values.address, namespace: values.namespace });
  const client = await connectClient(target);
  try {
    const ids = values['workflow-id'] ? [values['workflow-id']] : await runningCompactions(client);
    if (ids.length === 0) {
      console.log(values.json ? '[]' : 'no compaction is running');
      return 0;
    }
    if (values.watch && ids.length === 1) return await watch(client, ids[0]!);
    const report = [];
    for (const id of ids) {
      const handle = client.workflow.getHandle(id);
      const [desc, progress] = await Promise.all([handle.describe(), queryProgress(handle)]);
      report.push({ workflowId: id, status: desc.status.name, startTime: desc.startTime.toISOString(), progress: progress ?? null });
    }
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else for (const r of report) console.log(`${r.workflowId} ${r.status}${r.progress ? ` ${progressLine(r.progress, 120)}` : ''}`);
    return 0;
  } finally {
    await client.connection.close();
  }
}

/** Workflow ids of the compactions running in the client's namespace. */
export async function runningCompactions(client: Client): Promise<string[]> {
  const ids: string[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowType = 'compactWarehouse' AND ExecutionStatus = 'Running'` })) {
    ids.push(wf.workflowId);
  }
  return ids;
}

/** Polls the run about once a second until it has closed (calling `onPoll` after each look); its final status. */
export async function waitUntilClosed(handle: WorkflowHandle, onPoll?: () => Promise<void>): Promise<string> {
  for (;;) {
    const status = (await handle.describe()).status.name;
    await onPoll?.();
    if (status !== 'RUNNING') return status;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function watch(client: Client, workflowId: string): Promise<number> {
  const handle = client.workflow.getHandle(workflowId);
  const bar = createProgressRenderer(process.stdout);
  const status = await waitUntilClosed(handle, async () => {
    const progress = await queryProgress(handle);
    if (progress) bar.update(progress);
  });
  bar.finish();
  console.log(`${workflowId} ${status}`);
  return status === 'COMPLETED' ? 0 : 1;
}

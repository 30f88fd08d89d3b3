import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { findTemporalCli } from '../../client/temporal-cli';

const run = promisify(execFile);

/** Where the replay test finds the workflow id a recorded history ran under (workflow code may read it). */
export const WORKFLOW_IDS_FILE = path.join(__dirname, '..', 'histories', 'workflow-ids.json');

/**
 * With RECORD_HISTORIES=1, saves a workflow's history for the replay test, exported by the real
 * `temporal` CLI (the JSON form the SDK's replayer reads), and its workflow id in WORKFLOW_IDS_FILE.
 */
export async function maybeRecordHistory(address: string, workflowId: string, name: string): Promise<void> {
  if (process.env.RECORD_HISTORIES !== '1') return;
  const cli = findTemporalCli();
  if (!cli) throw new Error('recording histories needs the temporal CLI');
  const { stdout } = await run(cli, ['workflow', 'show', '--workflow-id', workflowId, '--output', 'json', '--address', address], {
    maxBuffer: 64 * 1024 * 1024,
  });
  await fs.writeFile(path.join(__dirname, '..', 'histories', `${name}.json`), stdout);
  const ids = JSON.parse(await fs.readFile(WORKFLOW_IDS_FILE, 'utf8').catch(() => '{}')) as Record<string, string>;
  ids[name] = workflowId;
  await fs.writeFile(WORKFLOW_IDS_FILE, JSON.stringify(Object.fromEntries(Object.entries(ids).sort()), null, 2) + '\n');
}

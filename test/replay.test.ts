/**
 * Replays recorded histories of real runs against the current workflow code: a change that would
 * break running workflows (non-determinism) fails here. Record new ones with
 * `RECORD_HISTORIES=1 npm test -- test/compaction-e2e.test.ts` after an intentional, versioned change.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Worker, DefaultLogger, Runtime } from '@temporalio/worker';
import { WORKFLOW_IDS_FILE } from './helpers/record-history';

const dir = path.join(__dirname, 'histories');

describe('replay of recorded histories', () => {
  before(() => Runtime.install({ logger: new DefaultLogger('WARN') }));

  it('every recorded history replays without non-determinism', async () => {
    // The workflow id each was recorded under (the lock check compares it with the holder's); older recordings replay under their name.
    const ids = JSON.parse(await fs.readFile(WORKFLOW_IDS_FILE, 'utf8')) as Record<string, string>;
    const files = (await fs.readdir(dir)).filter((f) => f.endsWith('.json') && f !== path.basename(WORKFLOW_IDS_FILE)).sort();
    assert.ok(files.length >= 2, `expected recorded histories in ${dir}`);
    const types = new Set<string>();
    for (const file of files) {
      const history = JSON.parse(await fs.readFile(path.join(dir, file), 'utf8'));
      const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
      types.add(started?.workflowType?.name);
      await Worker.runReplayHistory(
        { workflowsPath: require.resolve('../workflows'), replayName: file },
        history,
        ids[file.replace(/\.json$/, '')] ?? file.replace(/\.json$/, ''),
      );
    }
    assert.ok(types.has('compactWarehouse') && types.has('resourceLock'), `histories cover both workflow types, got ${[...types]}`);
  });

  it('a run started with an input the schema has refused since (an empty years or cells list) replays: it goes on with its input', async () => {
    // Rules the schema gained after such runs started must not fail their replay after an upgrade.
    const name = 'compactWarehouse-local';
    const ids = JSON.parse(await fs.readFile(WORKFLOW_IDS_FILE, 'utf8')) as Record<string, string>;
    const history = JSON.parse(await fs.readFile(path.join(dir, `${name}.json`), 'utf8'));
    const payload = history.events[0].workflowExecutionStartedEventAttributes.input.payloads[0] as { data: string };
    const input = JSON.parse(Buffer.from(payload.data, 'base64').toString('utf8')) as Record<string, unknown>;
    for (const refusedNow of [{ years: [] }, { cells: [] }]) {
      payload.data = Buffer.from(JSON.stringify({ ...input, ...refusedNow })).toString('base64');
      await Worker.runReplayHistory({ workflowsPath: require.resolve('../workflows'), replayName: `${name} with ${JSON.stringify(refusedNow)}` }, history, ids[name] ?? name);
    }
  });
});

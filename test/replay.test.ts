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
import { InputRulePatches } from '../workflows/contract';

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

describe('patched() ids', () => {
  it("every patched() id in workflows/ is in the README's table of them, which an operator reads before a rollback", async () => {
    const readme = await fs.readFile(path.join(__dirname, '..', 'README.md'), 'utf8');
    const listed = new Set([...readme.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]));
    const ids: string[] = [];
    const sources = (await fs.readdir(path.join(__dirname, '..', 'workflows'))).filter((f) => f.endsWith('.ts'));
    for (const file of sources) {
      const source = await fs.readFile(path.join(__dirname, '..', 'workflows', file), 'utf8');
      const constants = new Map([...source.matchAll(/const ([A-Z_]+) = '([a-z0-9-]+)';/g)].map((m) => [m[1]!, m[2]!]));
      for (const [, name] of source.matchAll(/patched\(([A-Z_]+)\)/g)) {
        assert.ok(constants.has(name!), `${file}: patched(${name}) names no string constant of the file`);
        ids.push(constants.get(name!)!);
      }
    }
    ids.push(...Object.values(InputRulePatches));
    assert.ok(ids.length >= 25, `found ${ids.length} ids`);
    assert.deepEqual([...new Set(ids)].filter((id) => !listed.has(id)), [], 'ids missing from the README');
  });
});

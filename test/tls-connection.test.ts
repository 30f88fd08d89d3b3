/**
 * A Temporal behind mutual TLS (the dev server behind a TLS-terminating proxy with certificates made
 * by openssl): the worker and the CLI connect with the `temporal` CLI's variables (TEMPORAL_TLS_*,
 * TEMPORAL_API_KEY), compact a warehouse through it, and print neither the API key nor a key file's
 * contents; without a client certificate the CLI fails naming the address, not a secret.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { checkAuth, describeTarget, resolveTarget, unreachable, withoutSecrets } from '../client/connection';
import type { CompactionSummary } from '../workflows/contract';
import { REPO_ROOT, spawnWorkerProcess, startTemporal, uniqueTaskQueue, type TemporalHarness } from './helpers/temporal';
import { makeTempDir } from './helpers/temp-dirs';
import { makeTestCertificates, startTlsProxy, type TestCertificates, type TlsProxy } from './helpers/tls-proxy';
import { listFiles, makeFixture } from './helpers/warehouse-fixtures';

const execFileP = promisify(execFile);
const BIN = path.join(REPO_ROOT, 'bin', 'earthcatalog-compact');
const API_KEY = 'ec-test-api-key-7f3a9c1e55';

/** The variables an operator exports for the temporal CLI; nothing else about Temporal is inherited. */
function temporalEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('TEMPORAL_') || k === 'EARTHCATALOG_TASK_QUEUE') delete env[k];
  return { ...env, TEMPORAL_CONFIG_FILE: '/nonexistent/temporal.toml', ...extra };
}

describe('Temporal behind mutual TLS', () => {
  let h: TemporalHarness;
  let certs: TestCertificates;
  let proxy: TlsProxy;
  let keyFileContents: string;

  before(async () => {
    h = await startTemporal();
    certs = await makeTestCertificates(await makeTempDir('ec-tls-certs'));
    keyFileContents = (await fs.readFile(certs.clientKey, 'utf8')).split('\n')[1]!;
    proxy = await startTlsProxy(h.address, certs);
  });

  after(async () => {
    await proxy?.close();
    await h?.stop();
  });

  test('the TEMPORAL_* variables resolve to TLS and an API key, described without the key', () => {
    const saved = { ...process.env };
    try {
      Object.assign(process.env, temporalEnv({ TEMPORAL_ADDRESS: 'temporal.example:7233', TEMPORAL_NAMESPACE: 'prod', TEMPORAL_API_KEY: API_KEY }));
      const target = resolveTarget({});
      assert.equal(target.address, 'temporal.example:7233');
      assert.equal(target.namespace, 'prod');
      assert.equal(target.auth.apiKey, API_KEY);
      assert.equal(target.auth.tls, true, 'an API key turns TLS on, as in the temporal CLI');
      assert.equal(describeTarget(target), 'temporal.example:7233/prod (TLS, API key)');
      assert.equal(resolveTarget({ address: 'flag:1', namespace: 'flagged' }).address, 'flag:1', 'flags win over variables');
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });

  test('empty TEMPORAL_* variables mean unset; a key a header cannot carry is refused, by the CLI and the worker, without printing it', async () => {
    const saved = { ...process.env };
    try {
      Object.assign(process.env, temporalEnv({ TEMPORAL_ADDRESS: '', TEMPORAL_NAMESPACE: '', TEMPORAL_API_KEY: '' }));
      const target = resolveTarget({});
      assert.deepEqual([target.address, target.namespace, target.auth], ['localhost:7233', 'default', {}], 'no TLS turned on by an empty key');
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
    for (const [key, what] of [[`${API_KEY}\n`, 'a newline as its last character'], [`${API_KEY.slice(0, 5)}\u00e9${API_KEY.slice(5)}`, 'U\\+00E9 at character 6 of 27']] as const) {
      for (const args of [['status'], ['worker', '--scratch-dir', await makeTempDir('ec-tls-refused')]]) {
        const env = temporalEnv({ TEMPORAL_ADDRESS: h.address, TEMPORAL_API_KEY: key, TEMPORAL_TLS: 'false' });
        const r = await execFileP(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, env, timeout: 60_000 }).then(
          () => assert.fail(`${args[0]} must refuse the key`),
          (err: { code?: number; stdout?: string; stderr?: string }) => err,
        );
        assert.equal(r.code, 64, `a setting that is wrong before anything starts: ${r.stderr}`);
        assert.match(r.stderr!, new RegExp(`the Temporal API key \\(TEMPORAL_API_KEY, or api_key of the config profile\\) has ${what}, which a request header cannot carry`));
        assert.ok(!`${r.stdout}${r.stderr}`.includes(API_KEY.slice(5)), `${args[0]}: no part of the key is printed`);
      }
    }
    // The core's transport errors are cut to their reason; a TLS handshake failure points at the TLS settings.
    const target = { address: 'temporal:7233', namespace: 'ns', taskQueue: 'q' };
    assert.equal(
      unreachable({ ...target, auth: { tls: true } }, new Error('tonic::transport::Error(Transport, ConnectError(Custom { kind: InvalidData, error: InvalidMessage(InvalidContentType) }))')).message,
      'cannot reach Temporal at temporal:7233/ns (TLS): InvalidMessage(InvalidContentType) (is the server running there, and does it take TLS? TEMPORAL_TLS, TEMPORAL_API_KEY or the config profile turn TLS on)',
    );
    assert.equal(
      unreachable({ ...target, auth: { apiKey: API_KEY } }, new Error(`Failed to connect before the deadline: Bearer ${API_KEY}`)).message,
      'cannot reach Temporal at temporal:7233/ns (API key): Failed to connect before the deadline: Bearer [redacted] (is the server running there? --address or TEMPORAL_ADDRESS names it)',
    );
    // Should a transport error still quote a header, the key is taken out of the message.
    assert.equal(withoutSecrets(`Metadata string value "Bearer ${API_KEY}" is invalid`, { apiKey: API_KEY }), 'Metadata string value "Bearer [redacted]" is invalid');
    // Given in code (the worker's options), the setting is named as such; the file hint only for control characters.
    assert.throws(() => checkAuth({ apiKey: 'key\n' }, 'options'), /^Error: the worker option auth\.apiKey has a newline as its last character, which a request header cannot carry \(a secret read from a file with its newline\?\): remove it$/);
    assert.throws(() => checkAuth({ metadata: { authorization: 'Bearer k\u00e9y' } }), /^Error: the gRPC metadata value authorization \(TEMPORAL_GRPC_META_\*, or grpc_meta of the profile\) has U\+00E9 at character 9 of 10, which a request header cannot carry: remove it$/);
    // So are credential headers of the metadata; other values stay, for the message to be read.
    assert.equal(
      withoutSecrets('no route to prod for "Bearer t0k3n"', { metadata: { 'x-env': 'prod', authorization: 'Bearer t0k3n' } }),
      'no route to prod for "[redacted]"',
    );
  });

  test('a client certificate without its key, a key without its certificate, or a file that is no certificate or key is refused naming the setting, from the variables or a profile', async () => {
    const saved = { ...process.env };
    const profile = path.join(await makeTempDir('ec-tls-profile'), 'temporal.toml');
    await fs.writeFile(profile, `[profile.default]\naddress = "temporal.example:7233"\n[profile.default.tls]\nclient_key_path = "${certs.clientKey}"\n`);
    try {
      for (const [vars, given, missing] of [
        [{ TEMPORAL_TLS_CLIENT_CERT_PATH: certs.clientCert }, 'certificate', 'key'],
        [{ TEMPORAL_TLS_CLIENT_KEY_PATH: certs.clientKey }, 'key', 'certificate'],
        [{ TEMPORAL_CONFIG_FILE: profile }, 'key', 'certificate'],
      ] as const) {
        for (const k of Object.keys(process.env)) delete process.env[k];
        Object.assign(process.env, temporalEnv(vars));
        assert.throws(() => resolveTarget({}), new RegExp(`a TLS client ${given} is set but no client ${missing} .*: set both, or neither$`), JSON.stringify(vars));
      }
      for (const k of Object.keys(process.env)) delete process.env[k];
      Object.assign(process.env, temporalEnv({ TEMPORAL_TLS_CLIENT_CERT_PATH: certs.clientCert, TEMPORAL_TLS_CLIENT_KEY_PATH: certs.clientKey }));
      assert.ok(resolveTarget({}).auth.tls, 'the whole pair is taken');
      // A file that is not what its setting says fails here, naming the setting, not as a connect timeout.
      const garbage = path.join(path.dirname(profile), 'not-a-certificate.pem');
      await fs.writeFile(garbage, 'garbage\n');
      for (const [vars, what] of [
        [{ TEMPORAL_TLS_SERVER_CA_CERT_PATH: garbage }, 'server CA certificate \\(TEMPORAL_TLS_SERVER_CA_CERT_PATH.*cannot be read as a PEM certificate'],
        [{ TEMPORAL_TLS_CLIENT_CERT_PATH: garbage, TEMPORAL_TLS_CLIENT_KEY_PATH: certs.clientKey }, 'client certificate \\(TEMPORAL_TLS_CLIENT_CERT_PATH.*cannot be read as a PEM certificate'],
        [{ TEMPORAL_TLS_CLIENT_CERT_PATH: certs.clientCert, TEMPORAL_TLS_CLIENT_KEY_PATH: certs.caCert }, 'client key \\(TEMPORAL_TLS_CLIENT_KEY_PATH.*cannot be read as a PEM private key'],
      ] as const) {
        for (const k of Object.keys(process.env)) delete process.env[k];
        Object.assign(process.env, temporalEnv(vars));
        assert.throws(() => resolveTarget({}), new RegExp(`^Error: the TLS ${what}`), JSON.stringify(vars));
      }
      // DER, which the transports do not read, is refused too.
      const der = path.join(path.dirname(profile), 'ca.der');
      await fs.writeFile(der, new X509Certificate(await fs.readFile(certs.caCert)).raw);
      for (const k of Object.keys(process.env)) delete process.env[k];
      Object.assign(process.env, temporalEnv({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: der }));
      assert.throws(() => resolveTarget({}), /^Error: the TLS server CA certificate .* cannot be read as a PEM certificate \(no -----BEGIN CERTIFICATE----- block\)$/);
      for (const k of Object.keys(process.env)) delete process.env[k];
      Object.assign(process.env, temporalEnv({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: certs.caCert }));
      assert.ok(resolveTarget({}).auth.tls, 'a real CA certificate is taken');
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });

  test('a worker for a namespace the server does not know names it in one line, without the core\'s gRPC status dump', async () => {
    const env = temporalEnv({});
    const r = await execFileP(process.execPath, [BIN, 'worker', '--address', h.address, '--namespace', 'no-such-namespace', '--scratch-dir', await makeTempDir('ec-no-ns')], { cwd: REPO_ROOT, env, timeout: 60_000 }).then(
      () => assert.fail('the worker must not start'),
      (err: { code?: number; stderr?: string }) => err,
    );
    assert.equal(r.code, 1, r.stderr);
    const last = r.stderr!.trim().split('\n').at(-1)!;
    assert.equal(last, `earthcatalog-compact: cannot start a worker on ${h.address}/no-such-namespace: Namespace no-such-namespace was not found or otherwise could not be described: Namespace no-such-namespace is not found. (NotFound)`);
  });

  test('a worker and the CLI compact a warehouse through it; no secret in their output', async () => {
    const { warehouse, catalog } = await makeFixture('tls', { cells: ['8128bffffffffff'], years: [2022, 2023], partsPerBucket: [2, 3], rowsPerPart: 20, seed: 31 });
    const queue = uniqueTaskQueue('tls');
    const tlsVariables = {
      TEMPORAL_NAMESPACE: h.namespace,
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: certs.caCert,
      TEMPORAL_TLS_CLIENT_CERT_PATH: certs.clientCert,
      TEMPORAL_TLS_CLIENT_KEY_PATH: certs.clientKey,
      TEMPORAL_API_KEY: API_KEY,
    };
    const env = temporalEnv({ ...tlsVariables, TEMPORAL_ADDRESS: proxy.address, EARTHCATALOG_TASK_QUEUE: queue });
    // The worker gets the address as a flag (the harness passes the dev server's; this one wins) and
    // TLS and the API key from the variables.
    const worker = spawnWorkerProcess(h, queue, tlsVariables, ['--address', proxy.address]);
    try {
      const { stdout, stderr } = await execFileP(process.execPath, [BIN, '--warehouse', warehouse, '--catalog', catalog, '--json'], { cwd: REPO_ROOT, env, timeout: 240_000 });
      const summary = JSON.parse(stdout) as CompactionSummary;
      assert.equal(summary.bucketsCompacted, 2);
      assert.equal(summary.failedBucketsTotal, 0);
      assert.equal((await listFiles(warehouse)).length, 2, 'one file per bucket');
      assert.ok(proxy.authorized() >= 2, `worker and CLI came through mutual TLS (${proxy.authorized()} connections)`);
      assert.match(worker.output(), new RegExp(`on ${proxy.address}/${h.namespace} \\(TLS, API key\\)`));
      for (const text of [stdout, stderr, worker.output()]) {
        assert.ok(!text.includes(API_KEY), 'the API key is never printed');
        assert.ok(!text.includes(keyFileContents), "the client key's contents are never printed");
      }
    } finally {
      await worker.stop();
    }
  });

  test('without a client certificate the handshake is refused and the CLI fails naming the address', async () => {
    const refusedBefore = proxy.refused();
    const env = temporalEnv({ TEMPORAL_ADDRESS: proxy.address, TEMPORAL_NAMESPACE: h.namespace, TEMPORAL_TLS_SERVER_CA_CERT_PATH: certs.caCert, TEMPORAL_API_KEY: API_KEY });
    const r = await execFileP(process.execPath, [BIN, 'status'], { cwd: REPO_ROOT, env, timeout: 60_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach Temporal at ${proxy.address}/${h.namespace} \\(TLS, API key\\)`));
    assert.ok(!r.stderr.includes(API_KEY));
    assert.ok(proxy.refused() > refusedBefore, 'the proxy refused a handshake without a client certificate');
  });
});

/**
 * How the processes find Temporal: flags first, then what the `temporal` CLI reads too: the TEMPORAL_*
 * variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*) over the profile
 * of its config file (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE), through the SDK's envconfig.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { Client, Connection, isGrpcServiceError, type TLSConfig } from '@temporalio/client';
import { loadClientConfigProfile, toClientOptions } from '@temporalio/envconfig';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';
import { UsageError } from './cli-args';

/** TLS, API key and gRPC metadata: passed to every connection (client and worker), never printed. */
export interface ConnectionAuth {
  tls?: TLSConfig | boolean;
  apiKey?: string;
  metadata?: Record<string, string>;
}

export interface TemporalTarget {
  address: string;
  namespace: string;
  taskQueue: string;
  auth: ConnectionAuth;
}

/** The server, namespace and credentials of the flags, TEMPORAL_* variables and config profile; a setting that is wrong is a UsageError (exit 64), found before anything connects. */
export function resolveTarget(flags: { address?: string; namespace?: string; taskQueue?: string }): TemporalTarget {
  let profile: ReturnType<typeof toClientOptions>;
  try {
    // An empty variable means unset, as for the EARTHCATALOG_* ones: `TEMPORAL_API_KEY=` would otherwise
    // turn TLS on, and `TEMPORAL_ADDRESS=` name no server.
    const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''));
    const loaded = loadClientConfigProfile({ overrideEnvVars: env });
    halfCertificatePair(loaded.tls);
    profile = toClientOptions(loaded);
  } catch (err) {
    throw new UsageError(`cannot load the Temporal client configuration (TEMPORAL_* variables, TEMPORAL_CONFIG_FILE): ${(err as Error).message}`);
  }
  const { address, apiKey, tls, metadata } = profile.connectionOptions;
  const target = {
    address: flags.address ?? address ?? 'localhost:7233',
    namespace: flags.namespace ?? profile.namespace ?? 'default',
    // An empty variable means unset (as a deployment template leaves it), for every command alike.
    taskQueue: flags.taskQueue ?? (process.env.EARTHCATALOG_TASK_QUEUE || DEFAULT_TASK_QUEUE),
    auth: {
      ...(tls !== undefined && tls !== null ? { tls } : {}),
      ...(typeof apiKey === 'string' ? { apiKey } : {}),
      ...(metadata && Object.keys(metadata).length ? { metadata: Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, String(v)])) } : {}),
    },
  };
  checkAddress(target.address, flags.address !== undefined ? '--address' : address ? 'TEMPORAL_ADDRESS or the config profile' : 'the default');
  checkAuth(target.auth);
  if (typeof target.auth.tls === 'object') checkTlsFiles(target.auth.tls);
  return target;
}

/**
 * Refuses an address that is not host:port: without a port, or with one out of range, the connection
 * only times out after ~12 s, blamed on the server ("is the server running there?").
 */
function checkAddress(address: string, from: string): void {
  const parts = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(address);
  const port = parts ? Number(parts[2]) : 0;
  if (port >= 1 && port <= 65535) return;
  throw new UsageError(`Temporal address ${JSON.stringify(address)} (from ${from}) is not host:port with a port from 1 to 65535 (e.g. temporal.example.com:7233, without a scheme)`);
}

/**
 * Refuses a CA certificate, client certificate or key that does not parse, naming the setting (never
 * the contents): the transport takes a wrong file without a word and every connection then times out,
 * "Failed to connect before the deadline", as if the server were down.
 */
function checkTlsFiles(tls: TLSConfig): void {
  // PEM only: Node would read DER too, but the transports (grpc-js, the core's rustls) take PEM.
  const certificate = (b: Buffer) => {
    if (!b.toString('latin1').includes('-----BEGIN CERTIFICATE-----')) throw new Error('no -----BEGIN CERTIFICATE----- block');
    return new X509Certificate(b);
  };
  const files: [string, Uint8Array | undefined, string, (b: Buffer) => unknown][] = [
    ["server CA certificate (TEMPORAL_TLS_SERVER_CA_CERT_PATH/_DATA, or server_ca_cert_path of the profile's tls)", tls.serverRootCACertificate, 'a PEM certificate', certificate],
    ["client certificate (TEMPORAL_TLS_CLIENT_CERT_PATH/_DATA, or client_cert_path of the profile's tls)", tls.clientCertPair?.crt, 'a PEM certificate', certificate],
    ["client key (TEMPORAL_TLS_CLIENT_KEY_PATH/_DATA, or client_key_path of the profile's tls)", tls.clientCertPair?.key, 'a PEM private key', (b) => createPrivateKey(b)],
  ];
  for (const [what, contents, expected, parse] of files) {
    if (contents === undefined) continue;
    try {
      parse(Buffer.from(contents));
    } catch (err) {
      throw new UsageError(`the TLS ${what} cannot be read as ${expected} (${(err as Error).message})`);
    }
  }
}

/**
 * Refuses a client certificate without its key or a key without its certificate: the SDK drops a half
 * pair without a word and connects without one, and the server's refusal of the handshake does not say why.
 */
function halfCertificatePair(tls: { clientCert?: unknown; clientKey?: unknown } | undefined): void {
  if ((tls?.clientCert === undefined) === (tls?.clientKey === undefined)) return;
  const [given, missing] = tls?.clientCert === undefined ? ['key', 'certificate'] : ['certificate', 'key'];
  throw new UsageError(
    `a TLS client ${given} is set but no client ${missing} (TEMPORAL_TLS_CLIENT_CERT_PATH/_DATA and TEMPORAL_TLS_CLIENT_KEY_PATH/_DATA, ` +
      `or client_cert_path and client_key_path of the profile's tls): set both, or neither`,
  );
}

/**
 * Refuses an API key or metadata value that a request header cannot carry, naming where it is and what
 * is wrong but never the value: gRPC's own error quotes the whole header, key included. A trailing
 * newline is the usual cause (a secret file read whole into a variable, a key written with `echo`).
 */
export function checkAuth(auth: ConnectionAuth, from: 'environment' | 'options' = 'environment'): void {
  const values: [string, string | undefined][] = [
    [from === 'environment' ? 'the Temporal API key (TEMPORAL_API_KEY, or api_key of the config profile)' : 'the worker option auth.apiKey', auth.apiKey],
    ...Object.entries(auth.metadata ?? {}).map(([name, value]): [string, string] => [
      from === 'environment' ? `the gRPC metadata value ${name} (TEMPORAL_GRPC_META_*, or grpc_meta of the profile)` : `the worker option auth.metadata.${name}`,
      value,
    ]),
  ];
  for (const [what, value] of values) {
    if (value === undefined) continue;
    const chars = [...value];
    const at = chars.findIndex((ch) => ch < ' ' || ch > '~');
    if (at < 0) continue;
    const ch = chars[at]!;
    const control = ch < ' ' || ch === '\u007f';
    const name = ch === '\n' ? 'a newline' : ch === '\r' ? 'a carriage return' : ch === '\t' ? 'a tab' : `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
    const where = at === chars.length - 1 ? 'as its last character' : `at character ${at + 1} of ${chars.length}`;
    const hint = control ? ' (a secret read from a file with its newline?)' : '';
    const message = `${what} has ${name} ${where}, which a request header cannot carry${hint}: remove it`;
    // A setting of the environment is wrong before anything starts: a usage error (exit 64), as a bad EARTHCATALOG_* setting is.
    throw from === 'environment' ? new UsageError(message) : new Error(message);
  }
}

/** Metadata headers whose values are credentials. */
const SECRET_HEADER = /auth|token|key|secret|password|cookie|signature|credential/i;

/** `message` with the API key and credential headers of `auth` replaced: a transport error may quote a header. */
export function withoutSecrets(message: string, auth: ConnectionAuth): string {
  const secrets = [auth.apiKey, ...Object.entries(auth.metadata ?? {}).filter(([name]) => SECRET_HEADER.test(name)).map(([, value]) => value)];
  return secrets.filter((v): v is string => typeof v === 'string' && v.length > 0).reduce((m, secret) => m.split(secret).join('[redacted]'), message);
}

/** A one-line description for messages: where, and how (never the key or certificate itself). */
export function describeTarget(target: TemporalTarget): string {
  const how = [target.auth.tls ? 'TLS' : undefined, target.auth.apiKey ? 'API key' : undefined].filter(Boolean).join(', ');
  return `${target.address}/${target.namespace}${how ? ` (${how})` : ''}`;
}

export async function connectClient(target: TemporalTarget): Promise<Client> {
  checkAuth(target.auth);
  let client: Client;
  try {
    const connection = await Connection.connect({
      address: target.address,
      ...target.auth,
      connectTimeout: '10 seconds',
      // A command following a run through a restart of the server reconnects within 5 s of its return, not after grpc's backoff of up to 2 minutes.
      channelArgs: { 'grpc.max_reconnect_backoff_ms': 5_000 },
    });
    client = new Client({ connection, namespace: target.namespace });
  } catch (err) {
    throw unreachable(target, err);
  }
  // Every command's first call would otherwise fail with the server's bare "Namespace not found: 'x'",
  // naming neither the server nor where the name came from. Only that answer counts: a key that may not
  // describe the namespace leaves the command's own calls to say what they may not do.
  const missing = await client.workflowService.describeNamespace({ namespace: target.namespace }).then(
    () => false,
    (err: unknown) => isGrpcServiceError(err) && err.code === GRPC_NOT_FOUND,
  );
  if (missing) {
    await client.connection.close();
    throw new Error(
      `namespace ${target.namespace} does not exist on the Temporal server at ${target.address} (--namespace, TEMPORAL_NAMESPACE or the config profile names it; ` +
        `temporal operator namespace list --address ${target.address} lists those there)`,
    );
  }
  return client;
}

/** gRPC's NOT_FOUND status code. */
export const GRPC_NOT_FOUND = 5;

/**
 * Why the server could not be reached, naming where and how it was tried. The core's transport errors
 * (`tonic::transport::Error(Transport, ConnectError(… Os { …, message: "Connection refused" }))`) are
 * cut to their operating-system reason.
 */
export function unreachable(target: TemporalTarget, err: unknown): Error {
  const raw = withoutSecrets(err instanceof Error ? err.message : String(err), target.auth);
  const reason =
    /\bOs \{[^}]*message: "([^"]+)"/.exec(raw)?.[1] ??
    /\bCustom \{[^}]*error: "?(.+?)"? \}/.exec(raw)?.[1] ??
    /ConnectError\("([^"]+)"/.exec(raw)?.[1] ??
    raw;
  // A TLS client meeting a plain-text server (or the reverse) fails in the handshake: the server runs, the setting is wrong.
  const hint = target.auth.tls
    ? 'is the server running there, and does it take TLS? TEMPORAL_TLS, TEMPORAL_API_KEY or the config profile turn TLS on'
    : 'is the server running there? --address or TEMPORAL_ADDRESS names it';
  return new Error(`cannot reach Temporal at ${describeTarget(target)}: ${reason} (${hint})`);
}

/**
 * How the processes find Temporal: flags first, then what the `temporal` CLI reads too: the TEMPORAL_*
 * variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*) over the profile
 * of its config file (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE), through the SDK's envconfig.
 */
import { Client, Connection, type TLSConfig } from '@temporalio/client';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';

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

export function resolveTarget(flags: { address?: string; namespace?: string; taskQueue?: string }): TemporalTarget {
  let profile: ReturnType<typeof loadClientConnectConfig>;
  try {
    profile = loadClientConnectConfig();
  } catch (err) {
    throw new Error(`cannot load the Temporal client configuration (TEMPORAL_* variables, TEMPORAL_CONFIG_FILE): ${(err as Error).message}`);
  }
  const { address, apiKey, tls, metadata } = profile.connectionOptions;
  return {
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
}

/** A one-line description for messages: where, and how (never the key or certificate itself). */
export function describeTarget(target: TemporalTarget): string {
  const how = [target.auth.tls ? 'TLS' : undefined, target.auth.apiKey ? 'API key' : undefined].filter(Boolean).join(', ');
  return `${target.address}/${target.namespace}${how ? ` (${how})` : ''}`;
}

export async function connectClient(target: TemporalTarget): Promise<Client> {
  try {
    const connection = await Connection.connect({
      address: target.address,
      ...target.auth,
      connectTimeout: '10 seconds',
      // A command following a run through a restart of the server reconnects within 5 s of its return, not after grpc's backoff of up to 2 minutes.
      channelArgs: { 'grpc.max_reconnect_backoff_ms': 5_000 },
    });
    return new Client({ connection, namespace: target.namespace });
  } catch (err) {
    throw new Error(`cannot reach Temporal at ${describeTarget(target)}: ${(err as Error).message}`);
  }
}

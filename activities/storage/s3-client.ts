/**
 * SDK clients for S3 and S3 Tables, configured only from the worker's environment: credentials from
 * the SDK's default chain, region from AWS_REGION / the shared config (us-east-1 when none is set),
 * endpoint from AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_S3TABLES (the SDK reads
 * these itself). Nothing here comes from workflow input.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { S3TablesClient } from '@aws-sdk/client-s3tables';

export interface S3ClientSettings {
  /** Attempts per request, including the first (SDK standard retry mode with backoff). */
  maxAttempts?: number;
  /** Socket inactivity (no byte sent or received) after which a request is abandoned and retried. */
  idleTimeoutMs?: number;
  connectionTimeoutMs?: number;
  /** Overrides the region of the environment (an S3 Tables ARN names its region). */
  region?: string;
  /**
   * Overrides the endpoint of the environment. For embedding and tests (a fault-injecting proxy);
   * workers take it from AWS_ENDPOINT_URL*, never from workflow input.
   */
  endpoint?: string;
}

export const DEFAULT_REGION = 'us-east-1';
const DEFAULT_MAX_ATTEMPTS = 8;
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
const DEFAULT_CONNECTION_TIMEOUT_MS = 10_000;

/** The custom endpoint the SDK will use for `service`, if the environment names one. */
export function configuredEndpoint(service: 'S3' | 'S3TABLES'): string | undefined {
  if (process.env.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS === 'true') return undefined;
  return process.env[`AWS_ENDPOINT_URL_${service}`] || process.env.AWS_ENDPOINT_URL || undefined;
}

function common(settings: S3ClientSettings) {
  return {
    maxAttempts: settings.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    retryMode: 'standard',
    // An idle timeout rather than a total one: a large part on a slow link is fine as long as bytes flow.
    requestHandler: {
      socketTimeout: settings.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      connectionTimeout: settings.connectionTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUT_MS,
    },
  } as const;
}

/** The region of the environment, or us-east-1 when none is configured anywhere. */
export async function environmentRegion(): Promise<string> {
  const probe = new S3Client({});
  try {
    return await probe.config.region();
  } catch {
    return DEFAULT_REGION;
  } finally {
    probe.destroy();
  }
}

export async function createS3Client(settings: S3ClientSettings = {}): Promise<S3Client> {
  return new S3Client({
    ...common(settings),
    region: settings.region ?? (await environmentRegion()),
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    // S3-compatible servers (MinIO, moto, Ceph) rarely resolve bucket subdomains.
    forcePathStyle: (settings.endpoint ?? configuredEndpoint('S3')) !== undefined,
    // A bucket in another region than the configured one is still reachable.
    followRegionRedirects: true,
  });
}

export async function createS3TablesClient(settings: S3ClientSettings = {}): Promise<S3TablesClient> {
  return new S3TablesClient({
    ...common(settings),
    region: settings.region ?? (await environmentRegion()),
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
  });
}

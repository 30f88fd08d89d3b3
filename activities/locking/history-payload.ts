import type { Client } from '@temporalio/client';
import type { Payload } from '@temporalio/common';

/**
 * A payload read from a workflow's history, decoded as `client`'s data converter wrote it (its payload
 * codecs undone first, in reverse order); undefined when there is none.
 */
export async function decodeHistoryPayload<T>(client: Client, payload: Payload | null | undefined): Promise<T | undefined> {
  if (!payload) return undefined;
  const { payloadConverter, payloadCodecs } = client.options.loadedDataConverter;
  let decoded = [payload];
  for (const codec of [...payloadCodecs].reverse()) decoded = await codec.decode(decoded);
  return payloadConverter.fromPayload<T>(decoded[0]!);
}

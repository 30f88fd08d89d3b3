/**
 * A TLS front for the dev server (which speaks plaintext only): terminates mutual TLS with certificates
 * made by openssl for the test and forwards the HTTP/2 bytes to the server, the way a TLS-terminating
 * load balancer in front of a self-hosted Temporal does. It counts the connections it authorized.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCertificates {
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** A CA, a server certificate for localhost and a client certificate, all signed by that CA. */
export async function makeTestCertificates(dir: string): Promise<TestCertificates> {
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => run('openssl', args, { cwd: dir });
  await openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.crt'), '-subj', '/CN=earthcatalog-test-ca', '-days', '2');
  for (const [name, subject, ext] of [
    ['server', '/CN=localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'],
    ['client', '/CN=earthcatalog-worker', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    await fs.writeFile(f(`${name}.ext`), ext);
    await openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', subject);
    await openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${name}.crt`), '-days', '2', '-extfile', f(`${name}.ext`));
  }
  return { caCert: f('ca.crt'), serverCert: f('server.crt'), serverKey: f('server.key'), clientCert: f('client.crt'), clientKey: f('client.key') };
}

export interface TlsProxy {
  /** host:port to dial (localhost, matching the server certificate). */
  address: string;
  /** Connections that presented a client certificate signed by the test CA. */
  authorized(): number;
  /** TLS handshakes refused (no or a foreign client certificate). */
  refused(): number;
  close(): Promise<void>;
}

export async function startTlsProxy(target: string, certs: TestCertificates): Promise<TlsProxy> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  let authorized = 0;
  let refused = 0;
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(
    {
      cert: await fs.readFile(certs.serverCert),
      key: await fs.readFile(certs.serverKey),
      ca: await fs.readFile(certs.caCert),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
    },
    (client) => {
      authorized++;
      const upstream = net.connect(port, host === 'localhost' ? '127.0.0.1' : host);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    },
  );
  server.on('tlsClientError', () => refused++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: listening } = server.address() as net.AddressInfo;
  return {
    address: `localhost:${listening}`,
    authorized: () => authorized,
    refused: () => refused,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

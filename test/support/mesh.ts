/**
 * Two-sidecar meshes for tests: a CA and workload certificates made with the real openssl
 * (cmd/certs.ts), sidecars spawned as real processes with an inbound listener, and clients
 * that present a certificate (node:tls, curl, openssl s_client).
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { issueCertificates, issueWorkload, type IssuedFiles, type WorkloadSpec } from '../../cmd/certs.js';
import { spawnProxy, type SpawnedProxy, type Teardown } from './spawn.js';

const run = promisify(execFile);

export const TRUST_DOMAIN = 'mesh.local';
export const id = (sa: string, ns = 'shop'): string => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;

/** Certificates of one test mesh: a CA, workloads by name, and a second CA nobody trusts. */
export interface MeshCerts {
  readonly dir: string;
  readonly ca: IssuedFiles;
  readonly outsider: IssuedFiles;
  cert(name: string): { readonly cert: string; readonly key: string };
  /** Signs a fresh certificate for `spec` with the mesh CA, into its own directory. */
  reissue(spec: WorkloadSpec): Promise<{ cert: string; key: string }>;
}

/** Makes the mesh CA with `workloads`, and an outsider CA with one workload of the same name as the first. */
export async function meshCerts(t: Teardown, workloads: readonly WorkloadSpec[]): Promise<MeshCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-mesh-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ca = await issueCertificates(join(dir, 'ca'), { workloads });
  const outsider = await issueCertificates(join(dir, 'outsider'), { caName: 'outsider', workloads: [{ ...workloads[0]!, name: 'outsider' }] });
  let n = 0;
  return {
    dir,
    ca,
    outsider,
    cert: (name) => {
      const w = ca.workloads[name];
      if (w === undefined) throw new Error(`no certificate for ${name}`);
      return w;
    },
    reissue: (spec) => issueWorkload(join(dir, `re-${++n}`), ca, spec),
  };
}

/** Copies a reissued certificate over a live one the way a secret update would: key, then certificate. */
export async function rotate(live: { cert: string; key: string }, next: { cert: string; key: string }): Promise<void> {
  await copyFile(next.key, live.key);
  await copyFile(next.cert, live.cert);
}

/** A sidecar's identity section, its files copied to their own paths (rotation rewrites them). */
export async function identityFiles(certs: MeshCerts, name: string): Promise<{ cert: string; key: string; ca: string; yaml: string }> {
  const own = await mkdtemp(join(certs.dir, `${name}-live-`));
  const files = { cert: join(own, 'cert.pem'), key: join(own, 'key.pem'), ca: join(own, 'ca.pem') };
  await copyFile(certs.cert(name).cert, files.cert);
  await copyFile(certs.cert(name).key, files.key);
  await copyFile(certs.ca.caCert, files.ca);
  const yaml = `identity:
  trustDomain: ${TRUST_DOMAIN}
  certFile: ${files.cert}
  keyFile: ${files.key}
  trustBundleFile: ${files.ca}
  refresh: 100ms
`;
  return { ...files, yaml };
}

/** A spawned sidecar and the port of its inbound listener. */
export interface Sidecar extends SpawnedProxy {
  readonly inboundPort: number;
}

/** Spawns a sidecar whose policy has an inbound listener on 127.0.0.1:0 in front of `app`. */
export async function spawnSidecar(t: Teardown, app: string, rest: string, inboundExtra = '', env?: Record<string, string>): Promise<Sidecar> {
  const policy = `version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: 127.0.0.1:0 }
  inbound:
    address: 127.0.0.1:0
    app: ${app}
${inboundExtra}
${rest}`;
  const proxy = await spawnProxy(t, policy, env ? { env } : {});
  const m = /:(\d+)$/.exec(String(proxy.started.inbound));
  if (!m) throw new Error(`no inbound address in ${JSON.stringify(proxy.started)}`);
  return Object.assign(proxy, { inboundPort: Number(m[1]) });
}

/** The answer to one HTTPS request made with a client certificate (or none). */
export interface TlsAnswer {
  readonly status: number;
  readonly body: string;
  readonly headers: Record<string, string | string[] | undefined>;
}

/**
 * One HTTPS request to `port` presenting `client` (null: no certificate). The server's
 * certificate is checked against `ca` but not its host name: a mesh identity is a URI SAN.
 */
export function tlsRequest(port: number, client: { cert: string; key: string } | null, ca: string, path = '/', headers: Record<string, string> = {}): Promise<TlsAnswer> {
  const text = (file: string): Promise<string> => readFile(file, 'utf8');
  return Promise.all([text(ca), client ? text(client.cert) : null, client ? text(client.key) : null]).then(
    ([caPem, cert, key]) =>
      new Promise<TlsAnswer>((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port,
            path,
            headers,
            ca: caPem,
            ...(cert && key ? { cert, key } : {}),
            checkServerIdentity: () => undefined,
            agent: false,
          },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
        req.end();
      }),
  );
}

/** Runs a command to completion; never rejects (exit code and output returned). */
export async function tool(cmd: string, args: readonly string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const child = run(cmd, [...args], { timeout: 15_000, maxBuffer: 4 * 1024 * 1024 });
    child.child.stdin?.end(input);
    const { stdout, stderr } = await child;
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/**
 * `pilotfish certs`: a developer tool that makes a CA and SPIFFE workload certificates (X.509-SVIDs)
 * with the `openssl` CLI, for tests and the demo. Not for production: the CA key sits beside the
 * certificates it signs.
 *
 * Each call works in its own scratch directory (OpenSSL's `ca` database, configs, CSRs) and moves
 * finished files into place with a rename, so parallel calls never share state and a watcher never
 * sees a half-written file.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parseSpiffeId, spiffeIdProblem } from '../lib/identity/spiffe.js';
import { splitFlag } from './flags.js';

const run = promisify(execFile);

/** A workload certificate to issue. */
export interface WorkloadSpec {
  /** File stem: `<name>.pem`, `<name>-key.pem`; also the subject CN. */
  readonly name: string;
  /** The URI SAN. Not validated here, so tests can make certificates a loader must refuse. */
  readonly spiffeId: string;
  /** A certificate whose validity ended a day ago. */
  readonly expired?: boolean;
  /** Validity in days (default 90). */
  readonly days?: number;
  readonly dnsNames?: readonly string[];
  /**
   * Raw SAN entries (`URI:…`, `DNS:…`, `IP:…`) used instead of those made from spiffeId and
   * dnsNames: for tests of certificates that are not valid SVIDs (no URI SAN, two of them).
   */
  readonly subjectAltNames?: readonly string[];
}

/** Absolute paths of what `issueCertificates` wrote. */
export interface IssuedFiles {
  readonly caCert: string;
  readonly caKey: string;
  readonly workloads: Readonly<Record<string, { readonly cert: string; readonly key: string }>>;
}

const DEFAULT_CA_NAME = 'Pilotfish Development CA';
const CA_DAYS = 3650;
const LEAF_DAYS = 90;
const DAY_MS = 86_400_000;
/** Leaves start a minute in the past, so a peer whose clock lags slightly still accepts them. */
const BACKDATE_MS = 60_000;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Runs openssl; a failure carries its stderr, which says what was wrong. */
async function openssl(args: string[]): Promise<string> {
  try {
    const { stdout } = await run('openssl', args, { maxBuffer: 1 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string; code?: unknown };
    if (e.code === 'ENOENT') throw new Error('openssl not found on PATH (Debian: apt-get install openssl)', { cause: err });
    throw new Error(`openssl ${args[0]} failed: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
  }
}

/**
 * Escapes a value for an OpenSSL config file, where `#` starts a comment, `$` expands a variable
 * and quotes are stripped: a backslash makes any following character literal (only the letters
 * n, r, b and t are special after one, and letters are never escaped here).
 */
function confValue(value: string): string {
  if (/\p{Cc}/u.test(value)) throw new Error(`control character in ${JSON.stringify(value)}`);
  return value.replace(/[^A-Za-z0-9]/g, '\\$&');
}

/** Escapes a value for `-subj /O=…/CN=…`, where `/`, `=` and `+` are separators. */
function subjValue(value: string): string {
  return value.replace(/[\\/=+]/g, '\\$&');
}

/** Writes `text` to `file` atomically (temp file + rename), optionally with a mode. */
async function writeAtomic(file: string, text: string, mode?: number): Promise<void> {
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, text, mode === undefined ? {} : { mode });
    // writeFile's mode is subject to the umask; a key must end up 0600 whatever the umask.
    if (mode !== undefined) await chmod(temp, mode);
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

/** Makes an EC P-256 private key (PKCS#8 PEM): small and fast to handshake with. */
async function newKey(): Promise<string> {
  return openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']);
}

/** `YYYYMMDDHHMMSSZ`, as `openssl ca -startdate/-enddate` take it. */
function asn1Time(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
}

async function withScratch<T>(fn: (scratch: string) => Promise<T>): Promise<T> {
  const scratch = await mkdtemp(join(tmpdir(), 'pilotfish-certs-'));
  try {
    return await fn(scratch);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** A config with only what `req` needs, so the host's openssl.cnf cannot add extensions. */
const REQ_CONFIG = '[req]\ndistinguished_name = dn\n[dn]\n';

async function issueCa(dir: string, caName: string): Promise<{ caCert: string; caKey: string }> {
  const caCert = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca-key.pem');
  const keyPem = await newKey();
  await withScratch(async (scratch) => {
    const config = join(scratch, 'req.cnf');
    const keyFile = join(scratch, 'ca-key.pem');
    const certFile = join(scratch, 'ca.pem');
    await writeFile(
      config,
      `${REQ_CONFIG}[v3_ca]\nbasicConstraints = critical, CA:true\nkeyUsage = critical, keyCertSign, cRLSign\n` +
        'subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n',
    );
    await writeFile(keyFile, keyPem, { mode: 0o600 });
    await openssl([
      'req', '-x509', '-new', '-config', config, '-extensions', 'v3_ca', '-key', keyFile, '-sha256',
      '-days', String(CA_DAYS), '-subj', `/O=pilotfish/CN=${subjValue(caName)}`, '-out', certFile,
    ]);
    // The key is put in place first, so ca.pem never names a key that is not there yet.
    await writeAtomic(caKey, keyPem, 0o600);
    await writeAtomic(caCert, await readFile(certFile, 'utf8'));
  });
  return { caCert, caKey };
}

/** Signs a new workload certificate with an existing CA (e.g. a rotation in a test). */
export async function issueWorkload(
  dir: string,
  ca: { caCert: string; caKey: string },
  spec: WorkloadSpec,
): Promise<{ cert: string; key: string }> {
  if (!NAME.test(spec.name) || spec.name === 'ca') throw new Error(`workload name ${JSON.stringify(spec.name)}: use letters, digits, ".", "-", "_" (and not "ca")`);
  const days = spec.days ?? LEAF_DAYS;
  if (!(days > 0)) throw new Error(`workload ${spec.name}: days must be positive, got ${days}`);
  const sans = spec.subjectAltNames ?? [`URI:${spec.spiffeId}`, ...(spec.dnsNames ?? []).map((d) => `DNS:${d}`)];
  await mkdir(dir, { recursive: true });
  const cert = join(resolve(dir), `${spec.name}.pem`);
  const key = join(resolve(dir), `${spec.name}-key.pem`);
  // The real clock on purpose: a certificate is for other processes, which read the real clock.
  const now = Date.now();
  const [start, end] = spec.expired ? [now - (days + 1) * DAY_MS, now - DAY_MS] : [now - BACKDATE_MS, now + days * DAY_MS];
  const keyPem = await newKey();
  await withScratch(async (scratch) => {
    const keyFile = join(scratch, 'key.pem');
    const csr = join(scratch, 'req.csr');
    const out = join(scratch, 'cert.pem');
    await writeFile(keyFile, keyPem, { mode: 0o600 });
    await writeFile(join(scratch, 'req.cnf'), REQ_CONFIG);
    await openssl(['req', '-new', '-config', join(scratch, 'req.cnf'), '-key', keyFile, '-subj', `/O=pilotfish/CN=${subjValue(spec.name)}`, '-out', csr]);
    // `openssl ca` rather than `x509 -req`: only it takes explicit start and end dates (OpenSSL
    // 3.0), which an expired certificate needs, and its database lives in this scratch directory.
    await writeFile(join(scratch, 'index.txt'), '');
    const altNames = sans.map((san, i) => {
      const colon = san.indexOf(':');
      if (colon <= 0) throw new Error(`workload ${spec.name}: subject alt name ${JSON.stringify(san)} is not TYPE:value`);
      return `${san.slice(0, colon)}.${i + 1} = ${confValue(san.slice(colon + 1))}`;
    });
    const config = [
      '[ca]', 'default_ca = pf',
      '[pf]',
      `database = ${confValue(join(scratch, 'index.txt'))}`,
      `new_certs_dir = ${confValue(scratch)}`,
      `serial = ${confValue(join(scratch, 'serial'))}`,
      'default_md = sha256', 'policy = pol', 'unique_subject = no', 'copy_extensions = none',
      '[pol]', 'organizationName = optional', 'commonName = supplied',
      '[leaf]',
      'basicConstraints = critical, CA:false',
      'keyUsage = critical, digitalSignature',
      'extendedKeyUsage = serverAuth, clientAuth',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid, issuer',
      ...(altNames.length > 0 ? ['subjectAltName = @alt', '[alt]', ...altNames] : []),
    ].join('\n');
    await writeFile(join(scratch, 'ca.cnf'), `${config}\n`);
    await openssl([
      'ca', '-config', join(scratch, 'ca.cnf'), '-batch', '-notext', '-rand_serial', '-extensions', 'leaf',
      '-cert', ca.caCert, '-keyfile', ca.caKey, '-startdate', asn1Time(start), '-enddate', asn1Time(end),
      '-in', csr, '-out', out,
    ]);
    // Key first, then certificate: a watcher that sees the new certificate finds its key in place.
    await writeAtomic(key, keyPem, 0o600);
    await writeAtomic(cert, await readFile(out, 'utf8'));
  });
  return { cert, key };
}

/** Makes a new CA in `dir` (`ca.pem`, `ca-key.pem`) and signs each workload with it. */
export async function issueCertificates(
  dir: string,
  options: { readonly caName?: string; readonly workloads: readonly WorkloadSpec[] },
): Promise<IssuedFiles> {
  const names = options.workloads.map((w) => w.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new Error(`workload ${dup} is listed twice`);
  await mkdir(dir, { recursive: true });
  const ca = await issueCa(resolve(dir), options.caName ?? DEFAULT_CA_NAME);
  const issued = await Promise.all(options.workloads.map((w) => issueWorkload(dir, ca, w)));
  const workloads: Record<string, { cert: string; key: string }> = {};
  options.workloads.forEach((w, i) => {
    workloads[w.name] = issued[i]!;
  });
  return { ...ca, workloads };
}

const USAGE = `Usage: pilotfish certs --out DIR [--trust-domain TD] [--days N] --workload NAME[=SPIFFE-ID] ...

Makes a development CA (DIR/ca.pem, DIR/ca-key.pem) and, per --workload, DIR/NAME.pem and
DIR/NAME-key.pem with the URI SAN SPIFFE-ID (default spiffe://TD/ns/default/sa/NAME).
  --out DIR            where to write (created if missing)
  --trust-domain TD    trust domain of the workloads (default mesh.local)
  --days N             validity of workload certificates in days (default ${LEAF_DAYS})
  --workload NAME[=ID] a workload to issue; repeatable
Needs the openssl command. Not for production.`;

/** `pilotfish certs …`: returns the exit code (0 done, 1 openssl failed, 2 bad arguments). */
export async function runCertsCommand(
  args: string[],
  io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream } = { out: process.stdout, err: process.stderr },
): Promise<number> {
  let out: string | undefined;
  let trustDomain = 'mesh.local';
  let days = LEAF_DAYS;
  const workloads: string[] = [];
  const usage = (problem: string): number => {
    io.err.write(`pilotfish certs: ${problem}\n${USAGE}\n`);
    return 2;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const [flag, inline] = splitFlag(arg);
    const value = (): string | undefined => inline ?? args[++i];
    switch (flag) {
      case '--help':
      case '-h':
        io.out.write(`${USAGE}\n`);
        return 0;
      case '--out':
        out = value();
        break;
      case '--trust-domain':
        trustDomain = value() ?? '';
        break;
      case '--days':
        days = Number(value());
        break;
      case '--workload': {
        const w = value();
        if (w === undefined) return usage('--workload needs NAME[=SPIFFE-ID]');
        workloads.push(w);
        break;
      }
      default:
        return usage(`unknown argument ${arg}`);
    }
  }
  if (!out) return usage('--out DIR is required');
  if (parseSpiffeId(`spiffe://${trustDomain}`) === null) return usage(`--trust-domain ${JSON.stringify(trustDomain)}: ${spiffeIdProblem(`spiffe://${trustDomain}`)}`);
  if (!Number.isInteger(days) || days <= 0) return usage('--days must be a positive whole number');
  const specs: WorkloadSpec[] = [];
  for (const w of workloads) {
    const eq = w.indexOf('=');
    const name = eq < 0 ? w : w.slice(0, eq);
    const spiffeId = eq < 0 ? `spiffe://${trustDomain}/ns/default/sa/${name}` : w.slice(eq + 1);
    if (!NAME.test(name) || name === 'ca') return usage(`workload name ${JSON.stringify(name)}: use letters, digits, ".", "-", "_" (and not "ca")`);
    const problem = spiffeIdProblem(spiffeId);
    if (problem !== null) return usage(`workload ${name}: ${JSON.stringify(spiffeId)} is not a SPIFFE ID: ${problem}`);
    if (parseSpiffeId(spiffeId)?.trustDomain !== trustDomain) return usage(`workload ${name}: ${spiffeId} is not in trust domain ${trustDomain}`);
    specs.push({ name, spiffeId, days });
  }
  try {
    const files = await issueCertificates(out, { workloads: specs });
    io.out.write(`wrote ${files.caCert} (CA certificate)\nwrote ${files.caKey} (CA key)\n`);
    for (const spec of specs) {
      const f = files.workloads[spec.name]!;
      io.out.write(`wrote ${f.cert} (${spec.spiffeId}, ${days} days)\nwrote ${f.key}\n`);
    }
    return 0;
  } catch (err) {
    io.err.write(`pilotfish certs: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

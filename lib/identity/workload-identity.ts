/**
 * This workload's mTLS identity (an X.509-SVID, its key and the trust bundle), loaded from files
 * and rotated without a restart. Every load is validated in full, and a rotation that does not
 * validate (e.g. a new certificate whose key is not written yet) keeps the old material serving:
 * a sidecar with a slightly older certificate beats one with none.
 *
 * The poller stats the files every `refreshMs` (following symlinks, since Kubernetes rotates a
 * secret volume by swapping its `..data` symlink) and re-reads them when one changed; it also
 * re-reads after a failed attempt, so a rotation that was caught half-written is picked up even on
 * filesystems whose timestamps are too coarse to show the second write.
 */
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import tls from 'node:tls';
import type { Clock, Timer } from '../core/clock.js';
import type { Logger } from '../observe/logger.js';
import { parseSpiffeId, spiffeIdOfSubjectAltName, spiffeIdProblem, subjectAltNameEntries } from './spiffe.js';

/** Where the identity lives and how often to look for a rotation. */
export interface IdentityFiles {
  readonly trustDomain: string;
  /** The leaf certificate, optionally followed by intermediates (leaf first). */
  readonly certFile: string;
  readonly keyFile: string;
  /** One or more CA certificates this workload trusts (and whose leaves it accepts). */
  readonly trustBundleFile: string;
  readonly refreshMs: number;
}

/** One validated load of the identity files; immutable, swapped whole on rotation. */
export interface IdentityMaterial {
  /** The SPIFFE ID of the leaf. */
  readonly spiffeId: string;
  /** Leaf (+ intermediates), as in the file. */
  readonly certPem: string;
  readonly keyPem: string;
  /** The trust bundle: one or more CA certificates. */
  readonly bundlePem: string;
  /** Leaf expiry, epoch ms. */
  readonly notAfterMs: number;
  /** Earliest CA expiry in the bundle, epoch ms. */
  readonly bundleNotAfterMs: number;
  /** `tls.createSecureContext({ cert, key, ca })`, built once per load, for outbound connections. */
  readonly clientContext: tls.SecureContext;
  /** sha256 of cert + key + bundle text, to tell rotations apart. */
  readonly fingerprint: string;
}

/** Identity files that cannot be used; the message names the file and the problem. */
export class IdentityLoadError extends Error {
  override readonly name = 'IdentityLoadError';
  constructor(
    /** The file at fault. */
    readonly file: string,
    problem: string,
    options?: ErrorOptions,
  ) {
    super(`${file}: ${problem}`, options);
  }
}

/** Dependencies of `WorkloadIdentity`. */
export interface WorkloadIdentityDeps {
  readonly clock: Clock;
  readonly logger: Logger;
}

/** Reads racing a rotation in progress are retried this many times before a failure counts. */
const MAX_READ_ATTEMPTS = 3;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Every certificate in a PEM text, in order; throws IdentityLoadError when there is none or one does not parse. */
function parseCertificates(file: string, pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new IdentityLoadError(file, `no PEM certificate found (expected ${what})`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new IdentityLoadError(file, `certificate ${i + 1} does not parse: ${message(err)}`, { cause: err });
    }
  });
}

/** Epoch ms of an X509Certificate date ("Jan  2 00:00:00 2030 GMT"). */
function dateMs(file: string, text: string): number {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new IdentityLoadError(file, `unreadable certificate date ${JSON.stringify(text)}`);
  return ms;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Throws unless `cert` is valid at `nowMs`. */
function checkValidity(file: string, cert: X509Certificate, label: string, nowMs: number): number {
  const from = dateMs(file, cert.validFrom);
  const to = dateMs(file, cert.validTo);
  // No "now" in the text: the poller reports a failure only when its message changes.
  if (nowMs > to) throw new IdentityLoadError(file, `${label} expired at ${iso(to)}`);
  if (nowMs < from) throw new IdentityLoadError(file, `${label} is not valid before ${iso(from)} (is this host's clock behind?)`);
  return to;
}

/** Whether `issuer` issued and signed `cert`. */
function signedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** Says why the leaf has no usable SPIFFE ID. */
function explainMissingSpiffeId(san: string | undefined): string {
  const uris = (san ? subjectAltNameEntries(san) ?? [] : []).filter((e) => e.type === 'URI');
  if (uris.length === 0) return 'the certificate has no URI subject alternative name (an X.509-SVID carries its SPIFFE ID there)';
  if (uris.length > 1) return `the certificate has ${uris.length} URI subject alternative names; an X.509-SVID has exactly one`;
  return `the URI subject alternative name ${JSON.stringify(uris[0]!.value)} is not a SPIFFE ID: ${spiffeIdProblem(uris[0]!.value)}`;
}

/** The text of the three files. */
export interface IdentityTexts {
  readonly certPem: string;
  readonly keyPem: string;
  readonly bundlePem: string;
}

function fingerprintOf(t: IdentityTexts): string {
  return createHash('sha256').update(t.certPem).update('\0').update(t.keyPem).update('\0').update(t.bundlePem).digest('hex');
}

/** Validates the three texts into material; throws IdentityLoadError naming the file at fault. */
export function validateIdentity(files: IdentityFiles, texts: IdentityTexts, nowMs: number): IdentityMaterial {
  const { certFile, keyFile, trustBundleFile } = files;
  const chain = parseCertificates(certFile, texts.certPem, 'the workload certificate');
  const leaf = chain[0]!;
  let key: KeyObject;
  try {
    key = createPrivateKey(texts.keyPem);
  } catch (err) {
    throw new IdentityLoadError(keyFile, `not a usable PEM private key: ${message(err)}`, { cause: err });
  }
  const bundle = parseCertificates(trustBundleFile, texts.bundlePem, 'one or more CA certificates');

  // Also what a rotation caught between writing the certificate and the key looks like.
  if (!leaf.checkPrivateKey(key)) throw new IdentityLoadError(keyFile, `the private key does not match the certificate in ${certFile}`);
  if (leaf.ca) throw new IdentityLoadError(certFile, 'the first certificate is a CA; it must be the workload (leaf) certificate');
  const spiffeId = spiffeIdOfSubjectAltName(leaf.subjectAltName);
  if (spiffeId === null) throw new IdentityLoadError(certFile, explainMissingSpiffeId(leaf.subjectAltName));
  const trustDomain = parseSpiffeId(spiffeId)!.trustDomain;
  if (trustDomain !== files.trustDomain) {
    throw new IdentityLoadError(certFile, `SPIFFE ID ${spiffeId} is not in trust domain ${files.trustDomain}`);
  }
  const notAfterMs = checkValidity(certFile, leaf, `the certificate for ${spiffeId}`, nowMs);

  // Walk leaf → intermediates (from the cert file) → a CA of the bundle, each link signed by the next,
  // so we never serve a certificate our peers (who trust the same bundle) would refuse.
  const intermediates = chain.slice(1);
  let current = leaf;
  for (let depth = 0; ; depth++) {
    const anchor = bundle.find((ca) => signedBy(current, ca));
    if (anchor !== undefined) {
      checkValidity(trustBundleFile, anchor, `the CA ${JSON.stringify(anchor.subject.replace(/\n/g, ', '))}`, nowMs);
      break;
    }
    const next = depth < intermediates.length ? intermediates.find((c) => c !== current && signedBy(current, c)) : undefined;
    if (next === undefined) {
      const which = current === leaf ? `the certificate for ${spiffeId}` : 'an intermediate in the certificate file';
      throw new IdentityLoadError(
        certFile,
        `${which} (issuer ${JSON.stringify(current.issuer.replace(/\n/g, ', '))}) is not issued and signed by a CA in ${trustBundleFile}`,
      );
    }
    checkValidity(certFile, next, `the intermediate ${JSON.stringify(next.subject.replace(/\n/g, ', '))}`, nowMs);
    current = next;
  }

  let clientContext: tls.SecureContext;
  try {
    clientContext = tls.createSecureContext({ cert: texts.certPem, key: texts.keyPem, ca: texts.bundlePem });
  } catch (err) {
    throw new IdentityLoadError(certFile, `TLS refuses this certificate and key: ${message(err)}`, { cause: err });
  }
  return Object.freeze({
    spiffeId,
    certPem: texts.certPem,
    keyPem: texts.keyPem,
    bundlePem: texts.bundlePem,
    notAfterMs,
    bundleNotAfterMs: Math.min(...bundle.map((ca) => dateMs(trustBundleFile, ca.validTo))),
    clientContext,
    fingerprint: fingerprintOf(texts),
  });
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new IdentityLoadError(file, `cannot read the ${what}: ${message(err)}`, { cause: err });
  }
}

/** What stat says of the three files (through symlinks); any change means "read again". */
async function statSignature(files: IdentityFiles): Promise<string> {
  const parts = await Promise.all(
    [files.certFile, files.keyFile, files.trustBundleFile].map(async (f) => {
      try {
        const s = await stat(f, { bigint: true });
        return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`;
      } catch (err) {
        return `missing:${(err as NodeJS.ErrnoException).code ?? '?'}`;
      }
    }),
  );
  return parts.join('|');
}

/** Reads and validates the files once, re-reading when they changed under the read. */
async function readIdentity(files: IdentityFiles, clock: Clock): Promise<{ material: IdentityMaterial; signature: string }> {
  for (let attempt = 1; ; attempt++) {
    const before = await statSignature(files);
    try {
      const [certPem, keyPem, bundlePem] = await Promise.all([
        readText(files.certFile, 'certificate file'),
        readText(files.keyFile, 'private key file'),
        readText(files.trustBundleFile, 'trust bundle file'),
      ]);
      return { material: validateIdentity(files, { certPem, keyPem, bundlePem }, clock.wallNow()), signature: before };
    } catch (err) {
      // A failure while the files were changing is a rotation in progress, not a verdict.
      if (attempt >= MAX_READ_ATTEMPTS || (await statSignature(files)) === before) throw err;
    }
  }
}

/** This workload's identity, rotated from its files. */
export class WorkloadIdentity {
  private current: IdentityMaterial;
  /** Stat signature of the files at the last successful read: the poller re-reads when it differs. */
  private signature: string;
  /** Set while the latest attempt failed: the poller then re-reads even if stat shows no change. */
  private lastFailure: string | null = null;
  private readonly rotateListeners = new Set<(m: IdentityMaterial) => void>();
  private readonly failListeners = new Set<(err: IdentityLoadError) => void>();
  /** Refreshes run one at a time, in call order. */
  private queue: Promise<unknown> = Promise.resolve();
  private timer: Timer | null = null;
  private closed = false;

  private constructor(
    private readonly files: IdentityFiles,
    private readonly deps: WorkloadIdentityDeps,
    loaded: { material: IdentityMaterial; signature: string },
  ) {
    this.current = loaded.material;
    this.signature = loaded.signature;
  }

  /** Loads and validates the files, then starts polling them; throws IdentityLoadError. */
  static async load(files: IdentityFiles, deps: WorkloadIdentityDeps): Promise<WorkloadIdentity> {
    if (!(files.refreshMs > 0)) throw new RangeError(`refreshMs must be positive, got ${files.refreshMs}`);
    let loaded: { material: IdentityMaterial; signature: string };
    try {
      loaded = await readIdentity(files, deps.clock);
    } catch (err) {
      if (err instanceof IdentityLoadError) throw err;
      throw new IdentityLoadError(files.certFile, message(err), { cause: err });
    }
    const identity = new WorkloadIdentity(files, deps, loaded);
    deps.logger.log('info', 'workload identity loaded', identity.describe());
    identity.arm();
    return identity;
  }

  /** The material serving now. */
  get material(): IdentityMaterial {
    return this.current;
  }

  /** `listener` runs after each successful rotation; returns an unsubscribe. */
  onRotate(listener: (m: IdentityMaterial) => void): () => void {
    this.rotateListeners.add(listener);
    return () => void this.rotateListeners.delete(listener);
  }

  /** `listener` runs after a failed re-read (the old material keeps serving); returns an unsubscribe. */
  onRotateFailed(listener: (err: IdentityLoadError) => void): () => void {
    this.failListeners.add(listener);
    return () => void this.failListeners.delete(listener);
  }

  /**
   * Re-reads the files now; resolves true if the material changed. Never rejects: a failure keeps
   * the old material and goes to onRotateFailed and the log, once per distinct failure (a poller
   * retrying the same half-written rotation does not repeat itself).
   */
  refresh(): Promise<boolean> {
    const run = this.queue.then(() => this.reload());
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stops polling and drops listeners; the current material stays readable. */
  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = null;
    this.rotateListeners.clear();
    this.failListeners.clear();
  }

  private async reload(): Promise<boolean> {
    if (this.closed) return false;
    let loaded: { material: IdentityMaterial; signature: string };
    try {
      loaded = await readIdentity(this.files, this.deps.clock);
    } catch (caught) {
      const err = caught instanceof IdentityLoadError ? caught : new IdentityLoadError(this.files.certFile, message(caught), { cause: caught });
      if (this.closed) return false;
      const repeated = this.lastFailure === err.message;
      this.lastFailure = err.message;
      if (!repeated) {
        this.deps.logger.log('warn', 'workload identity rotation failed; the current certificate keeps serving', {
          error: err.message,
          spiffeId: this.current.spiffeId,
          notAfter: iso(this.current.notAfterMs),
        });
        for (const listener of [...this.failListeners]) this.notify(() => listener(err));
      }
      return false;
    }
    if (this.closed) return false;
    this.lastFailure = null;
    this.signature = loaded.signature;
    // Same bytes (a touch, or a symlink swap to identical content) is not a rotation.
    if (loaded.material.fingerprint === this.current.fingerprint) return false;
    const previous = this.current;
    this.current = loaded.material;
    this.deps.logger.log('info', 'workload identity rotated', { ...this.describe(), previousNotAfter: iso(previous.notAfterMs) });
    const material = this.current;
    for (const listener of [...this.rotateListeners]) this.notify(() => listener(material));
    return true;
  }

  /** Runs a listener; one that throws must not stop the others nor the poller. */
  private notify(call: () => void): void {
    try {
      call();
    } catch (err) {
      this.deps.logger.log('error', 'a workload identity listener failed', { error: message(err) });
    }
  }

  /** One poll: stat, and re-read when something changed or the last attempt failed. */
  private async poll(): Promise<void> {
    const signature = await statSignature(this.files);
    if (signature !== this.signature || this.lastFailure !== null) await this.refresh();
  }

  private arm(): void {
    if (this.closed) return;
    // Re-armed only once a poll has finished, so slow disks never stack polls up.
    this.timer = this.deps.clock.setTimer(() => {
      this.timer = null;
      void this.poll()
        .catch((err: unknown) => this.deps.logger.log('error', 'workload identity poll failed', { error: message(err) }))
        .finally(() => this.arm());
    }, this.files.refreshMs);
  }

  private describe(): Record<string, unknown> {
    const m = this.current;
    return {
      spiffeId: m.spiffeId,
      notAfter: iso(m.notAfterMs),
      bundleNotAfter: iso(m.bundleNotAfterMs),
      fingerprint: m.fingerprint.slice(0, 16),
      certFile: this.files.certFile,
    };
  }
}

import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { ManualClock } from '../../lib/core/clock.js';
import type { Logger } from '../../lib/observe/logger.js';
import { JwtVerifier, type JwtPolicy, type JwtResult } from '../../lib/auth/jwt.js';

const ISSUER = 'https://issuer.example';
/** ManualClock's wall clock at t=0, in seconds. */
const NOW_S = 1_700_000_000;
const REFRESH_MS = 60_000;

interface Signer {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

async function makeSigner(kid: string, alg: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

const [keyA, keyA2, keyB, keyC, keyR, keyE] = await Promise.all([
  makeSigner('a', 'ES256'),
  makeSigner('a', 'ES256'), // another key under the same kid: a forger's
  makeSigner('b', 'ES256'),
  makeSigner('c', 'ES256'),
  makeSigner('r', 'RS256'),
  makeSigner('e', 'EdDSA'),
]) as [Signer, Signer, Signer, Signer, Signer, Signer];

const jwks = (...signers: Signer[]) => JSON.stringify({ keys: signers.map((s) => s.jwk) });

/** A token from `signer` with good claims, overridden by `claims` (undefined drops a claim). */
function token(signer: Signer, claims: Record<string, unknown> = {}, header: { kid?: string | null } = {}): Promise<string> {
  const kid = header.kid === undefined ? signer.kid : header.kid;
  return new SignJWT({ iss: ISSUER, aud: 'orders', sub: 'alice', iat: NOW_S, exp: NOW_S + 3600, ...claims })
    .setProtectedHeader(kid === null ? { alg: signer.alg } : { alg: signer.alg, kid })
    .sign(signer.privateKey);
}

const bearer = async (signer: Signer, claims?: Record<string, unknown>, header?: { kid?: string | null }) =>
  `Bearer ${await token(signer, claims, header)}`;

function policy(over: Partial<JwtPolicy>): JwtPolicy {
  return {
    issuer: ISSUER,
    audiences: ['orders', 'billing'],
    jwksFile: null,
    jwksUrl: null,
    clockSkewMs: 30_000,
    requiredClaims: ['sub'],
    jwksRefreshMs: REFRESH_MS,
    algorithms: ['RS256', 'ES256', 'EdDSA'],
    ...over,
  };
}

type LogLine = { level: string; msg: string; fields?: Record<string, unknown> };

function recordingLogger(): { logger: Logger; logs: LogLine[] } {
  const logs: LogLine[] = [];
  return { logs, logger: { log: (level, msg, fields) => logs.push({ level, msg, fields }) } };
}

/** The reason of a result, or 'ok', for compact assertions. */
const outcome = (r: JwtResult) => (r.ok ? 'ok' : r.reason);

async function fileSetup(t: Test, content: string | null, over: Partial<JwtPolicy> = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-jwt-'));
  const file = join(dir, 'jwks.json');
  if (content !== null) await writeFile(file, content);
  const clock = new ManualClock();
  const { logger, logs } = recordingLogger();
  const verifier = new JwtVerifier(policy({ jwksFile: file, ...over }), { clock, logger });
  t.teardown(async () => {
    verifier.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { file, clock, logs, verifier };
}

/** A JWKS endpoint on 127.0.0.1 that counts its requests; `handler` may replace the default answer. */
async function jwksServer(t: Test, body: string) {
  const state = {
    body,
    requests: 0,
    handler: null as ((req: IncomingMessage, res: ServerResponse) => void) | null,
  };
  const server = createServer((req, res) => {
    state.requests++;
    if (state.handler) return state.handler(req, res);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(state.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const stop = () => {
    server.closeAllConnections();
    server.close();
  };
  t.teardown(stop);
  return { state, stop, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json` };
}

function urlSetup(t: Test, url: string, fetchTimeoutMs?: number) {
  const clock = new ManualClock();
  const { logger, logs } = recordingLogger();
  const verifier = new JwtVerifier(policy({ jwksUrl: url }), { clock, logger, fetchTimeoutMs });
  t.teardown(() => verifier.close());
  return { clock, logs, verifier };
}

async function until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(5);
  }
}

t.test('a valid token yields its claims, for each allowed algorithm', async (t) => {
  const { verifier } = await fileSetup(t, jwks(keyA, keyR, keyE));
  for (const signer of [keyA, keyR, keyE]) {
    const result = await verifier.verify(await bearer(signer, { scope: 'read' }));
    t.ok(result.ok, `${signer.alg} verifies`);
    if (result.ok) {
      t.match(result.claims, { sub: 'alice', iss: ISSUER, scope: 'read' });
      t.ok(Object.isFrozen(result.claims), 'claims are frozen');
    }
  }
  t.equal(outcome(await verifier.verify(`bearer ${await token(keyA)}`)), 'ok', 'the scheme is case-insensitive');
  t.equal(outcome(await verifier.verify(await bearer(keyA, { aud: ['other', 'billing'] }))), 'ok', 'one listed audience is enough');
});

t.test('claims are checked against the policy, with time from the injected clock', async (t) => {
  const { verifier, clock } = await fileSetup(t, jwks(keyA));
  const cases: [string, Record<string, unknown>, string, RegExp?][] = [
    ['expired beyond the skew', { exp: NOW_S - 60 }, 'expired', /^token expired$/],
    ['expired within the skew', { exp: NOW_S - 10 }, 'ok'],
    ['not yet valid beyond the skew', { nbf: NOW_S + 60 }, 'not_yet_valid', /^token not yet valid$/],
    ['not yet valid within the skew', { nbf: NOW_S + 10 }, 'ok'],
    ['issued beyond the skew in the future', { iat: NOW_S + 60 }, 'not_yet_valid'],
    ['issued within the skew in the future', { iat: NOW_S + 10 }, 'ok'],
    ['wrong audience', { aud: 'inventory' }, 'wrong_audience', /^unexpected audience$/],
    ['no audience', { aud: undefined }, 'missing_claim', /^missing required claim "aud"$/],
    ['wrong issuer', { iss: 'https://evil.example' }, 'wrong_issuer', /^unexpected issuer$/],
    ['required claim absent', { sub: undefined }, 'missing_claim', /^missing required claim "sub"$/],
    ['exp not a number', { exp: 'tomorrow' }, 'malformed'],
  ];
  for (const [name, claims, want, message] of cases) {
    const result = await verifier.verify(await bearer(keyA, claims));
    t.equal(outcome(result), want, name);
    if (!result.ok && message) t.match(result.message, message, `${name}: message`);
  }
  const good = await bearer(keyA);
  clock.advance(3600_000 + 30_000 + 1000);
  t.equal(outcome(await verifier.verify(good)), 'expired', 'a good token expires as the clock moves');
});

t.test('audiences may be left unchecked', async (t) => {
  const { verifier } = await fileSetup(t, jwks(keyA), { audiences: [], requiredClaims: [] });
  t.equal(outcome(await verifier.verify(await bearer(keyA, { aud: undefined, sub: undefined }))), 'ok');
  t.equal(outcome(await verifier.verify(await bearer(keyA, { aud: 'anything' }))), 'ok');
});

t.test('signatures and key ids', async (t) => {
  const { verifier } = await fileSetup(t, jwks(keyA, keyB));
  const forged = await verifier.verify(await bearer(keyA2));
  t.same(forged, { ok: false, reason: 'bad_signature', message: 'signature verification failed' }, 'another key under a known kid');
  const unknown = await verifier.verify(await bearer(keyC));
  t.same(unknown, { ok: false, reason: 'unknown_kid', message: 'no signing key matches the token' }, 'a kid not in the set');
  t.equal(outcome(await verifier.verify(await bearer(keyB, {}, { kid: null }))), 'ok', 'no kid: the matching key among several is found');
  t.equal(outcome(await verifier.verify(await bearer(keyC, {}, { kid: null }))), 'bad_signature', 'no kid and no key verifies');
});

t.test('the Authorization header: missing, other schemes, garbage', async (t) => {
  const { verifier } = await fileSetup(t, jwks(keyA));
  const good = await token(keyA);
  const [h, p, s] = good.split('.') as [string, string, string];
  const cases: [string, string | undefined, string][] = [
    ['no header', undefined, 'missing'],
    ['empty header', '', 'missing'],
    ['Basic credentials', 'Basic dXNlcjpwYXNz', 'missing'],
    ['Bearer without a token', 'Bearer', 'malformed'],
    ['Bearer and blanks', 'Bearer    ', 'malformed'],
    ['garbage token', 'Bearer garbage', 'malformed'],
    ['two parts', `Bearer ${h}.${p}`, 'malformed'],
    ['not base64url JSON', 'Bearer a.b.c', 'malformed'],
    ['five parts (JWE)', `Bearer ${h}.a.b.c.d`, 'malformed'],
    ['characters outside base64url', `Bearer ${h}.${p}.${s}!`, 'malformed'],
    ['too long', `Bearer ${h}.${'A'.repeat(9000)}.${s}`, 'malformed'],
    ['tampered payload', `Bearer ${h}.${Buffer.from('{"sub":"root"}').toString('base64url')}.${s}`, 'bad_signature'],
  ];
  for (const [name, header, want] of cases) t.equal(outcome(await verifier.verify(header)), want, name);
  const missing = await verifier.verify(undefined);
  t.same(missing, { ok: false, reason: 'missing', message: 'no bearer token' });
});

t.test('alg none, HMAC and algorithms outside the policy are refused', async (t) => {
  const { verifier } = await fileSetup(t, jwks(keyA, keyR), { algorithms: ['ES256'] });
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const claims = { iss: ISSUER, aud: 'orders', sub: 'alice', exp: NOW_S + 3600 };
  const none = await verifier.verify(`Bearer ${enc({ alg: 'none', kid: 'a' })}.${enc(claims)}.`);
  t.same(none, { ok: false, reason: 'malformed', message: 'token algorithm not allowed' }, 'alg none');
  const hmac = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: 'a' }).sign(new Uint8Array(32));
  t.equal(outcome(await verifier.verify(`Bearer ${hmac}`)), 'malformed', 'HS256');
  t.equal(outcome(await verifier.verify(await bearer(keyR))), 'malformed', 'RS256 when only ES256 is allowed');
  t.throws(() => new JwtVerifier(policy({ jwksFile: '/x', algorithms: ['none'] }), { clock: new ManualClock(), logger: recordingLogger().logger }), TypeError, 'a policy allowing none is refused');
  t.throws(() => new JwtVerifier(policy({ jwksFile: '/x', jwksUrl: 'http://127.0.0.1/' }), { clock: new ManualClock(), logger: recordingLogger().logger }), TypeError, 'two key sources are refused');
});

t.test('file: a key added under a new kid verifies at once; a removed key goes at the next re-check', async (t) => {
  const { file, clock, verifier } = await fileSetup(t, jwks(keyA));
  const oldToken = await bearer(keyA);
  t.equal(outcome(await verifier.verify(oldToken)), 'ok');
  await writeFile(file, jwks(keyA, keyB));
  t.equal(outcome(await verifier.verify(await bearer(keyB))), 'ok', 'the unknown kid made the file be re-read, without waiting for the refresh interval');
  await writeFile(file, jwks(keyA, keyB, keyC));
  t.equal(outcome(await verifier.verify(await bearer(keyC))), 'unknown_kid', 're-reads for unknown kids are rate-limited');
  clock.advance(1000);
  t.equal(outcome(await verifier.verify(await bearer(keyC))), 'ok', 'after the cooldown the file is re-read again');
  await writeFile(file, jwks(keyB, keyC));
  t.equal(outcome(await verifier.verify(oldToken)), 'ok', 'until the re-check, the cached set still holds the old key');
  clock.advance(REFRESH_MS);
  t.equal(outcome(await verifier.verify(oldToken)), 'unknown_kid', 'the removed key no longer verifies');
  t.equal(outcome(await verifier.verify(await bearer(keyB))), 'ok');
});

t.test('file: a bad or missing file keeps the last good keys; with none, jwks_unavailable', async (t) => {
  const { file, clock, logs, verifier } = await fileSetup(t, '{"keys": [');
  const good = await bearer(keyA);
  t.same(await verifier.verify(good), { ok: false, reason: 'jwks_unavailable', message: 'signing keys unavailable' });
  t.match(logs, [{ level: 'warn', msg: 'jwt: no signing keys', fields: { error: /not valid JSON/ } }]);
  await writeFile(file, jwks(keyA));
  clock.advance(1000);
  t.equal(outcome(await verifier.verify(good)), 'ok', 'a fixed file is picked up');
  await writeFile(file, JSON.stringify({ keys: [{ ...keyB.jwk, d: 'AAAA' }] }));
  clock.advance(REFRESH_MS);
  t.equal(outcome(await verifier.verify(good)), 'ok', 'a set holding a private key is refused; the last good keys stay');
  t.match(logs.at(-1), { level: 'warn', msg: 'jwt: keeping the last good signing keys', fields: { error: /private/ } });
  await rm(file);
  clock.advance(REFRESH_MS);
  t.equal(outcome(await verifier.verify(good)), 'ok', 'a deleted file keeps the keys');
  t.match(logs.at(-1), { level: 'warn', fields: { error: /ENOENT/ } });
});

t.test('file: absent at start gives jwks_unavailable', async (t) => {
  const { verifier } = await fileSetup(t, null);
  t.equal(outcome(await verifier.verify(await bearer(keyA))), 'jwks_unavailable');
  t.equal(outcome(await verifier.verify(undefined)), 'missing', 'no token is still missing, whatever the keys');
});

t.test('URL: one fetch serves many concurrent verifies; stale keys are refreshed in the background', async (t) => {
  const server = await jwksServer(t, jwks(keyA));
  const { clock, verifier } = urlSetup(t, server.url);
  const header = await bearer(keyA);
  const results = await Promise.all(Array.from({ length: 20 }, () => verifier.verify(header)));
  t.same(new Set(results.map(outcome)), new Set(['ok']));
  t.equal(server.state.requests, 1, 'one fetch for twenty verifies');
  clock.advance(REFRESH_MS - 1);
  t.equal(outcome(await verifier.verify(header)), 'ok');
  t.equal(server.state.requests, 1, 'fresh keys are not fetched again');
  clock.advance(1);
  const stale = await Promise.all(Array.from({ length: 5 }, () => verifier.verify(header)));
  t.same(new Set(stale.map(outcome)), new Set(['ok']), 'cached keys serve while the refresh runs');
  await until('refresh fetch', () => server.state.requests === 2);
  await sleep(20);
  t.equal(server.state.requests, 2, 'one refresh for all the stale verifies');
});

t.test('URL: a rotation on the server is picked up on an unknown kid, rate-limited', async (t) => {
  const server = await jwksServer(t, jwks(keyA));
  const { clock, verifier } = urlSetup(t, server.url);
  t.equal(outcome(await verifier.verify(await bearer(keyA))), 'ok');
  server.state.body = jwks(keyA, keyB);
  const newKid = await bearer(keyB);
  const rotated = await Promise.all([verifier.verify(newKid), verifier.verify(newKid), verifier.verify(newKid)]);
  t.same(rotated.map(outcome), ['ok', 'ok', 'ok'], 'the new key verifies');
  t.equal(server.state.requests, 2, 'concurrent unknown kids share one re-fetch');
  const stranger = await bearer(keyC);
  t.equal(outcome(await verifier.verify(stranger)), 'unknown_kid');
  t.equal(server.state.requests, 2, 'no re-fetch within the cooldown');
  clock.advance(30_000);
  t.equal(outcome(await verifier.verify(stranger)), 'unknown_kid');
  t.equal(server.state.requests, 3, 'after the cooldown an unknown kid fetches again');
});

t.test('URL: a server gone after the first fetch leaves the cached keys working', async (t) => {
  const server = await jwksServer(t, jwks(keyA));
  const { clock, logs, verifier } = urlSetup(t, server.url);
  const header = await bearer(keyA);
  t.equal(outcome(await verifier.verify(header)), 'ok');
  server.stop();
  clock.advance(REFRESH_MS);
  t.equal(outcome(await verifier.verify(header)), 'ok', 'stale keys serve while the refresh fails');
  await until('refresh failure logged', () => logs.some((l) => l.msg === 'jwt: keeping the last good signing keys'));
  t.equal(outcome(await verifier.verify(header)), 'ok', 'and after it failed');
  t.equal(outcome(await verifier.verify(await bearer(keyB))), 'unknown_kid', 'an unknown kid is still unknown_kid, not unavailable');
});

t.test('URL: no keys ever fetched gives jwks_unavailable, bounded by the fetch timeout', async (t) => {
  const closed = await jwksServer(t, jwks(keyA));
  closed.stop();
  const refused = urlSetup(t, closed.url);
  const started = performance.now();
  t.equal(outcome(await refused.verifier.verify(await bearer(keyA))), 'jwks_unavailable', 'connection refused');
  t.ok(performance.now() - started < 1000, 'at once');

  const silent = await jwksServer(t, jwks(keyA));
  silent.state.handler = () => {}; // accepts, never answers
  const { clock, logs, verifier } = urlSetup(t, silent.url, 500);
  let settled = false;
  const pending = verifier.verify(await bearer(keyA)).finally(() => { settled = true; });
  await until('request reached the server', () => silent.state.requests === 1);
  await sleep(20);
  t.equal(settled, false, 'the first verify waits for the first fetch');
  clock.advance(500);
  t.equal(outcome(await pending), 'jwks_unavailable', 'until the timeout');
  t.match(logs, [{ level: 'warn', msg: 'jwt: no signing keys', fields: { error: /timed out after 500ms/ } }]);
  t.equal(clock.pendingTimers(), 0, 'no timer left behind');
  t.equal(outcome(await verifier.verify(await bearer(keyA))), 'jwks_unavailable', 'within the retry delay: fails at once');
  t.equal(silent.state.requests, 1, 'without another fetch');
});

t.test('URL: oversized and non-200 answers are not keys', async (t) => {
  const server = await jwksServer(t, jwks(keyA));
  server.state.handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }); // chunked: no content-length to trust
    for (let i = 0; i < 40; i++) res.write(' '.repeat(8192));
    res.end(jwks(keyA));
  };
  const big = urlSetup(t, server.url);
  t.equal(outcome(await big.verifier.verify(await bearer(keyA))), 'jwks_unavailable');
  t.match(big.logs, [{ fields: { error: /larger than 262144 bytes/ } }]);

  const failing = await jwksServer(t, jwks(keyA));
  failing.state.handler = (_req, res) => { res.writeHead(302, { location: 'http://127.0.0.1:1/' }).end(); };
  const redirected = urlSetup(t, failing.url);
  t.equal(outcome(await redirected.verifier.verify(await bearer(keyA))), 'jwks_unavailable', 'redirects are not followed');
  t.match(redirected.logs, [{ fields: { error: /answered 302/ } }]);
});

t.test('close() aborts a fetch under way and clears its timer', async (t) => {
  const server = await jwksServer(t, jwks(keyA));
  server.state.handler = () => {};
  const { clock, verifier } = urlSetup(t, server.url);
  const pending = verifier.verify(await bearer(keyA));
  await until('request reached the server', () => server.state.requests === 1);
  verifier.close();
  t.equal(clock.pendingTimers(), 0);
  t.equal(outcome(await pending), 'jwks_unavailable');
});

t.test('challenge(): RFC 6750 WWW-Authenticate values', async (t) => {
  t.equal(JwtVerifier.challenge({ ok: false, reason: 'missing', message: 'no bearer token' }, 'pilotfish'), 'Bearer realm="pilotfish"');
  t.equal(
    JwtVerifier.challenge({ ok: false, reason: 'expired', message: 'token expired' }, 'pilotfish'),
    'Bearer realm="pilotfish", error="invalid_token", error_description="token expired"',
  );
  t.equal(
    JwtVerifier.challenge({ ok: false, reason: 'missing_claim', message: 'missing required claim "sub"' }, 'orders "api"\\\n'),
    'Bearer realm="orders \\"api\\"\\\\", error="invalid_token", error_description="missing required claim sub"',
    'the realm is a quoted-string; the description drops what RFC 6750 does not allow',
  );
});

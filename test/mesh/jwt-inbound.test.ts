/**
 * JWT authentication on the inbound listener, through a real sidecar: valid, expired, wrong
 * audience, unknown kid, a JWKS rotated on disk; claims forwarded to the app (a caller's own
 * copies removed), used by authorization rules and as rate-limit keys.
 */
import { writeFile } from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import t from 'tap';
import { request } from 'undici';
import { metric } from '../support/hostile.js';
import { spawnSidecar } from '../support/mesh.js';
import { startUpstream } from '../support/upstream.js';

const ISSUER = 'https://issuer.example';
const dir = await mkdtemp(join(tmpdir(), 'pilotfish-jwt-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const jwksFile = join(dir, 'jwks.json');

async function key(kid: string): Promise<{ kid: string; privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}
const writeJwks = (...keys: { jwk: JWK }[]): Promise<void> => writeFile(jwksFile, JSON.stringify({ keys: keys.map((k) => k.jwk) }));

function token(k: { kid: string; privateKey: CryptoKey }, claims: Record<string, unknown> = {}, opts: { aud?: string; exp?: number } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: 'alice', role: 'reader', ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: k.kid })
    .setIssuer(ISSUER)
    .setAudience(opts.aud ?? 'payments')
    .setIssuedAt(now - 10)
    .setExpirationTime(opts.exp ?? now + 300)
    .sign(k.privateKey);
}

const k1 = await key('k1');
await writeJwks(k1);
const app = await startUpstream();
t.teardown(() => app.close());
const jwt = `jwt: { issuer: ${ISSUER}, audiences: [payments], jwksFile: ${jwksFile}, jwksRefresh: 200ms, clockSkew: 5s, forwardClaims: { sub: x-user } }`;
const sidecar = await spawnSidecar(t, app.address, `inbound:
  routes:
    - name: admin
      match: { pathPrefix: /admin/ }
      ${jwt}
      authorize: { allow: [{ claims: { role: admin } }] }
    - name: api
      match: { pathPrefix: / }
      ${jwt}
      rateLimit: { rate: 2/m, burst: 2, key: claim:sub }
upstreams: {}
routes: []
`, '    tls: none\n');
const base = `http://127.0.0.1:${sidecar.inboundPort}`;
const call = async (path: string, bearer: string | null, headers: Record<string, string> = {}) => {
  const res = await request(`${base}${path}`, { headers: { ...headers, ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) } });
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body };
};

t.test('a valid token reaches the app with its claims as headers, and without the token', async (t) => {
  const res = await call('/orders', await token(k1, { sub: 'bob' }), { 'x-user': 'mallory' });
  t.equal(res.status, 200);
  const seen = JSON.parse(res.body) as { headers: Record<string, string> };
  t.equal(seen.headers['x-user'], 'bob', 'the verified sub, not the caller\'s own x-user');
  t.equal(seen.headers.authorization, undefined, 'the verified token is not passed on');
});

t.test('refusals are 401 with WWW-Authenticate, each counted by reason', async (t) => {
  const missing = await call('/orders', null);
  t.equal(missing.status, 401);
  t.equal(missing.headers['www-authenticate'], `Bearer realm="${ISSUER}"`, 'no token: a bare challenge');
  t.equal(missing.headers['pilotfish-error'], 'unauthenticated');
  const expired = await call('/orders', await token(k1, {}, { exp: Math.floor(Date.now() / 1000) - 60 }));
  t.equal(expired.status, 401);
  t.match(expired.headers['www-authenticate'], /^Bearer realm=".*", error="invalid_token", error_description=".*expired/);
  const audience = await call('/orders', await token(k1, {}, { aud: 'ledger' }));
  t.equal(audience.status, 401, 'a token for another audience');
  const stranger = await key('k9');
  const unknownKid = await call('/orders', await token(stranger));
  t.equal(unknownKid.status, 401, 'a key id the JWKS does not have');
  for (const reason of ['missing', 'expired', 'wrong_audience', 'unknown_kid']) {
    t.equal(await metric(sidecar, 'pilotfish_authentication_failures_total', { route: 'api', reason }), 1, `reason="${reason}"`);
  }
  t.equal(app.seen.filter((r) => r.headers.authorization !== undefined).length, 0, 'nothing unauthenticated reached the app');
});

t.test('a rotated JWKS: a new key works at once, a removed one stops working', async (t) => {
  const k2 = await key('k2');
  await writeJwks(k1, k2);
  // An unknown kid re-reads the file at most once a second (the k9 attempt above just did).
  await new Promise((resolve) => setTimeout(resolve, 1100));
  const fresh = await call('/orders', await token(k2, { sub: 'carol' }));
  t.equal(fresh.status, 200, 'signed with the new key: the unknown kid re-reads the file');
  await writeJwks(k2);
  await new Promise((resolve) => setTimeout(resolve, 400)); // past jwksRefresh
  const old = await call('/orders', await token(k1, { sub: 'dave' }));
  t.equal(old.status, 401, 'the removed key is refused once the file is re-read');
  const still = await call('/orders', await token(k2, { sub: 'erin' }));
  t.equal(still.status, 200);
});

t.test('claims feed authorization rules and rate-limit keys', async (t) => {
  const k3 = await key('k3');
  await writeJwks(k3);
  await new Promise((resolve) => setTimeout(resolve, 400)); // past jwksRefresh
  const reader = await call('/admin/users', await token(k3, { role: 'reader' }));
  t.equal(reader.status, 403, 'role reader may not reach /admin/');
  const admin = await call('/admin/users', await token(k3, { role: 'admin' }));
  t.equal(admin.status, 200, 'role admin may');
  const frank = await token(k3, { sub: 'frank' });
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await call('/orders', frank)).status);
  t.same(statuses, [200, 200, 429], 'frank has a bucket of 2');
  t.equal((await call('/orders', await token(k3, { sub: 'grace' }))).status, 200, 'grace has her own');
});

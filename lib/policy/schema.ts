/**
 * The policy YAML as users write it, in zod: the contract's names and shapes, strict
 * objects (a misspelt field is an error that names it), defaults as they would be
 * written. Units stay as text here; `compile.ts` turns them into numbers.
 */
import { z } from 'zod';
import { CidrError, EXPECTED_CIDR, LOOPBACK_CIDRS, parseCidr } from '../http/cidr.js';
import { GRPC_RETRY_CONDITIONS, type GrpcRetryCondition } from '../http/grpc.js';
import { compileIdentityPattern, IdentityPatternError } from '../identity/spiffe.js';
import {
  EXPECTED,
  UnitError,
  parseDuration,
  parseHedgeAfter,
  parseHostPort,
  parseRate,
  parseRouteHost,
  parseRatio,
  parseSize,
  showValue,
} from './units.js';

/** Error params whose every message reads `expected <what>, got <value>`. */
function expecting(what: string): { error: (issue: { input?: unknown }) => string } {
  return {
    error: (issue) =>
      issue.input === undefined ? `required: expected ${what}` : `expected ${what}, got ${showValue(issue.input)}`,
  };
}

/** A text or number leaf that must parse with `parse`; the parser's message is the error. */
function unit<V extends string | number>(base: z.ZodType<V, V>, parse: (value: V) => unknown, what: string): z.ZodType<V, V> {
  return base
    .check((ctx) => {
      try {
        parse(ctx.value);
      } catch (err) {
        if (!(err instanceof UnitError)) throw err;
        ctx.issues.push({ code: 'custom', input: ctx.value, message: err.message });
      }
    })
    .meta({ description: what });
}

/** A duration; zero only where it means "none" (no queueing, no backoff). */
function duration(allowZero = false) {
  return unit(z.string(expecting(EXPECTED.duration)), (text) => {
    if (parseDuration(text) === 0 && !allowZero) {
      throw new UnitError(`expected ${EXPECTED.duration} above zero, got ${showValue(text)}`);
    }
  }, EXPECTED.duration);
}

const hostPort = (allowPortZero = false) =>
  unit(z.string(expecting(EXPECTED.hostPort)), (text) => parseHostPort(text, allowPortZero), EXPECTED.hostPort);
const rate = () => unit(z.string(expecting(EXPECTED.rate)), parseRate, EXPECTED.rate);
const ratio = () => unit(z.union([z.string(), z.number()], expecting(EXPECTED.ratio)), parseRatio, EXPECTED.ratio);
const size = () => unit(z.union([z.number(), z.string()], expecting(EXPECTED.size)), parseSize, EXPECTED.size);

function between(min: number, max: number | null, what: string, int = false) {
  const e = expecting(what);
  const n = (int ? z.int(e) : z.number(e)).min(min, e);
  return max === null ? n : n.max(max, e);
}

function pattern(regex: RegExp, what: string) {
  const e = expecting(what);
  return z.string(e).regex(regex, e).meta({ description: what });
}

/** A caller identity pattern (identity/spiffe.ts): its message is the error. */
function identityPattern() {
  const what = 'a SPIFFE ID like spiffe://mesh.local/ns/shop/sa/orders, a prefix ending in /*, a trust domain spiffe://mesh.local, or *';
  return unit(z.string(expecting(what)), (text) => {
    try {
      compileIdentityPattern(text);
    } catch (err) {
      throw err instanceof IdentityPatternError ? new UnitError(err.message) : err;
    }
  }, what);
}

const count = (min: 0 | 1) => between(min, null, min === 0 ? 'a whole number, 0 or more' : 'a positive integer', true);
const flag = () => z.boolean(expecting('true or false'));
const percent = () => between(0, 100, 'a percentage from 0 to 100');
const port = () => between(1, 65_535, 'a port from 1 to 65535', true);
const perSecond = () => between(0, null, 'a number, 0 or more');
const urlPath = () => pattern(/^\//, 'a path starting with /');
const name = () => pattern(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a name of letters, digits, ".", "_" and "-"');
const dnsName = () => pattern(/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/, 'a DNS name like users.internal');
// RFC 9110 token characters: what a method or a header name may be made of.
const TCHARS = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const TOKEN = new RegExp(`^${TCHARS}$`);

/** Levenshtein distance, for "did you mean" on a misspelt field. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

function unknownFields(keys: readonly string[], known: readonly string[]): string {
  const first = keys[0]!.toLowerCase();
  const near = known.find((k) => editDistance(k.toLowerCase(), first) <= 2);
  const hint = near ? `did you mean "${near}"?` : `expected one of: ${known.join(', ')}`;
  return `unknown field ${keys.map((k) => JSON.stringify(k)).join(', ')}; ${hint}`;
}

/** A strict mapping: an unknown key is an error naming it (and the field it was likely meant to be). */
function fields<S extends z.core.$ZodLooseShape>(shape: S) {
  const known = Object.keys(shape);
  const notMapping = expecting('a mapping').error;
  return z.strictObject(shape, {
    error: (issue) => (issue.code === 'unrecognized_keys' ? unknownFields(issue.keys, known) : notMapping(issue)),
  });
}

const DISCOVERY_KINDS = ['static', 'dns', 'dnsSrv', 'etcd', 'file'] as const;

const staticEndpoint = z.union(
  [hostPort(), fields({ address: hostPort(), weight: count(1).default(1) })],
  expecting('"host:port" or { address, weight }'),
);

const discovery = fields({
  static: z.array(staticEndpoint, expecting('a list of endpoints')).min(1, expecting('at least one endpoint')).optional(),
  dns: fields({ name: dnsName(), port: port(), refresh: duration().default('30s') })
    .describe('A/AAAA records of `name`, all on `port`')
    .optional(),
  dnsSrv: fields({ name: dnsName(), refresh: duration().default('30s') }).describe('SRV records: host, port, weight').optional(),
  etcd: fields({
    endpoints: z.array(z.url({ protocol: /^https?$/, ...expecting('an http(s) URL like http://127.0.0.1:2379') })).min(1, expecting('at least one URL')),
    prefix: z.string(expecting('a key prefix')),
  }).optional(),
  file: z.string(expecting('a file path')).min(1, expecting('a file path')).describe('YAML file of endpoints, relative to this policy file; watched').optional(),
})
  .check((ctx) => {
    const given = DISCOVERY_KINDS.filter((kind) => ctx.value[kind] !== undefined);
    if (given.length !== 1) {
      const got = given.length === 0 ? 'none' : given.join(' and ');
      ctx.issues.push({ code: 'custom', input: ctx.value, message: `expected exactly one of ${DISCOVERY_KINDS.join(', ')}; got ${got}` });
    }
  })
  .meta({ description: 'Where the endpoints come from: exactly one kind', minProperties: 1, maxProperties: 1 });

const circuitBreaker = fields({
  consecutiveFailures: count(1).describe('trip after this many failures in a row').optional(),
  failureRate: fields({ threshold: ratio(), minRequests: count(1), window: duration() })
    .describe('trip when at least minRequests were seen over window and this share of them failed')
    .optional(),
  openFor: duration().describe('first open period; doubles on each re-open').default('5s'),
  maxOpenFor: duration().describe('cap on the open period').default('60s'),
  halfOpenProbes: count(1).describe('requests let through to test recovery').default(1),
  probeTimeout: duration().describe('a probe not settled by then counts as a failure').default('10s'),
  shadow: flag().describe('count "would reject" without enforcing').default(false),
}).check((ctx) => {
  if (ctx.value.consecutiveFailures === undefined && ctx.value.failureRate === undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, message: 'expected a rule to trip on: consecutiveFailures, failureRate or both' });
  }
});

const upstream = fields({
  discovery,
  balancer: z
    .enum(['round-robin', 'least-connections', 'random', 'consistent-hash'], expecting('round-robin, least-connections, random or consistent-hash'))
    .default('round-robin'),
  hashOn: pattern(new RegExp(`^(header:${TCHARS}|cookie:${TCHARS}|client-ip|path)$`), 'header:NAME, cookie:NAME, client-ip or path')
    .describe('consistent-hash: what the same key means (the same endpoint while it is eligible)')
    .optional(),
  hashBalanceFactor: between(1, null, 'a number, 1 or more (1.25: no endpoint above 1.25× the mean load)')
    .describe('consistent-hash: bounded loads; a key whose endpoint is over this × the mean goes on to the next')
    .default(1.25),
  connectTimeout: duration().default('1s'),
  protocol: z.enum(['http1', 'h2c'], expecting('http1 or h2c'))
    .describe('how the proxy speaks to the endpoints: HTTP/1.1, or cleartext HTTP/2 with prior knowledge (gRPC servers)')
    .default('http1'),
  maxConnectionsPerEndpoint: count(1).describe('connections the pool keeps to one endpoint; further requests wait for one').default(1024),
  tls: z.enum(['none', 'mesh', 'system'], expecting('none, mesh or system'))
    .describe('none: plaintext; mesh: mutual TLS with this workload\'s identity, the server verified against `identity`; system: TLS with the CA store and SNI')
    .default('none'),
  identity: identityPattern().describe('tls: mesh: who the server must be (a SPIFFE ID, a prefix ending in /*, or a trust domain)').optional(),
  serverName: dnsName().describe('tls: system: the SNI name and the name the certificate must carry; default: the endpoint host').optional(),
  bulkhead: fields({
    maxConcurrent: count(1),
    maxQueued: count(0).default(0),
    queueTimeout: duration(true).default('1s'),
    shadow: flag().default(false),
  })
    .describe('at most maxConcurrent requests in flight, then a queue of maxQueued')
    .optional(),
  circuitBreaker: circuitBreaker.optional(),
  outlierDetection: fields({
    consecutiveFailures: count(1).default(5),
    ejectFor: duration().describe('times the number of ejections in a row').default('30s'),
    maxEjectedPercent: percent().default(50),
  })
    .describe('per endpoint: eject the bad one, keep serving from the rest')
    .optional(),
  healthCheck: fields({
    path: urlPath(),
    interval: duration().default('5s'),
    timeout: duration().default('1s'),
    unhealthyAfter: count(1).default(3),
    healthyAfter: count(1).default(2),
  }).optional(),
  concurrency: fields({
    adaptive: z.union([
      z.literal(true, expecting('true or {minLimit, maxLimit, initialLimit}')),
      fields({ minLimit: count(1).default(4), maxLimit: count(1).default(500), initialLimit: count(1).default(20) }),
    ], expecting('true or {minLimit, maxLimit, initialLimit}')),
  }).describe('an adaptive concurrency limit learned from latency, instead of a fixed bulkhead').optional(),
}).check((ctx) => {
  const { tls, identity, serverName, protocol, balancer, hashOn } = ctx.value;
  if (balancer === 'consistent-hash' && hashOn === undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['hashOn'], message: 'required with balancer: consistent-hash: header:NAME, cookie:NAME, client-ip or path' });
  }
  if (balancer !== 'consistent-hash' && hashOn !== undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['hashOn'], message: `hashOn applies only with balancer: consistent-hash (balancer is ${balancer})` });
  }
  if (tls === 'mesh' && identity === undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['identity'], message: 'required with tls: mesh: the SPIFFE ID (or pattern) the server must present' });
  }
  if (tls !== 'mesh' && identity !== undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['identity'], message: `identity is checked only with tls: mesh (tls is ${tls})` });
  }
  if (tls !== 'system' && serverName !== undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['serverName'], message: `serverName applies only with tls: system (tls is ${tls})` });
  }
  if (tls !== 'none' && protocol === 'h2c') {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['protocol'], message: 'h2c is cleartext HTTP/2: with tls, use protocol: http1 (HTTP/2 over TLS upstream is not supported yet)' });
  }
  if (ctx.value.bulkhead !== undefined && ctx.value.concurrency !== undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, message: 'expected either bulkhead (a fixed limit) or concurrency.adaptive, not both' });
  }
  const adaptive = ctx.value.concurrency?.adaptive;
  if (typeof adaptive === 'object' && adaptive.maxLimit < adaptive.minLimit) {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['concurrency', 'adaptive', 'maxLimit'], message: `expected maxLimit ≥ minLimit (${adaptive.minLimit}), got ${adaptive.maxLimit}` });
  }
});

const GRPC_RETRY_NAMES = Object.keys(GRPC_RETRY_CONDITIONS) as GrpcRetryCondition[];
const RETRY_ON = 'connect-failure, reset, timeout, a status from 400 to 599, or a gRPC status (unavailable, resource-exhausted, deadline-exceeded, cancelled, internal)';
const retryOn = () => {
  const e = expecting(RETRY_ON);
  return z.array(
    z.union([z.enum(['connect-failure', 'reset', 'timeout', ...GRPC_RETRY_NAMES], e), z.int(e).min(400, e).max(599, e)], e),
    expecting(`a list of ${RETRY_ON}`),
  );
};

const retryDefaults = fields({
  attempts: count(1).describe('tries in all, the first one included').default(2),
  perTryTimeout: duration().describe('until response headers arrive').default('5s'),
  backoff: fields({ base: duration(true).default('25ms'), max: duration(true).default('250ms') })
    .describe('full jitter: wait U(0, min(max, base * 2^(n-1)))')
    .prefault({}),
  on: retryOn().default(['connect-failure', 'reset', 'timeout', 502, 503, 504, 'unavailable']),
  budget: fields({
    ratio: ratio().default('20%'),
    minPerSecond: perSecond().default(10),
    window: duration().default('10s'),
  })
    .describe('retries may add at most ratio of the load, plus minPerSecond')
    .prefault({}),
  maxReplayBytes: size().describe('request bodies up to this size are buffered so a retry can replay them').default('64KiB'),
}).prefault({});

const retryOverride = fields({
  attempts: count(1).optional(),
  perTryTimeout: duration().optional(),
  backoff: fields({ base: duration(true).optional(), max: duration(true).optional() }).optional(),
  on: retryOn().optional(),
  budget: fields({
    ratio: ratio().optional(),
    minPerSecond: perSecond().optional(),
    window: duration().optional(),
  }).optional(),
  maxReplayBytes: size().optional(),
}).describe('overrides only the given fields of defaults.retry');

/** A CIDR block; cidr.ts's message is the error. */
const cidr = () =>
  unit(z.string(expecting(EXPECTED_CIDR)), (text) => {
    try {
      parseCidr(text);
    } catch (err) {
      throw err instanceof CidrError ? new UnitError(err.message) : err;
    }
  }, EXPECTED_CIDR);

const RATE_LIMIT_KEY = 'client-ip, identity (the caller\'s SPIFFE ID), header:NAME or claim:NAME (a JWT claim)';
const rateLimitKey = () => {
  const e = expecting(RATE_LIMIT_KEY);
  return z.union([z.enum(['client-ip', 'identity'], e), z.string(e).regex(new RegExp(`^(header:${TCHARS}|claim:[A-Za-z0-9_.:-]+)$`), e)], e);
};

const methodList = () => z.array(pattern(TOKEN, 'an HTTP method like GET'), expecting('a list of methods')).min(1, expecting('at least one method'));

const routeMatch = fields({
  host: unit(z.string(expecting('a host name')).min(1, expecting('a host name')), parseRouteHost, EXPECTED.routeHost)
    .describe('the Host header (port ignored; IPv6 bare or in brackets)').optional(),
  pathPrefix: urlPath().optional(),
  methods: methodList().optional(),
  headers: z.record(pattern(TOKEN, 'an HTTP header name'), z.string(expecting('a string (quote values like "true")')), expecting('a mapping of header name to exact value')).optional(),
}).describe('all given conditions must hold; {} matches every request');

const rateLimit = fields({
  rate: rate(),
  burst: count(1),
  key: rateLimitKey().describe('one bucket per key; absent: one bucket for the route').optional(),
  maxKeys: count(1).describe('hard cap on keyed buckets (LRU beyond it)').default(10_000),
  shadow: flag().default(false),
  scope: z.enum(['local', 'global'], expecting('local or global'))
    .describe('local: this sidecar\'s own bucket; global: one bucket shared by every sidecar through redis')
    .default('local'),
}).check((ctx) => {
  if (ctx.value.scope === 'global' && ctx.value.key !== undefined) {
    ctx.issues.push({ code: 'custom', input: ctx.value, path: ['key'], message: 'a global limit is one bucket for the route: keyed global limits are not supported' });
  }
});

const fault = fields({
  delay: fields({ percent: between(0, 100, 'a percentage from 0 to 100'), duration: duration() }).describe('delay this share of requests').optional(),
  abort: fields({ percent: between(0, 100, 'a percentage from 0 to 100'), status: between(400, 599, 'a status from 400 to 599', true) }).describe('answer this share of requests with status').optional(),
  header: pattern(TOKEN, 'an HTTP header name').describe('a request carrying it sets its own fault: abort=503;delay=50ms').optional(),
}).describe('fault injection, for chaos tests of the callers; off unless present');

/** One authorization rule: an identity pattern, or conditions that must all hold. */
const authorizeRule = z.union([
  identityPattern(),
  fields({
    identities: z.array(identityPattern(), expecting('a list of identity patterns')).min(1, expecting('at least one pattern')).optional(),
    methods: methodList().optional(),
    paths: z.array(urlPath(), expecting('a list of path prefixes')).min(1, expecting('at least one path prefix')).optional(),
    claims: z.record(z.string(), z.string(expecting('a string')), expecting('a mapping of JWT claim to exact value')).optional(),
  }).describe('all given conditions must hold'),
], expecting('an identity pattern, or { identities, methods, paths, claims }'));

const authorize = fields({
  allow: z.array(authorizeRule, expecting('a list of rules')).describe('a caller must match one of these; absent: every caller that passed TLS and JWT').optional(),
  deny: z.array(authorizeRule, expecting('a list of rules')).describe('checked first: a caller matching one is refused').default([]),
}).describe('who may call: deny rules first, then allow; refusals are 403 forbidden');

const jwt = fields({
  issuer: z.string(expecting('an issuer (the iss claim)')).min(1, expecting('an issuer')),
  audiences: z.array(z.string(expecting('an audience')), expecting('a list of audiences')).describe('aud must hold one of them; empty: not checked').default([]),
  jwksFile: z.string(expecting('a file path')).min(1, expecting('a file path')).describe('JWKS file, relative to this policy file; re-read on change and on an unknown kid').optional(),
  jwksUrl: z.url({ protocol: /^https?$/, ...expecting('an http(s) URL') }).describe('JWKS URL; cached, refreshed, re-fetched on an unknown kid').optional(),
  jwksRefresh: duration().describe('how often the keys are re-checked').default('5m'),
  clockSkew: duration(true).describe('tolerance on exp and nbf').default('30s'),
  requiredClaims: z.array(z.string(expecting('a claim name')), expecting('a list of claim names')).default([]),
  algorithms: z.array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'], expecting('a JWS algorithm like RS256 or ES256')), expecting('a list of algorithms'))
    .min(1, expecting('at least one algorithm'))
    .default(['RS256', 'ES256', 'EdDSA']),
  forwardClaims: z.record(z.string(), pattern(TOKEN, 'an HTTP header name'), expecting('a mapping of claim to header name'))
    .describe('claims sent to the app as headers (a client\'s own copies are removed)')
    .default({}),
  forwardToken: flag().describe('keep the Authorization header for the app (default: removed once verified)').default(false),
}).check((ctx) => {
  if ((ctx.value.jwksFile === undefined) === (ctx.value.jwksUrl === undefined)) {
    ctx.issues.push({ code: 'custom', input: ctx.value, message: 'expected exactly one of jwksFile, jwksUrl' });
  }
}).describe('JWT authentication: a missing or invalid token is 401 with WWW-Authenticate');

const inboundRoute = fields({
  name: name().describe('metrics label; default inbound-<index>').optional(),
  match: routeMatch,
  rewrite: fields({ pathPrefix: urlPath() }).describe('replaces the matched pathPrefix').optional(),
  timeout: duration().describe('overall deadline; default defaults.timeout').optional(),
  retry: retryOverride.describe('retries to the local app; default: none (attempts 1)').optional(),
  authorize: authorize.describe('replaces inbound.authorize for this route').optional(),
  jwt: jwt.optional(),
  rateLimit: rateLimit.optional(),
  fault: fault.optional(),
});

const route = fields({
  name: name().describe('metrics label; default route-<index>').optional(),
  match: routeMatch,
  rewrite: fields({ pathPrefix: urlPath() }).describe('replaces the matched pathPrefix').optional(),
  upstream: name(),
  timeout: duration().describe('overall deadline, all tries and backoff included; default defaults.timeout').optional(),
  idempotent: flag()
    .describe("the route's requests may be sent twice whatever their method (e.g. the gRPC methods it matches): retried after a reset, timeout or failing status, and hedged")
    .default(false),
  retry: retryOverride.optional(),
  rateLimit: rateLimit.optional(),
  fault: fault.optional(),
  hedge: fields({
    after: unit(z.string(expecting(EXPECTED.hedgeAfter)), parseHedgeAfter, EXPECTED.hedgeAfter)
      .describe("a quantile of the route's observed latency (p95) or a fixed delay (50ms)")
      .default('p95'),
    maxExtra: ratio().describe("hedges add at most this share of the route's requests").default('10%'),
  }).describe('hedged requests (idempotent only): a second try to another endpoint when the first is slow; first response wins').optional(),
  upgrade: z.array(z.literal('websocket', expecting('websocket (the one upgrade protocol tunnelled; others are served as plain HTTP/1.1)')), expecting('a list of upgrade protocols'))
    .describe('upgrade protocols this route tunnels; any other Upgrade is served as a plain HTTP/1.1 request')
    .default(['websocket']),
});

/** The whole policy file as written. */
export const policySchema = fields({
  version: z.literal(1, expecting('1')),
  resolvers: z.array(hostPort(), expecting('a list of host:port')).min(1, expecting('at least one resolver'))
    .describe("DNS servers for dns/dnsSrv discovery; default: the system's")
    .optional(),
  listeners: fields({
    outbound: fields({ address: hostPort(true) }).default({ address: '127.0.0.1:15001' }),
    admin: fields({
      address: hostPort(true),
      adminFrom: z.array(cidr(), expecting('a list of CIDRs'))
        .describe('clients allowed /admin/*; /metrics, /healthz and /readyz answer anyone. Default: loopback only')
        .default([...LOOPBACK_CIDRS]),
    }).default({ address: '127.0.0.1:15000', adminFrom: [...LOOPBACK_CIDRS] }),
    inbound: fields({
      address: hostPort(true),
      app: hostPort().describe('the local app this listener guards'),
      appProtocol: z.enum(['http1', 'h2c'], expecting('http1 or h2c')).describe('how the proxy speaks to the app').default('http1'),
      tls: z.enum(['mesh', 'none'], expecting('mesh or none'))
        .describe('mesh: terminate mutual TLS, a client certificate chained to the trust bundle required; none: plaintext (callers have no identity)')
        .default('mesh'),
      minTlsVersion: z.enum(['TLSv1.3', 'TLSv1.2'], expecting('TLSv1.3 or TLSv1.2')).default('TLSv1.3'),
      concurrency: z.union([
        fields({ maxConcurrent: count(1), maxQueued: count(0).default(0), queueTimeout: duration(true).default('1s') }),
        fields({
          adaptive: z.union([
            z.literal(true, expecting('true or {minLimit, maxLimit, initialLimit}')),
            fields({ minLimit: count(1).default(4), maxLimit: count(1).default(500), initialLimit: count(1).default(20) }),
          ], expecting('true or {minLimit, maxLimit, initialLimit}')),
        }),
      ], expecting('{ maxConcurrent, maxQueued, queueTimeout } or { adaptive }'))
        .describe('requests in flight to the app at most (a fixed bulkhead), or an adaptive limit')
        .optional(),
    }).describe('calls from other services to the local app').optional(),
  }).prefault({}),
  identity: fields({
    trustDomain: pattern(/^[a-z0-9._-]+$/, 'a trust domain like mesh.local (lower case)'),
    certFile: z.string(expecting('a file path')).min(1, expecting('a file path')).describe('PEM: this workload\'s certificate (URI SAN spiffe://TRUST-DOMAIN/...) and any intermediates'),
    keyFile: z.string(expecting('a file path')).min(1, expecting('a file path')),
    trustBundleFile: z.string(expecting('a file path')).min(1, expecting('a file path')).describe('PEM: the CA certificates peers must chain to'),
    refresh: duration().describe('how often the files are checked for a rotation').default('5s'),
  }).describe("this workload's certificate, rotated from files without a restart").optional(),
  redis: fields({
    address: hostPort().describe('the Redis server that holds the global rate-limit buckets'),
    timeout: duration().describe('a decision never waits longer than this for Redis').default('5ms'),
    onFailure: z.enum(['open', 'closed'], expecting('open or closed'))
      .describe('Redis slow or down: open admits (a local bucket of the same rate as the ceiling); closed refuses')
      .default('open'),
    password: z.string(expecting('a string')).describe('AUTH password').optional(),
    db: count(0).describe('database number').default(0),
  }).describe('the shared store of global rate limits (rateLimit.scope: global)').optional(),
  registration: fields({
    etcd: fields({
      endpoints: z.array(z.url({ protocol: /^https?$/, ...expecting('an http(s) URL like http://127.0.0.1:2379') })).min(1, expecting('at least one URL')),
      prefix: pattern(/^\/.*\/$/, 'a key prefix starting and ending with / (the one other sidecars discover)'),
    }),
    address: hostPort().describe('what other sidecars will dial to reach the local app (also where its health is checked)'),
    ttl: duration().describe('the lease; heartbeats every ttl/3; at least 2s (etcd\'s minimum)').default('10s'),
    healthCheck: fields({
      path: urlPath().default('/healthz'),
      interval: duration().default('2s'),
      timeout: duration().default('1s'),
    }).describe('registered only while the app answers 2xx here').prefault({}),
    metadata: z.record(z.string(), z.string(expecting('a string')), expecting('a mapping of name to value')).describe('published with the address').optional(),
  }).describe('register the local app in etcd while it is healthy; deregistered first on drain').optional(),
  inbound: fields({
    authorize: authorize.describe('for every inbound route that has no authorize of its own').optional(),
    routes: z.array(inboundRoute, expecting('a list of inbound routes')).describe('first match wins; default: one route for every request').default([{ match: {} }]),
  }).describe('routes of the inbound listener (to the local app)').optional(),
  defaults: fields({
    timeout: duration().describe('overall deadline of one request: all tries and backoff included').default('15s'),
    retry: retryDefaults,
  })
    .describe('every route inherits these unless it overrides them')
    .prefault({}),
  upstreams: z.record(name(), upstream, expecting('a mapping of upstream name to upstream')),
  routes: z.array(route, expecting('a list of routes')).describe('first match wins'),
  accessLog: fields({
    enabled: flag().describe('one JSON line per request on stdout; off by default, as in Envoy and Linkerd (it is paid on every request)').default(false),
  }).prefault({}),
  tracing: fields({
    serviceName: pattern(/^\S.*$/, 'a service name like orders-sidecar').describe('the resource\'s service.name on every span').default('pilotfish'),
    otlp: fields({
      endpoint: z.url({ protocol: /^https?$/, ...expecting('an http(s) URL like http://127.0.0.1:4318/v1/traces') })
        .describe('the collector\'s OTLP/HTTP traces URL (JSON bodies)'),
      timeout: duration().describe('the longest one export may take; a collector slower than this loses that batch (counted)').default('5s'),
      headers: z.record(pattern(TOKEN, 'a header name'), z.string(expecting('a string')), expecting('a mapping of header name to value'))
        .describe('sent with every export (e.g. an API key)')
        .default({}),
    }),
    sampling: fields({
      ratio: ratio().describe('share of new traces recorded, decided on the trace id (OpenTelemetry\'s TraceIdRatioBased)').default('1%'),
      parentBased: flag().describe('a request with a traceparent follows its sampled flag; without one, the ratio decides').default(true),
    }).prefault({}),
    batch: fields({
      maxSpans: count(1).describe('spans per export; a full batch is sent at once').default(512),
      maxQueued: count(1).describe('spans waiting for export at most; beyond, new spans are dropped and counted').default(2048),
      interval: duration().describe('a partial batch waits at most this long').default('1s'),
    }).prefault({}),
  }).describe('OpenTelemetry spans for each request and each try, exported by OTLP/HTTP; absent: off').optional(),
  shutdown: fields({
    drainTimeout: duration().describe('the longest drain on SIGTERM: the app keeps its egress meanwhile; what is left then is cut').default('20s'),
    quietPeriod: duration(true).describe('the drain ends early once nothing was in flight and no connection open for this long').default('5s'),
  }).prefault({}),
  limits: fields({
    maxConnections: count(1).describe('client connections open at once on the outbound listener; beyond it new ones are closed').default(10_000),
    headerReadTimeout: duration().describe('a request head must arrive within this; else 408').default('10s'),
    bodyIdleTimeout: duration().describe('a request body that sends nothing for this long is answered 408 and closed; never charged to an upstream').default('30s'),
    writeIdleTimeout: duration().describe('a client that reads nothing of its response for this long is cut and its permits released').default('60s'),
    maxTunnels: count(1).describe('WebSocket and CONNECT tunnels open at once; beyond it 503 tunnel_limit').default(1000),
    tunnelIdleTimeout: duration().describe('a tunnel with no bytes either way for this long is closed').default('5m'),
    maxHeaderBytes: size().describe('request line and headers; beyond it 431 (414 when the request line alone is too long)').default('16KiB'),
    maxUrlBytes: size().describe('request target; beyond it 414').default('8KiB'),
    maxPipelined: count(1).describe('requests a client may pipeline on one connection before reading responses; beyond it the connection is closed').default(16),
  })
    .describe('bounds on what clients may hold; every one has a default')
    .prefault({}),
  readiness: fields({
    startupTimeout: duration(true).describe('/readyz waits at most this long for every routed upstream to resolve once').default('10s'),
  }).prefault({}),
});

/** The policy as parsed: defaults applied, units still as written. */
export type PolicyWire = z.output<typeof policySchema>;
/** One upstream as parsed. */
export type UpstreamWire = PolicyWire['upstreams'][string];
/** One route as parsed. */
export type RouteWire = PolicyWire['routes'][number];
/** One inbound route as parsed. */
export type InboundRouteWire = NonNullable<PolicyWire['inbound']>['routes'][number];
/** An `authorize` block as parsed. */
export type AuthorizeWire = NonNullable<InboundRouteWire['authorize']>;
/** `defaults.retry` as parsed: every field present. */
export type RetryWire = PolicyWire['defaults']['retry'];
/** A route's `retry`: only the fields it overrides. */
export type RetryOverrideWire = NonNullable<RouteWire['retry']>;

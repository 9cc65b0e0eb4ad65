/**
 * The global token bucket, held in Redis and shared by every sidecar: one Lua script refills and
 * takes atomically, with Redis `TIME` as the only clock (sidecars' clocks drift; Redis's is one).
 * The client fails fast when Redis is down (no offline queue, no retries), because a quota lease
 * that arrives late is worth less than a decision made now by the caller's failure policy.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { readHostPort } from '../http/host-port.js';
import type { Clock } from '../core/clock.js';
import { systemRandom, type Random } from '../core/random.js';
import type { Logger } from '../observe/logger.js';

/**
 * KEYS[1]: the bucket, a hash {t: tokens, ts: Redis µs of the last refill}.
 * ARGV: rate (tokens/s), burst, want. Returns {granted, µs until the next whole token}.
 * A missing key is a full bucket: keys expire only after twice the time to refill the burst, by
 * when the bucket would be full anyway, so expiry loses nothing. A Redis clock that steps back
 * refills nothing until it passes `ts` again (never mints tokens).
 */
const SCRIPT = `
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local s = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(s[1])
local ts = tonumber(s[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
elseif now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)
  ts = now
end
local granted = math.floor(tokens + 1e-9)
if granted > want then granted = want end
if granted < 0 then granted = 0 end
tokens = math.max(0, tokens - granted)
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'ts', string.format('%.0f', ts))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(2000 * burst / rate)))
local wait = 0
if tokens + 1e-9 < 1 then wait = math.ceil((1 - tokens) * 1000000 / rate) end
return {granted, wait}
`;
const SHA = createHash('sha1').update(SCRIPT).digest('hex');

/** What one `take` got from the global bucket. */
export interface BucketGrant {
  /** Tokens granted, 0..want: taken from the global bucket for good. */
  readonly granted: number;
  /** Milliseconds until the global bucket has a whole token again (0 when it has one now). */
  readonly msUntilToken: number;
}

/** Why a `take` failed, as a stable kind for the `redisError` metric. */
export type RedisErrorKind = 'unavailable' | 'connection_lost' | 'timeout' | 'reply' | 'bad_reply';

/** A failed `take`: no tokens were granted (or, for `timeout`/`connection_lost`, none can be counted on). */
export class RedisBucketError extends Error {
  constructor(readonly kind: RedisErrorKind, message: string) {
    super(message);
    this.name = 'RedisBucketError';
  }
}

/** How to reach Redis. */
export interface RedisBucketOptions {
  /** `host:port`, e.g. `127.0.0.1:6379`. */
  readonly address: string;
  /** AUTH password, if Redis requires one. */
  readonly password?: string;
  /** Database number (default 0). */
  readonly db?: number;
  /** Prefix of every bucket key (default `pilotfish:quota:`). */
  readonly keyPrefix?: string;
  /** TCP connect timeout (default 1000 ms). */
  readonly connectTimeoutMs?: number;
  /** A command unanswered this long fails, so a hung Redis frees the lease slot (default 250 ms). */
  readonly commandTimeoutMs?: number;
  /** Reconnect backoff doubles from 50 ms up to this (default 500 ms), with jitter. */
  readonly reconnectMaxMs?: number;
}

/** The clock (for `ready`'s timeout), jitter for the reconnect backoff, a logger for up/down transitions. */
export interface RedisBucketDeps {
  readonly clock: Clock;
  readonly random?: Random;
  readonly logger?: Logger;
}

/** The global bucket; one client (one connection) per sidecar serves every route's limiter. */
export class RedisBucket {
  /**
   * The client, once ioredis is loaded: it is imported when the first bucket is made, so a
   * sidecar without a global rate limit never pays its memory (about 20 MiB of RSS).
   */
  private client: Redis | null = null;
  private readonly connecting: Promise<Redis>;
  private readonly prefix: string;
  private readonly clock: Clock;
  private down = false;

  constructor(options: RedisBucketOptions, deps: RedisBucketDeps) {
    this.clock = deps.clock;
    const hp = readHostPort(options.address, { port: 'required', minPort: 1 });
    if (!hp.ok || hp.port === null) throw new Error(`redis address must be host:port, got ${JSON.stringify(options.address)}`);
    this.prefix = options.keyPrefix ?? 'pilotfish:quota:';
    const random = deps.random ?? systemRandom;
    const reconnectMaxMs = options.reconnectMaxMs ?? 500;
    const logger = deps.logger;
    const { host, port } = hp;
    this.connecting = import('ioredis').then(({ Redis }) => (this.client = this.connect(new Redis({
      host,
      port,
      ...(options.password !== undefined ? { password: options.password } : {}),
      db: options.db ?? 0,
      connectTimeout: options.connectTimeoutMs ?? 1000,
      commandTimeout: options.commandTimeoutMs ?? 250,
      // Fail fast while disconnected: a queued lease would only arrive after its requests were decided.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // Reconnect forever with capped, jittered backoff: many sidecars must not reconnect in step.
      retryStrategy: (times: number) => Math.round(Math.min(reconnectMaxMs, 50 * 2 ** Math.min(times, 10)) * (0.5 + 0.5 * random.next())),
    }), logger)));
  }

  /** Watches the new client's connection: logs transitions, loads the script on every connect. */
  private connect(client: Redis, logger: Logger | undefined): Redis {
    // Without a listener ioredis prints every reconnect failure; we log transitions only.
    client.on('error', (err: Error) => {
      if (this.down) return;
      this.down = true;
      logger?.log('warn', 'redis unavailable: global rate limits use their failure policy', { error: err.message });
    });
    client.on('ready', () => {
      // A restarted Redis has no scripts: load now so the first lease needs no NOSCRIPT round trip.
      client.script('LOAD', SCRIPT).catch(() => {});
      if (!this.down) return;
      this.down = false;
      logger?.log('info', 'redis connected: global rate limits are shared again');
    });
    return client;
  }

  /**
   * Takes up to `want` tokens from `key`'s bucket (rate per second, capacity `burst`), atomically
   * across all sidecars. The same key must be used with the same rate and burst everywhere: the
   * script applies whichever figures the caller passes.
   */
  async take(key: string, ratePerSec: number, burst: number, want: number): Promise<BucketGrant> {
    const k = this.prefix + key;
    const client = this.client ?? (await this.connecting);
    let reply: unknown;
    try {
      reply = await client.evalsha(SHA, 1, k, ratePerSec, burst, want);
    } catch (err) {
      // Redis restarted or flushed its scripts: load once, then retry once.
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw classify(err);
      try {
        await client.script('LOAD', SCRIPT);
        reply = await client.evalsha(SHA, 1, k, ratePerSec, burst, want);
      } catch (again) {
        throw classify(again);
      }
    }
    if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
      throw new RedisBucketError('bad_reply', `unexpected script reply ${JSON.stringify(reply)}`);
    }
    return { granted: reply[0], msUntilToken: reply[1] / 1000 };
  }

  /** Resolves once connected (startup, readiness); rejects after `timeoutMs`. */
  async ready(timeoutMs = 5000): Promise<void> {
    const client = this.client ?? (await this.connecting);
    if (client.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const onReady = (): void => {
        timer.cancel();
        resolve();
      };
      const timer = this.clock.setTimer(() => {
        client.off('ready', onReady);
        reject(new RedisBucketError('unavailable', `redis not ready after ${timeoutMs} ms`));
      }, timeoutMs);
      client.once('ready', onReady);
    });
  }

  /** Closes the connection and stops reconnecting. */
  async close(): Promise<void> {
    const client = this.client ?? (await this.connecting);
    client.removeAllListeners('ready');
    try {
      await client.quit();
    } catch {
      client.disconnect();
    }
  }
}

/** Maps ioredis's errors (told apart only by message) to a stable kind. */
function classify(err: unknown): RedisBucketError {
  if (err instanceof RedisBucketError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (message.includes('enableOfflineQueue') || message.includes('max retries')) return new RedisBucketError('unavailable', message);
  if (message.includes('Connection is closed')) return new RedisBucketError('connection_lost', message);
  if (message.includes('timed out')) return new RedisBucketError('timeout', message);
  if (err instanceof Error && err.name === 'ReplyError') return new RedisBucketError('reply', message);
  return new RedisBucketError('unavailable', message);
}

#!/usr/bin/env node
// The floor under Pilotfish's default policy, for HTTP/1.1: a forwarder with only what that policy owes
// every request, each in the cheapest form Node and undici offer, and nothing configurable. Its base is
// cheaper than the peers harness's bare forwarder (`pool.stream` and header objects both ways): undici's
// `dispatch` with a handler in undici's own protocol, the response's raw header list relayed as a list,
// as Pilotfish's terminal does it. On top of that base, the duties:
//   - the mesh's request headers: X-Forwarded-For appended, X-Forwarded-Proto and -Host, Via, an
//     x-request-id (kept if sent, else crypto.randomUUID()), x-request-timeout-ms; Via on the response;
//   - the overall deadline (15 s) and the per-try timeout (5 s): a timer each, armed and cleared, the
//     per-try one aborting the try through the abort function undici hands the handler;
//   - one retry (502/503/504 read out and withheld before the head is written, or a connect failure);
//   - a request counter by status and a latency histogram (typed arrays), the clock read at start and end.
// No routing table, policy, stage chain, access log, breaker or admin server. Measured beside the bare
// forwarder and Pilotfish in the same rounds (EXTRA_PROXIES, test/bench/README.md), it says what the
// mesh's duties cost when written with nothing else around them.
// Env: PORT, UPSTREAMS (comma-separated http:// origin URLs), FLOOR_DUTIES: `all` (the default) or
// `core`, which drops the mesh's headers (request id, X-Forwarded-*, Via, time left: the request headers
// are the bare forwarder's, hop-by-hop fields dropped) and keeps the deadline, the per-try timer, the retry
// and the metrics, the duties SEMANTICS asks of every request.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { clearTimeout, setTimeout } from 'node:timers';
import { Pool } from 'undici';

const PORT = Number(process.env.PORT);
const pools = (process.env.UPSTREAMS ?? '').split(',').filter(Boolean).map((u) => new Pool(u, { pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000 }));
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);
const RETRY_STATUS = new Set([502, 503, 504]);
const DEADLINE_MS = 15_000;
const PER_TRY_MS = 5_000;
const VIA = '1.1 mesh-floor';
const DUTIES = process.env.FLOOR_DUTIES || 'all';
if (DUTIES !== 'all' && DUTIES !== 'core') throw new Error(`FLOOR_DUTIES must be all or core, not ${JSON.stringify(DUTIES)}`);
const MESH_HEADERS = DUTIES === 'all';
const BUCKETS_MS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];
const histogram = new Float64Array(BUCKETS_MS.length + 1);
const byStatus = new Float64Array(600);
let rr = 0;

function upstreamHeaders(req, requestId, timeLeftMs) {
  const raw = req.rawHeaders;
  const out = [];
  if (!MESH_HEADERS) {
    for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
    return out;
  }
  let xff = null;
  let proto = false;
  let fwdHost = null;
  let host = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (HOP.has(name) || name === 'x-request-id' || name === 'x-request-timeout-ms') continue;
    if (name === 'x-forwarded-for') {
      xff = xff === null ? raw[i + 1] : `${xff}, ${raw[i + 1]}`;
      continue;
    }
    if (name === 'x-forwarded-proto') proto = true;
    else if (name === 'x-forwarded-host') fwdHost = raw[i + 1];
    else if (name === 'host') host = raw[i + 1];
    out.push(raw[i], raw[i + 1]);
  }
  const peer = req.socket.remoteAddress ?? '';
  out.push('x-forwarded-for', xff === null ? peer : `${xff}, ${peer}`);
  if (!proto) out.push('x-forwarded-proto', 'http');
  if (fwdHost === null) out.push('x-forwarded-host', host);
  out.push('via', VIA, 'x-request-id', requestId, 'x-request-timeout-ms', String(timeLeftMs));
  return out;
}

function responseHeaders(raw) {
  const out = [];
  let via = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1');
    const lower = name.toLowerCase();
    if (HOP.has(lower)) continue;
    const value = raw[i + 1].toString('latin1');
    if (lower === 'via') via = via === null ? value : `${via}, ${value}`;
    else out.push(name, value);
  }
  if (MESH_HEADERS) out.push('via', via === null ? VIA : `${via}, ${VIA}`);
  else if (via !== null) out.push('via', via);
  return out;
}

function record(status, startedAt) {
  byStatus[status]++;
  const ms = performance.now() - startedAt;
  let i = 0;
  while (i < BUCKETS_MS.length && ms > BUCKETS_MS[i]) i++;
  histogram[i]++;
}

/** One request: its deadline, and the tries sent for it. */
class Exchange {
  constructor(req, res) {
    this.req = req;
    this.res = res;
    this.startedAt = performance.now();
    const sent = req.headers['x-request-id'];
    this.requestId = !MESH_HEADERS ? '' : typeof sent === 'string' && sent.length > 0 && sent.length <= 200 ? sent : randomUUID();
    this.deadline = setTimeout(() => this.fail(504), DEADLINE_MS).unref();
    this.tries = 0;
    this.current = null;
  }

  send() {
    this.tries++;
    const pool = pools[rr];
    rr = (rr + 1) % pools.length;
    const left = Math.min(PER_TRY_MS, DEADLINE_MS - (performance.now() - this.startedAt));
    const req = this.req;
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    pool.dispatch({ path: req.url, method: req.method, headers: upstreamHeaders(req, this.requestId, Math.floor(left)), body: hasBody ? req : null }, (this.current = new Try(this, hasBody)));
  }

  fail(status) {
    clearTimeout(this.deadline);
    record(status, this.startedAt);
    const res = this.res;
    if (res.headersSent) return res.destroy();
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end();
  }
}

/** One try, in undici's own handler protocol (the one its `request` and `stream` use inside). */
class Try {
  constructor(ex, hasBody) {
    this.ex = ex;
    this.hasBody = hasBody;
    this.abort = null;
    this.withheld = false;
    this.timedOut = false;
    this.perTry = setTimeout(() => {
      this.timedOut = true;
      this.abort?.(new Error('per-try timeout'));
    }, PER_TRY_MS).unref();
  }

  onConnect(abort) {
    this.abort = abort;
  }

  onHeaders(statusCode, rawHeaders, resume) {
    if (statusCode < 200) return true;
    clearTimeout(this.perTry);
    const ex = this.ex;
    if (RETRY_STATUS.has(statusCode) && ex.tries === 1 && !this.hasBody) {
      this.withheld = true; // read out and dropped: the connection stays reusable
      return true;
    }
    clearTimeout(ex.deadline);
    record(statusCode, ex.startedAt);
    ex.res.writeHead(statusCode, responseHeaders(rawHeaders));
    this.resume = resume;
    return true;
  }

  onData(chunk) {
    if (this.withheld) return true;
    const res = this.ex.res;
    if (res.write(chunk)) return true;
    res.once('drain', this.resume);
    return false;
  }

  onComplete() {
    if (this.withheld) this.ex.send();
    else this.ex.res.end();
  }

  onError(err) {
    clearTimeout(this.perTry);
    const ex = this.ex;
    const retryable = this.timedOut || err.code === 'ECONNREFUSED' || err.code === 'UND_ERR_SOCKET';
    if (retryable && ex.tries === 1 && !ex.res.headersSent && !this.hasBody) return ex.send();
    ex.fail(this.timedOut ? 504 : 502);
  }
}

const server = http.createServer((req, res) => {
  const ex = new Exchange(req, res);
  // A client gone before its response ended takes its try with it.
  res.on('close', () => {
    if (res.writableFinished) return;
    clearTimeout(ex.deadline);
    ex.current?.abort?.(new Error('client closed'));
  });
  ex.send();
});
server.keepAliveTimeout = 75_000;
server.listen(PORT, '127.0.0.1', () => console.log(`mesh-floor listening on 127.0.0.1:${PORT}`));
process.on('SIGTERM', () => process.exit(0));

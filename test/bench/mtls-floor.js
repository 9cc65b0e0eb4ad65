#!/usr/bin/env node
// One side of the floor pair test/bench/mtls.sh measures beside two Pilotfish sidecars: the peers
// harness's bare undici forwarder (node:http server, an undici Pool, hop-by-hop fields dropped, no policy
// logic), able to listen on TLS requiring a client certificate (B) and to dial its upstream over TLS
// presenting one (A). mtls-floor ÷ plain-floor is what the TLS alone costs Node, with nothing of ours.
// Env: PORT, UPSTREAM (http:// or https:// origin); CERT, KEY, CA (PEM files) when LISTEN_TLS=1 (a TLS 1.3
// listener that requires a client certificate chained to CA) or when UPSTREAM is https:// (presented to
// it, its chain checked against CA).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Pool } from 'undici';

const env = process.env;
const pem = (name) => readFileSync(env[name] ?? '');
const upstream = env.UPSTREAM ?? '';
const tlsUp = upstream.startsWith('https:');
const pool = new Pool(upstream, {
  pipelining: 1,
  keepAliveTimeout: 60_000,
  keepAliveMaxTimeout: 600_000,
  // The chain is checked against CA; the name is not (the workload certificates carry a SPIFFE URI only).
  ...(tlsUp ? { connect: { cert: pem('CERT'), key: pem('KEY'), ca: pem('CA'), checkServerIdentity: () => undefined } } : {}),
});

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);
function requestHeaders(req) {
  const raw = req.rawHeaders;
  const out = [];
  for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  return out;
}
function responseHeaders(headers) {
  for (const h of HOP) delete headers[h];
  return headers;
}

function forward(req, res) {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.stream(
    { path: req.url, method: req.method, headers: requestHeaders(req), body: hasBody ? req : null, opaque: res },
    ({ statusCode, headers, opaque }) => {
      opaque.writeHead(statusCode, responseHeaders(headers));
      return opaque;
    },
    (err) => {
      if (!err) return;
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(String(err.code ?? 'bad gateway'));
      else res.destroy(err);
    },
  );
}

const server =
  env.LISTEN_TLS === '1'
    ? https.createServer({ cert: pem('CERT'), key: pem('KEY'), ca: pem('CA'), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, forward)
    : http.createServer(forward);
server.keepAliveTimeout = 75_000;
server.listen(Number(env.PORT), '127.0.0.1', () => console.log(`mtls-floor listening on 127.0.0.1:${env.PORT} → ${upstream}`));
process.on('SIGTERM', () => process.exit(0));

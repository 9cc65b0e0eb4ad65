/**
 * `npm start`: a working sidecar on a fresh machine. Starts small echo upstreams on the
 * ports `config/pilotfish.yaml` names, then Pilotfish on that policy, and prints requests
 * to try. Ctrl-C drains and stops everything.
 */
import http from 'node:http';
import { resolve } from 'node:path';
import { Pilotfish } from '../lib/app.js';

/** Demo upstreams: name → ports (must match config/pilotfish.yaml). */
const DEMO_UPSTREAMS: Readonly<Record<string, readonly number[]>> = {
  orders: [9001, 9002],
  users: [9003],
  catalog: [9101, 9102],
};

function echoServer(name: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.end('ok');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({ upstream: name, endpoint: `127.0.0.1:${port}`, method: req.method, path: req.url, headers: req.headers, bodyBytes: Buffer.concat(chunks).length }, null, 2);
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': `127.0.0.1:${port}` });
      res.end(body + '\n');
    });
  });
  return new Promise((done, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => done(server));
  });
}

const upstreams = await Promise.all(Object.entries(DEMO_UPSTREAMS).flatMap(([name, ports]) => ports.map((p) => echoServer(name, p))));
const app = await Pilotfish.start({ policyFile: resolve('config/pilotfish.yaml'), version: 'demo' });
const out = `127.0.0.1:${app.outboundAddress.port}`;
const admin = `127.0.0.1:${app.adminAddress.port}`;
process.stderr.write(`
Pilotfish is running on config/pilotfish.yaml with demo upstreams ${Object.keys(DEMO_UPSTREAMS).join(', ')}.
Try:
  curl -s -H 'Host: orders' http://${out}/hello                 # by Host header
  http_proxy=http://${out} curl -s http://orders/hello           # as an HTTP proxy
  curl -s http://${out}/users/42                                 # by path prefix (reaches users as /42)
  curl -s -H 'Host: catalog' -H 'x-canary: true' http://${out}/  # by header (file discovery)
  curl -si -H 'Host: nowhere' http://${out}/                     # 404 no_route, in the error format
  curl -s http://${admin}/metrics | grep pilotfish_requests_total
  curl -s http://${admin}/admin/upstreams
Edit config/pilotfish.yaml and it reloads; Ctrl-C drains and stops.
Access log (JSON lines) follows on stdout.

`);
const stop = (): void => {
  void app.shutdown().then(() => {
    for (const u of upstreams) u.close();
    process.exit(0);
  });
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);

/**
 * Real HTTP upstreams on 127.0.0.1 (port 0) for integration tests: an echo server by
 * default, any handler when a test needs a flaky, slow or broken one.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** A request the upstream saw. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly rawHeaders: string[];
}

/** A running test upstream. */
export interface TestUpstream {
  readonly port: number;
  /** `127.0.0.1:PORT`, as a policy names it. */
  readonly address: string;
  readonly seen: SeenRequest[];
  readonly server: http.Server;
  close(): Promise<void>;
}

/** Handler type for custom upstream behaviour. */
export type Handler = (req: IncomingMessage, res: ServerResponse, upstream: TestUpstream) => void;

/** Echoes the request as JSON: `{ port, method, url, headers }`. */
export const echo: Handler = (req, res, up) => {
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({ port: up.port, method: req.method, url: req.url, headers: req.headers });
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': up.address });
    res.end(body);
  });
};

/** Starts an upstream on 127.0.0.1:0. */
export async function startUpstream(handler: Handler = echo): Promise<TestUpstream> {
  const sockets = new Set<Socket>();
  const seen: SeenRequest[] = [];
  const server = http.createServer();
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const up: TestUpstream = {
    port,
    address: `127.0.0.1:${port}`,
    seen,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    handler(req, res, up);
  });
  return up;
}

/** A port on 127.0.0.1 with nothing listening (for connect failures). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

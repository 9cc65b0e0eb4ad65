/**
 * The HTTP/2 session side of the outbound listener, alone: real node:http2 clients over real
 * sockets into H2cSessions, each stream answered by the test in the pipeline's shape.
 */
import { once } from 'node:events';
import http2, { type ServerHttp2Stream } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { systemClock } from '../../lib/core/clock.js';
import { compileText } from '../../lib/policy/load.js';
import { H2cSessions } from '../../lib/server/h2c.js';

/** The policy's default limits. */
function defaultLimits() {
  const loaded = compileText('version: 1\nupstreams: {}\nroutes: []\n', '/p.yaml');
  if (!loaded.ok) throw new Error(`the minimal policy does not compile: ${JSON.stringify(loaded.issues)}`);
  return loaded.policy.limits;
}

t.test("a stream that closed keeps none of the proxy's listeners (they hold the request's exchange)", async (t) => {
  const streams: ServerHttp2Stream[] = [];
  const closed: Promise<unknown>[] = [];
  const sessions = new H2cSessions(defaultLimits(), systemClock, (req, res) => {
    streams.push(req.stream);
    closed.push(once(req.stream, 'close'));
    // What the pipeline hangs on a stream: a close watch, a drain wait, a body reader.
    res.on('close', () => {});
    res.once('drain', () => {});
    req.body.on('data', () => {});
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
  }, () => {});
  const server = net.createServer((socket) => sessions.accept(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on('error', () => {});
  t.teardown(() => {
    client.destroy();
    sessions.closeAll();
    server.close();
  });

  const req = client.request({ ':path': '/', ':method': 'GET' });
  let body = '';
  req.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
  const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  await once(req, 'end');
  t.equal(headers[':status'], 200);
  t.equal(body, 'ok');
  t.equal(streams.length, 1);
  await Promise.all(closed);
  await new Promise((resolve) => setImmediate(resolve));
  const stream = streams[0] as ServerHttp2Stream;
  t.same(stream.eventNames(), ['error'], 'only an error sink is left');
  t.equal(stream.listenerCount('error'), 1);
});

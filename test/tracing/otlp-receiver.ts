/**
 * A real OTLP/HTTP trace receiver for tests: an HTTP server on 127.0.0.1:0 taking
 * `POST /v1/traces` with JSON bodies (ExportTraceServiceRequest, opentelemetry-proto's JSON
 * mapping), keeping every span it received with its resource's attributes, decoded.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** An attribute value as OTLP JSON carries it. */
interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}

/** A span as received, attributes decoded to plain values. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  readonly name: string;
  readonly kind: number;
  readonly startTimeUnixNano: string;
  readonly endTimeUnixNano: string;
  readonly attributes: Record<string, string | number | boolean>;
  readonly status: { code?: number; message?: string };
  readonly resource: Record<string, string | number | boolean>;
  readonly scope: { name?: string; version?: string };
}

/** A running receiver. */
export interface OtlpReceiver {
  /** `http://127.0.0.1:PORT/v1/traces`. */
  readonly endpoint: string;
  readonly spans: ReceivedSpan[];
  /** Export requests received (each a batch), with the content type they came with. */
  readonly requests: { contentType: string | undefined; headers: http.IncomingHttpHeaders }[];
  /** The spans of one trace. */
  trace(traceId: string): ReceivedSpan[];
  close(): Promise<void>;
}

function decode(v: AnyValue): string | number | boolean {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  throw new Error(`unexpected attribute value ${JSON.stringify(v)}`);
}

function attributes(list: { key: string; value: AnyValue }[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((list ?? []).map((a) => [a.key, decode(a.value)]));
}

interface ExportBody {
  resourceSpans: {
    resource?: { attributes?: { key: string; value: AnyValue }[] };
    scopeSpans: {
      scope?: { name?: string; version?: string };
      spans: (Omit<ReceivedSpan, 'attributes' | 'resource' | 'scope' | 'status'> & { attributes?: { key: string; value: AnyValue }[]; status?: ReceivedSpan['status'] })[];
    }[];
  }[];
}

/** Starts a receiver; `answer` may replace the 200 (e.g. to make the collector fail). */
export async function startOtlpReceiver(answer: (res: http.ServerResponse) => void = (res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}')): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const requests: OtlpReceiver['requests'] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      requests.push({ contentType: req.headers['content-type'], headers: req.headers });
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ExportBody;
      for (const rs of body.resourceSpans) {
        const resource = attributes(rs.resource?.attributes);
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) spans.push({ ...s, attributes: attributes(s.attributes), status: s.status ?? {}, resource, scope: ss.scope ?? {} });
        }
      }
      answer(res);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    requests,
    trace: (traceId) => spans.filter((s) => s.traceId === traceId),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

/** Plain HTTP/2 (prior knowledge) clients for tests: node:http2, one session per test. */
import http2, { type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import type { Test } from 'tap';

/** A session to `url`, destroyed when `t` ends; its errors are the test's to observe, not to throw. */
export function h2Session(url: string, t: Test): ClientHttp2Session {
  const session = http2.connect(url);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  return session;
}

/** One exchange's answer. */
export interface H2Answer {
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** True when the response head itself ended the stream (a trailers-only response). */
  readonly headOnly: boolean;
}

/** Sends one request (`body` written in `parts`, each after a short pause) and reads its answer. */
export function h2Exchange(session: ClientHttp2Session, headers: Record<string, string>, parts?: readonly string[]): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: parts === undefined });
    let head: IncomingHttpHeaders = {};
    let headOnly = false;
    let text = '';
    stream.on('response', (h, flags) => {
      head = h;
      headOnly = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => (text += chunk));
    stream.on('end', () => resolve({ headers: head, body: text, headOnly }));
    stream.on('error', reject);
    if (parts === undefined) return;
    const send = (i: number): void => {
      if (i === parts.length - 1) stream.end(parts[i]);
      else {
        stream.write(parts[i]);
        setTimeout(send, 20, i + 1);
      }
    };
    if (parts.length === 0) stream.end();
    else send(0);
  });
}

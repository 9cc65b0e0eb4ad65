/**
 * WebSocket (RFC 6455) pieces for tests, without a WebSocket library: a minimal echo server
 * for an upstream's 'upgrade' event (and an upstream running it), and the client side over a
 * raw connection (the handshake's bytes, masked frames, reading frames back).
 */
import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RawConnection } from './raw-http.js';
import { echo, startUpstream, type Handler, type TestUpstream } from './upstream.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
export function acceptFor(key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

function frameHead(opcode: number, len: number, masked: boolean): Buffer {
  const maskBit = masked ? 0x80 : 0;
  if (len < 126) return Buffer.from([0x80 | opcode, maskBit | len]);
  if (len < 65_536) {
    const head = Buffer.alloc(4);
    head[0] = 0x80 | opcode;
    head[1] = maskBit | 126;
    head.writeUInt16BE(len, 2);
    return head;
  }
  const head = Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  head[1] = maskBit | 127;
  head.writeBigUInt64BE(BigInt(len), 2);
  return head;
}

/** One final unmasked frame, as a server sends it. */
export function serverFrame(opcode: number, payload: Buffer): Buffer {
  return Buffer.concat([frameHead(opcode, payload.length, false), payload]);
}

/** One final masked frame, as a client must send it. */
export function clientFrame(opcode: number, payload: Buffer | string): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const mask = randomBytes(4);
  const masked = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) masked[i] = data[i]! ^ mask[i % 4]!;
  return Buffer.concat([frameHead(opcode, data.length, true), mask, masked]);
}

/** A decoded frame. */
export interface Frame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly masked: boolean;
  /** Unmasked. */
  readonly payload: Buffer;
}

/** Parses one frame from the start of `buf`, or null when more bytes are needed. */
export function parseFrame(buf: Buffer): { value: Frame; consumed: number } | null {
  if (buf.length < 2) return null;
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  const masked = (b1 & 0x80) !== 0;
  let len = b1 & 0x7f;
  let offset = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    offset = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  const maskAt = offset;
  if (masked) offset += 4;
  if (buf.length < offset + len) return null;
  const payload = Buffer.from(buf.subarray(offset, offset + len));
  if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= buf[maskAt + (i % 4)]!;
  return { value: { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, masked, payload }, consumed: offset + len };
}

/** The bytes of a WebSocket opening handshake for `path` on `host`, plus any extra fields. */
export function wsHandshake(path: string, host: string, extra: Record<string, string> = {}): string {
  const fields: Record<string, string> = {
    Host: host,
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...extra,
  };
  let text = `GET ${path} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(fields)) text += `${name}: ${value}\r\n`;
  return `${text}\r\n`;
}

/** Sends a masked text message on an open WebSocket and resolves with the text of the next frame back. */
export async function wsEcho(conn: RawConnection, text: string, timeoutMs = 3_000): Promise<string> {
  conn.write(clientFrame(0x1, text));
  const frame = await conn.take('a WebSocket frame', (buf) => parseFrame(buf), timeoutMs);
  return frame.payload.toString('utf8');
}

/** What the WebSocket upstream saw of one connection. */
export interface WsSeen {
  url: string;
  headers: http.IncomingHttpHeaders;
  /** Text messages received (after unmasking). */
  messages: string[];
  /** True if a client frame arrived unmasked (a protocol violation the proxy must not introduce). */
  unmasked: boolean;
  /** The upstream received a close frame. */
  closed: boolean;
}

/**
 * A minimal WebSocket echo server for an upstream's 'upgrade' event: answers the handshake,
 * decodes masked client frames and echoes text frames back unmasked; answers ping and close,
 * and closes its side when the client ends the connection.
 * `/ws/forbidden` is refused with a 403; anything but a WebSocket handshake with a 400.
 */
export function serveWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, seen: WsSeen[]): void {
  socket.on('error', () => {});
  if (req.url?.startsWith('/ws/forbidden')) {
    const body = 'not for you';
    socket.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
    return;
  }
  const key = req.headers['sec-websocket-key'];
  if (req.headers.upgrade?.toLowerCase() !== 'websocket' || typeof key !== 'string') {
    socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const conn: WsSeen = { url: req.url ?? '', headers: req.headers, messages: [], unmasked: false, closed: false };
  seen.push(conn);
  socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n' + `sec-websocket-accept: ${acceptFor(key)}\r\n\r\n`);
  let buf: Buffer = head.length > 0 ? Buffer.from(head) : Buffer.alloc(0);
  const parse = (): void => {
    for (;;) {
      const got = parseFrame(buf);
      if (got === null) return;
      buf = buf.subarray(got.consumed);
      const { opcode, payload, masked } = got.value;
      if (!masked) conn.unmasked = true;
      if (opcode === 0x1) {
        conn.messages.push(payload.toString('utf8'));
        socket.write(serverFrame(0x1, payload));
      } else if (opcode === 0x9) {
        socket.write(serverFrame(0xa, payload));
      } else if (opcode === 0x8) {
        conn.closed = true;
        socket.end(serverFrame(0x8, payload.subarray(0, 2)));
        return;
      }
    }
  };
  socket.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    parse();
  });
  // The client went away without a close frame: close too, as WebSocket servers do.
  socket.on('end', () => socket.end());
  parse();
}

/** A test upstream that also serves WebSocket echo on its 'upgrade' event. */
export interface WebSocketUpstream extends TestUpstream {
  /** Every WebSocket connection it accepted, in order. */
  readonly websockets: WsSeen[];
}

/**
 * Starts an upstream on 127.0.0.1:0 whose plain requests go to `handler` (echo by default) and
 * whose upgrades go to `serveWebSocket`, unless `special` takes them first (returns true).
 */
export async function startWebSocketUpstream(
  options: { handler?: Handler; special?: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean } = {},
): Promise<WebSocketUpstream> {
  const websockets: WsSeen[] = [];
  const up = await startUpstream(options.handler ?? echo);
  up.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    if (options.special?.(req, socket, head)) return;
    serveWebSocket(req, socket, head, websockets);
  });
  return Object.assign(up, { websockets });
}

/**
 * Operational log (reloads, discovery, shutdown): JSON lines on stderr, apart from the access log.
 * Lines pass through the same redaction as /admin: a rejected policy or a failing etcd source must
 * not print the credentials in its URLs to wherever stderr is collected.
 */
import { redactSecrets, redactText } from './redact.js';

/** Severity of an operational message. */
export type Level = 'debug' | 'info' | 'warn' | 'error';

/** Where operational messages go. */
export interface Logger {
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
}

/** Writes JSON lines to a stream (stderr by default). */
export function jsonLogger(out: NodeJS.WritableStream = process.stderr, wallNow: () => number): Logger {
  return {
    log(level, msg, fields) {
      const shown = fields === undefined ? undefined : (redactSecrets(fields) as Record<string, unknown>);
      out.write(JSON.stringify({ time: new Date(wallNow()).toISOString(), level, msg: redactText(msg), ...shown }) + '\n');
    },
  };
}

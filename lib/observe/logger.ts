/**
 * Operational log (reloads, discovery, shutdown): JSON lines on stderr, apart from the access log.
 * Lines pass through the same redaction as /admin: a rejected policy or a failing etcd source must
 * not print the credentials in its URLs to wherever stderr is collected.
 */
import { redactSecrets, redactText } from './redact.js';

/** Severity of an operational message. */
export type Level = 'debug' | 'info' | 'warn' | 'error';

/** The levels, least severe first. */
export const LEVELS: readonly Level[] = Object.freeze(['debug', 'info', 'warn', 'error']);

const RANK: Readonly<Record<Level, number>> = Object.freeze({ debug: 0, info: 1, warn: 2, error: 3 });

/** The level a flag or variable names (`debug`, `info`, `warn`, `error`, any case), else null. */
export function parseLevel(text: string | undefined): Level | null {
  const level = text?.trim().toLowerCase();
  return level !== undefined && Object.hasOwn(RANK, level) ? (level as Level) : null;
}

/** Where operational messages go. */
export interface Logger {
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Writes JSON lines to a stream (stderr by default), those below `minLevel` not at all: a
 * message filtered out returns before anything is redacted, formatted or dated.
 */
export function jsonLogger(out: NodeJS.WritableStream = process.stderr, wallNow: () => number, minLevel: Level = 'info'): Logger {
  const min = RANK[minLevel];
  return {
    log(level, msg, fields) {
      if (RANK[level] < min) return;
      const shown = fields === undefined ? undefined : (redactSecrets(fields) as Record<string, unknown>);
      out.write(JSON.stringify({ time: new Date(wallNow()).toISOString(), level, msg: redactText(msg), ...shown }) + '\n');
    },
  };
}

/** Operational log (reloads, discovery, shutdown): JSON lines on stderr, apart from the access log. */

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
      out.write(JSON.stringify({ time: new Date(wallNow()).toISOString(), level, msg, ...fields }) + '\n');
    },
  };
}

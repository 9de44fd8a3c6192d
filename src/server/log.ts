import pino, { type DestinationStream } from 'pino';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Field paths that are censored whatever a call site passes. Nothing should
 * ever log a session token or the admin token (tokens are hashed before they
 * reach storage, the start-up line uses redactedConfig); this is the second
 * line of defence. fast-redact's `*` matches one level, hence the repetition.
 */
export const REDACTED_PATHS = [
  'token', '*.token', '*.*.token',
  'adminToken', '*.adminToken', '*.*.adminToken', '*.*.*.adminToken',
  'authorization', '*.authorization', '*.*.authorization',
  'password', '*.password', '*.*.password',
];

export const REDACTED = '[redacted]';

/**
 * Structured JSON logs through pino, one object per line:
 * `{"level":"info","time":"<ISO 8601>","pid":1,"hostname":"h","msg":"serving","address":...}`.
 * `msg` comes before the call's fields, so a line reads (and greps) from its
 * message. Errors under any key are serialized with their type, message,
 * stack, code and cause. Writes are synchronous, so that every line is out
 * before process.exit.
 * @param write receives each line (with its newline) synchronously instead of
 *   stderr: for tests that capture the log.
 */
export function createLogger(level: LogLevel, write?: (line: string) => void): Logger {
  const destination: DestinationStream = write ? { write } : pino.destination({ fd: 2, sync: true });
  const p = pino(
    {
      level,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACTED_PATHS, censor: REDACTED },
      serializers: { err: pino.stdSerializers.errWithCause },
    },
    destination,
  );
  // The message goes in the object, ahead of the fields: pino would otherwise
  // append it last. Field values that are errors get pino's error serializer
  // (which pino itself only applies to the `err` key).
  const emit = (lvl: 'debug' | 'info' | 'warn' | 'error') => (msg: string, fields?: Record<string, unknown>) => {
    if (!p.isLevelEnabled(lvl)) return;
    p[lvl](fields ? { msg, ...serializeErrors(fields) } : { msg });
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

function serializeErrors(fields: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const [key, value] of Object.entries(fields)) {
    if (key !== 'err' && value instanceof Error) {
      out ??= { ...fields };
      out[key] = pino.stdSerializers.errWithCause(value);
    }
  }
  return out ?? fields;
}

export const silentLogger: Logger = createLogger('silent');

/** A start-up that failed: logged, and said once more on stderr in a line of its own, for an operator without a log reader. */
export function reportStartupFailure(log: Logger, err: unknown): void {
  log.error('start-up failed', { err });
  process.stderr.write(`sessiond: ${err instanceof Error ? err.message : String(err)}\n`);
}

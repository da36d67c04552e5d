import pino, { type Logger } from 'pino';

export type { Logger };

// JSON lines on stdout (journald and any log shipper read them as they are). Redaction is a
// second line of defence: request logging never passes headers or bodies in the first place.
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'strata' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'headers.authorization'], censor: '[redacted]' },
    },
    destination ?? pino.destination({ sync: false }),
  );
}

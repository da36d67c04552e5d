// The typed errors every engine throws. The HTTP layer maps them to a status and
// `{error:{code,message}}` in exactly one place (src/daemon/http-error.ts); engines never
// know about HTTP. Each class carries the API.md error code so the mapping is a lookup.

export type ErrorCode =
  | 'invalid_input'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'payload_too_large'
  | 'quota_exceeded'
  | 'rate_limited'
  | 'read_only_replica'
  | 'log_pruned'
  | 'unavailable'
  | 'insufficient_storage'
  | 'internal';

export class StrataError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

export class InvalidInput extends StrataError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('invalid_input', message, details);
  }
}

export class Unauthorized extends StrataError {
  constructor(message = 'a valid bearer token is required') {
    super('unauthorized', message);
  }
}

export class Forbidden extends StrataError {
  constructor(message = 'this token does not allow that') {
    super('forbidden', message);
  }
}

export class NotFound extends StrataError {
  constructor(message: string) {
    super('not_found', message);
  }
}

export class Conflict extends StrataError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('conflict', message, details);
  }
}

export class PayloadTooLarge extends StrataError {
  constructor(limitBytes: number) {
    super('payload_too_large', `the request body is larger than the limit of ${limitBytes} bytes`, {
      limit_bytes: limitBytes,
    });
  }
}

export class QuotaExceeded extends StrataError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('quota_exceeded', message, details);
  }
}

export class RateLimited extends StrataError {
  constructor(retryAfterSeconds: number) {
    super('rate_limited', `too many requests for this token; retry in ${retryAfterSeconds} s`, { retry_after_seconds: retryAfterSeconds });
  }
}

export class ReadOnlyReplica extends StrataError {
  constructor(primary: string) {
    super('read_only_replica', `this node is a read-only replica; send writes to the primary at ${primary}`, {
      primary,
    });
  }
}

/** A change-log position older than what the primary still keeps: the replica must bootstrap. */
export class LogPruned extends StrataError {
  constructor(after: number, oldest: number) {
    super('log_pruned', `the change log no longer holds records after LSN ${after} (oldest kept: ${oldest}); bootstrap from a snapshot`, { after, oldest });
  }
}

export class Unavailable extends StrataError {
  constructor(message: string) {
    super('unavailable', message);
  }
}

/**
 * The disk (or the object store) is full. The write that hit it left nothing behind; reads go
 * on, and writes succeed again once space is freed.
 */
export class InsufficientStorage extends StrataError {
  constructor(where: string) {
    super('insufficient_storage', `no space left on ${where}; nothing was written. Free space (or raise the quota) and retry`);
  }
}

/**
 * Bytes the metadata says exist are gone from the object tier (deleted behind Strata's back,
 * a lost disk): data loss, which the operator must hear about, not a client's 404.
 */
export class ObjectMissing extends StrataError {
  constructor(what: string, tier: string) {
    super('internal', `the stored bytes of ${what} are missing from the ${tier} object tier; the operator has been alerted`);
  }
}

/** Whether an error from a file system, SQLite or an S3 server means "out of space". */
export function isOutOfSpace(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL' || code === 'XMinioStorageFull';
}

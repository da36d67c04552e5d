import { Conflict, InvalidInput, NotFound } from '../../../engines/errors.js';
import type { ModelUploads, UploadKind, UploadSession, UploadSink } from '../../../engines/models/model-uploads.js';
import type { Actor } from '../../../engines/sql/writer.js';
import { S3Error } from './s3-error.js';
import type { PartBody, S3Multipart, S3Object } from './s3-bucket.js';

// S3 multipart uploads for any bucket over the store's upload sessions (model-uploads.ts). A
// bucket says where a key's upload goes, what must hold before one starts, and how a finished
// upload is kept; the sessions, parts and joining are the same for models, checkpoints and
// dataset raw files.

export interface MultipartRules {
  kind: UploadKind;
  /** The key's owner (model, run, dataset), version (or step, or '') and path; an S3Error for a key no upload can have. */
  target(key: string): { owner: string; version: string; path: string };
  /**
   * Checks, or makes, what must exist before a session opens (an open version, a dataset), and
   * may name the version to record (the models bucket resolves an alias to its version).
   */
  begin?(actor: Actor, key: string): Promise<string | void>;
  /** Whether the key still names the session's destination (the models bucket resolves aliases). */
  same?(key: string, session: UploadSession): boolean;
  /** How the finished upload is kept (default: as the session's kind does — models only). */
  sink?(key: string, etag: string): UploadSink;
  /** The ETag the object will show afterwards, when it is not the multipart one (datasets keep the SHA-256). */
  etag?(sha256: string): string;
  /** Added to a refusal for a Conflict (models: finalized versions are read-only). */
  conflictHint?: string;
}


export function multipart(uploads: ModelUploads, rules: MultipartRules): S3Multipart {
  const refusals = <T>(run: () => Promise<T>) => storeErrors(run, (m) => (rules.conflictHint ? `${m}. ${rules.conflictHint}` : m));
  /** The key's target, checked against the session: a key that names another destination has no such upload. */
  const session = (key: string, uploadId: string) => {
    const t = rules.target(key);
    const s = uploads.find(uploadId);
    if (!s || s.kind !== rules.kind || s.model !== t.owner || s.path !== t.path || !(rules.same ? rules.same(key, s) : s.version === t.version)) {
      throw new S3Error('NoSuchUpload', 'The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.');
    }
    return { kind: rules.kind, owner: t.owner, path: t.path };
  };
  return {
    async startMultipart(actor, key) {
      const t = rules.target(key);
      const version = await refusals(async () => (await rules.begin?.(actor, key)) ?? t.version);
      return refusals(() => uploads.open(actor, { kind: rules.kind, owner: t.owner, path: t.path }, version));
    },
    putPart(actor, key, uploadId, part, body, p: PartBody) {
      const where = session(key, uploadId);
      return refusals(() => uploads.putPart(actor, where, uploadId, part, body, p));
    },
    async listParts(key, uploadId) {
      const where = session(key, uploadId);
      return (await refusals(() => uploads.listParts(where, uploadId))).parts;
    },
    async completeMultipart(actor, key, uploadId, parts, etag): Promise<S3Object> {
      const where = session(key, uploadId);
      const f = await refusals(() => uploads.complete(actor, where, uploadId, undefined, { parts, etag }, rules.sink?.(key, etag)));
      return { key, size: f.size, etag: rules.etag ? rules.etag(f.sha256) : etag, lastModified: new Date().toISOString() };
    },
    completedUpload(key, uploadId) {
      // A retry of a completion that already succeeded (its answer was lost): S3 answers it again.
      const t = rules.target(key);
      const done = uploads.recent({ kind: rules.kind, owner: t.owner, path: t.path }, uploadId);
      if (!done) return undefined;
      return { key, size: done.entry.size, etag: rules.etag ? rules.etag(done.entry.sha256) : (done.etag ?? done.entry.sha256), lastModified: new Date().toISOString() };
    },
    async abortMultipart(actor, key, uploadId) {
      const where = session(key, uploadId);
      await refusals(() => uploads.abort(actor, where, uploadId));
    },
  };
}

/**
 * The stores' refusals as S3 errors, for every bucket: a final version or an immutable file
 * (Conflict), a wrong sha256, an unknown upload, a missing part, a bad name.
 */
export async function storeErrors<T>(run: () => Promise<T>, conflict = (message: string) => message): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof S3Error) throw err;
    if (err instanceof Conflict) throw new S3Error('AccessDenied', conflict(err.message));
    if (err instanceof NotFound && /upload/.test(err.message)) throw new S3Error('NoSuchUpload', 'The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.');
    if (err instanceof InvalidInput && /sha256/i.test(err.message)) throw new S3Error('XAmzContentSHA256Mismatch', 'The provided x-amz-content-sha256 header does not match what was computed.');
    if (err instanceof InvalidInput && /has no part/.test(err.message)) throw new S3Error('InvalidPart', err.message);
    if (err instanceof InvalidInput) throw new S3Error('InvalidArgument', err.message);
    throw err;
  }
}

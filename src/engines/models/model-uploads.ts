import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import type { ObjectStore, PutResult } from '../objects/object-store.js';
import type { SqlDatabase } from '../sql/database.js';
import type { Actor, Tx, Writer } from '../sql/writer.js';
import type { BlobWriter, StoredBlob } from './blob-writer.js';
import type { ModelChanges } from './model-changes.js';
import { checkFilePath, checkSha, type FileEntry, type VersionRow } from './model-schema.js';

// Resumable uploads, in the manner of S3 multipart (and S3's CreateMultipartUpload … rides on
// them): a session per file, parts sent in any order, a dropped part simply sent again, and a
// completion that turns the parts into one content-addressed blob before the file row commits.
//
// Where parts live. Joining parts by reading them back and writing one blob wrote every byte
// twice and capped S3 multipart uploads at 0.38 of a native upload (issue 17). Clients cut a
// file into parts of one size, all but the last, so where the object tier can write a file in
// place (fs: `slots`) the first part to arrive with a known length fixes the upload's stripe,
// and part N is written at (N-1) × stripe of one assembly file. Completing parts 1..k that all
// sit in their slots (each a full stripe but the last) hashes the file and renames it into
// place. Anything else — a part re-sent while its slot is recorded, a part longer than the
// stripe, a body of unknown length, gaps, an S3 object tier, an encrypted tier — is stored as
// its own object, and completion joins by copying, as before.
//
// Invariants. A part row names only verified bytes: a slot is written only while no row and no
// other writer claims it, and its row commits after the bytes are durable. The assembly is
// sealed only when no slot write of that upload is in flight and none can start, because a
// writer's open file would follow the rename into the blob.

/** Parts shorter than this never fix a stripe (S3's minimum part size). */
const MIN_STRIPE = 5 * 1024 * 1024;
/** Slots end below this offset (a sparse file far past any real model is refused by ext4 anyway). */
const MAX_ASSEMBLY = 2 ** 40;

/** What an upload becomes: a model file, a checkpoint file, or a dataset's raw file. */
export type UploadKind = 'model' | 'checkpoint' | 'dataset';

/**
 * Which upload a request means: its kind, owner (model, run or dataset) and path. A session is
 * found only under all three, so an id cannot complete into another kind's store.
 */
export interface UploadTarget {
  kind: UploadKind;
  owner: string;
  path: string;
}

export interface UploadSession {
  id: string;
  kind: UploadKind;
  /** The model, run or dataset. */
  model: string;
  /** The model's version, or the checkpoint's step (decimal); '' for a dataset. */
  version: string;
  path: string;
  stripe: number | null;
}

/**
 * How a completed upload is kept: recorded as a content-addressed blob in the completing
 * transaction (models, checkpoints), or streamed into another store (dataset raw files).
 */
export type UploadSink =
  | { record(tx: Tx, blob: StoredBlob, session: UploadSession): void }
  | {
      /** `inCommit` runs in the store's own write transaction: it ends the session there, or refuses. */
      consume(actor: Actor, body: AsyncIterable<Uint8Array>, session: UploadSession, inCommit: (tx: Tx, stored: { size: number; sha256: string }) => void): Promise<{ size: number; sha256: string }>;
    };

export interface StoredPart {
  part: number;
  size: number;
  sha256: string;
  /** Hex MD5 of the part (S3 parts; null for native ones). */
  md5: string | null;
}

type PartRow = StoredPart & { key: string; offset: number };

export class ModelUploads {
  /** `${uploadId}/${part}` slots being written now. */
  private readonly claims = new Set<string>();
  /** Stripes claimed by a slot write whose row has not committed yet. */
  private readonly stripes = new Map<string, number>();
  /** Uploads whose assembly is being sealed: no slot write may start. */
  private readonly sealing = new Set<string>();
  /**
   * Completions running, by upload id. A second completion of the same upload (an SDK retrying
   * after a read timeout while a large file is hashed) waits for the first and gets its answer:
   * both sealing the one assembly destroyed the upload (review).
   */
  private readonly completing = new Map<string, Promise<FileEntry>>();
  /** Uploads completed lately, for a retry that arrives once the session has ended (S3 answers it 200). */
  private readonly completed = new LRUCache<string, { target: string; entry: FileEntry; etag?: string }>({ max: 1000, ttl: 15 * 60_000 });

  constructor(
    private readonly db: SqlDatabase,
    private readonly writer: Writer,
    private readonly changes: ModelChanges,
    private readonly store: ObjectStore,
    private readonly blobs: BlobWriter,
    private readonly files: {
      /** The version, which must be open (Conflict otherwise). */
      openVersion(model: string, versionOrAlias: string): VersionRow;
      /** Records a file in a write transaction (the version must still be open). */
      record(tx: Tx, model: string, version: string, path: string, blob: StoredBlob, etag?: string): void;
    },
  ) {}

  /** A model file's upload: the version must be open now (and still be when it completes). */
  async start(actor: Actor, model: string, versionOrAlias: string, path: string): Promise<{ upload_id: string; version: string; path: string }> {
    checkFilePath(path);
    const v = this.files.openVersion(model, versionOrAlias);
    return { upload_id: await this.open(actor, { kind: 'model', owner: model, path }, v.version), version: v.version, path };
  }

  /** Opens a session for a target the caller has checked; returns its id. */
  async open(actor: Actor, target: UploadTarget, version: string): Promise<string> {
    checkFilePath(target.path);
    const id = randomUUID();
    await this.writer.write(actor, (tx) => {
      tx.apply(this.changes.uploadStarted, { id, model: target.owner, version, path: target.path, created_at: new Date().toISOString(), kind: target.kind });
      tx.audit(`${target.kind === 'model' ? 'models' : `${target.kind}s`}.start_upload`, describe(target, version), { upload_id: id });
    });
    return id;
  }

  /** The session, or undefined (S3 checks the key's version against it). */
  find(id: string): UploadSession | undefined {
    return this.db.prepare<UploadSession>('SELECT id, kind, model, version, path, stripe FROM model_uploads WHERE id = ?').get(id);
  }

  private session(id: string, t: UploadTarget): UploadSession {
    const u = this.find(id);
    if (!u || u.kind !== t.kind || u.model !== t.owner || u.path !== t.path) throw new NotFound(`upload ${id} does not exist for ${t.owner}/${t.path}`);
    return u;
  }

  private rows(id: string): PartRow[] {
    return this.db.prepare<PartRow>('SELECT part, size, sha256, md5, key, offset FROM model_upload_parts WHERE upload_id = ? ORDER BY part').all(id);
  }

  /**
   * Stores one part. `length`, when the request declared it, lets the part go straight into its
   * slot; `md5` is read once the body is consumed (the S3 endpoint hashes it as the body
   * streams) and kept as the part's ETag.
   */
  async putPart(
    actor: Actor,
    target: UploadTarget,
    uploadId: string,
    part: number,
    body: AsyncIterable<Uint8Array>,
    options: { expectedSha256?: string | undefined; length?: number | undefined; md5?: (() => string | undefined) | undefined } = {},
  ): Promise<{ part: number; size: number; sha256: string }> {
    if (!Number.isInteger(part) || part < 1 || part > 10_000) throw new InvalidInput('part must be an integer from 1 to 10000');
    checkSha(options.expectedSha256);
    const u = this.session(uploadId, target);
    const slot = this.claimSlot(u, part, options.length);
    let put: PutResult | undefined;
    let offset = 0;
    try {
      const opts = options.expectedSha256 ? { expectedSha256: options.expectedSha256 } : {};
      if (slot) {
        offset = slot.offset;
        put = await this.store.slots!.writeAt(assemblyKey(uploadId), slot.offset, slot.stripe, body, opts);
      } else {
        put = await this.store.put(`uploads/${uploadId}/${String(part).padStart(5, '0')}-${randomUUID().slice(0, 8)}`, body, opts);
      }
      const stored = put;
      const replaced = await this.writer.write(actor, (tx) => {
        // Ended meanwhile (aborted, completed, expired): nothing to record, and the bytes go.
        if (!this.find(uploadId)) throw new NotFound(`upload ${uploadId} does not exist for ${target.owner}/${target.path}: aborted or completed meanwhile`);
        const before = this.db.prepare<{ key: string }>('SELECT key FROM model_upload_parts WHERE upload_id = ? AND part = ?').get(uploadId, part);
        tx.apply(this.changes.partPut, {
          upload_id: uploadId,
          part,
          size: stored.size,
          sha256: stored.sha256,
          md5: options.md5?.() ?? null,
          key: stored.key,
          offset,
          now: new Date().toISOString(),
          ...(slot && u.stripe === null ? { stripe: slot.stripe } : {}),
        });
        return before && before.key !== stored.key && before.key !== assemblyKey(uploadId) ? before.key : undefined;
      });
      if (replaced) await this.store.delete(replaced).catch(() => undefined);
    } catch (err) {
      if (!slot && put) await this.store.delete(put.key).catch(() => undefined);
      throw err;
    } finally {
      if (slot) {
        this.claims.delete(`${uploadId}/${part}`);
        if (this.find(uploadId)?.stripe != null) this.stripes.delete(uploadId);
      }
    }
    return { part, size: put.size, sha256: put.sha256 };
  }

  /** A slot for this part, claimed, or undefined when the part must be stored on its own. */
  private claimSlot(u: UploadSession, part: number, length: number | undefined): { offset: number; stripe: number } | undefined {
    if (!this.store.slots || length === undefined || this.sealing.has(u.id)) return undefined;
    const claim = `${u.id}/${part}`;
    if (this.claims.has(claim)) return undefined;
    if (this.db.prepare('SELECT 1 FROM model_upload_parts WHERE upload_id = ? AND part = ?').get(u.id, part)) return undefined;
    let stripe = u.stripe ?? this.stripes.get(u.id);
    if (stripe === undefined) {
      if (length < MIN_STRIPE) return undefined;
      stripe = length;
      this.stripes.set(u.id, stripe);
    }
    if (length > stripe || part * stripe > MAX_ASSEMBLY) return undefined;
    this.claims.add(claim);
    return { offset: (part - 1) * stripe, stripe };
  }

  async listParts(target: UploadTarget, uploadId: string): Promise<{ upload_id: string; parts: StoredPart[] }> {
    this.session(uploadId, target);
    return { upload_id: uploadId, parts: this.rows(uploadId).map(({ part, size, sha256, md5 }) => ({ part, size, sha256, md5 })) };
  }

  /**
   * Turns the parts into the file. Native: every part, numbered 1..N. S3 (CompleteMultipartUpload):
   * the parts listed (ascending; others are dropped) and the ETag to record. `sink` keeps the
   * result; a model upload's default records the file in the session's version.
   */
  async complete(actor: Actor, target: UploadTarget, uploadId: string, expectedSha256?: string, s3?: { parts: number[]; etag: string }, sink?: UploadSink): Promise<FileEntry> {
    checkSha(expectedSha256);
    const running = this.completing.get(uploadId);
    if (running) {
      try {
        return await running;
      } catch {
        // The first one failed: this one tries for itself.
      }
    }
    const attempt = this.completeOnce(actor, target, uploadId, expectedSha256, s3, sink);
    this.completing.set(uploadId, attempt);
    try {
      const entry = await attempt;
      this.completed.set(uploadId, { target: targetKey(target), entry, ...(s3 ? { etag: s3.etag } : {}) });
      return entry;
    } finally {
      if (this.completing.get(uploadId) === attempt) this.completing.delete(uploadId);
    }
  }

  /** What a completion of this upload gave, when one finished lately for the same target. */
  recent(target: UploadTarget, uploadId: string): { entry: FileEntry; etag?: string } | undefined {
    const done = this.completed.get(uploadId);
    return done && done.target === targetKey(target) ? done : undefined;
  }

  private async completeOnce(actor: Actor, target: UploadTarget, uploadId: string, expectedSha256: string | undefined, s3: { parts: number[]; etag: string } | undefined, sink: UploadSink | undefined): Promise<FileEntry> {
    const u = this.session(uploadId, target);
    const { owner: model, path } = target;
    const keep: UploadSink = sink ?? { record: (tx, b) => this.files.record(tx, model, u.version, path, b, s3?.etag) };
    const stored = this.rows(uploadId);
    let parts = stored;
    if (s3) {
      const have = new Map(stored.map((p) => [p.part, p]));
      parts = s3.parts.map((n) => {
        const p = have.get(n);
        if (!p) throw new InvalidInput(`upload ${uploadId} has no part ${n}`);
        return p;
      });
    } else {
      parts.forEach((p, i) => {
        if (p.part !== i + 1) throw new InvalidInput(`upload ${uploadId} is missing part ${i + 1}`);
      });
    }
    if (parts.length === 0) throw new InvalidInput(`upload ${uploadId} has no parts`);
    const total = parts.reduce((n, p) => n + p.size, 0);
    const assembly = assemblyKey(uploadId);
    const inPlace =
      this.store.slots !== undefined &&
      u.stripe !== null &&
      ![...this.claims].some((c) => c.startsWith(`${uploadId}/`)) &&
      parts.every((p, i) => p.part === i + 1 && p.key === assembly && p.offset === i * u.stripe! && (i === parts.length - 1 || p.size === u.stripe));
    const store = this.store;
    async function* joined() {
      for (const p of parts) if (p.size > 0) yield* (await store.get(p.key, { start: p.offset, end: p.offset + p.size - 1 })) as AsyncIterable<Uint8Array>;
    }
    const opts = expectedSha256 ? { expectedSha256 } : {};
    if ('consume' in keep) {
      // Another store takes the joined bytes; the session ends inside its commit, so an abort
      // (or another completion) that committed first wins and nothing is kept (review).
      const kept = await keep.consume(actor, joined(), u, (tx, stored) => {
        if (!this.find(uploadId)) throw new NotFound(`upload ${uploadId} does not exist for ${model}/${path}: aborted or completed meanwhile`);
        if (expectedSha256 && stored.sha256 !== expectedSha256.toLowerCase()) throw new InvalidInput(`the content's sha256 is ${stored.sha256}, not the ${expectedSha256} the client declared`);
        tx.apply(this.changes.uploadEnded, { id: uploadId });
      });
      await this.deleteObjects(uploadId);
      return { path, size: kept.size, sha256: kept.sha256 };
    }
    // A sealed assembly becomes blobs/upload-<id>: if the node died between that rename and the
    // commit, the next completion finds the bytes there instead of declaring the parts lost.
    const sealedKey = `blobs/upload-${uploadId}`;
    let from = assembly;
    if (inPlace && !(await store.head(assembly)) && (await store.head(sealedKey)) && !this.db.prepare('SELECT 1 FROM blobs WHERE key = ?').get(sealedKey)) from = sealedKey;
    const produce = inPlace ? (key: string) => store.slots!.seal(from, total, key, opts) : (key: string) => store.put(key, joined(), opts);
    if (inPlace) this.sealing.add(uploadId);
    let entry: FileEntry;
    try {
      const blob = await this.blobs.write(
        actor,
        produce,
        expectedSha256,
        (tx, b) => {
          // Still open when the file is recorded: an abort, or another complete of the same upload,
          // that committed meanwhile wins, and this one stores nothing (review: both had succeeded).
          if (!this.find(uploadId)) throw new NotFound(`upload ${uploadId} does not exist for ${model}/${path}: aborted or completed meanwhile`);
          tx.apply(this.changes.uploadEnded, { id: uploadId });
          keep.record(tx, b, u);
        },
        inPlace ? sealedKey : undefined,
      );
      entry = { path, size: blob.size, sha256: blob.sha256 };
    } catch (err) {
      // Aborted meanwhile: the abort won (its deletes may be what made the seal fail).
      if (!this.find(uploadId)) throw new NotFound(`upload ${uploadId} does not exist for ${model}/${path}: aborted or completed meanwhile`);
      // The assembly became the blob and went with it: the parts are gone, so is the upload.
      if (inPlace && !(await store.head(assembly).catch(() => undefined)) && !(await store.head(sealedKey).catch(() => undefined))) {
        await this.end(actor, uploadId, `${target.kind}s.abort_upload`, describe(target, u.version)).catch(() => undefined);
        if (err instanceof NotFound && err.message.includes(from)) throw new Conflict(`upload ${uploadId} lost its parts in a failed completion; start a new upload`);
      }
      // A part re-sent while this completion read it: its old bytes are gone, the new ones listed.
      if (err instanceof NotFound && !inPlace) throw new InvalidInput(`a part of upload ${uploadId} was sent again during the completion; complete it again`);
      throw err;
    } finally {
      this.sealing.delete(uploadId);
    }
    this.stripes.delete(uploadId);
    await this.deleteObjects(uploadId);
    return entry;
  }

  /** Ends an upload without a file: its parts are deleted (S3's AbortMultipartUpload). */
  async abort(actor: Actor, target: UploadTarget, uploadId: string): Promise<void> {
    const u = this.session(uploadId, target);
    await this.end(actor, uploadId, `${target.kind}s.abort_upload`, describe(target, u.version));
    await this.deleteObjects(uploadId);
  }

  private end(actor: Actor, uploadId: string, action: string, target: string): Promise<void> {
    this.stripes.delete(uploadId);
    return this.writer.write(actor, (tx) => {
      tx.apply(this.changes.uploadEnded, { id: uploadId });
      tx.audit(action, target, { upload_id: uploadId });
    });
  }

  private async deleteObjects(uploadId: string): Promise<void> {
    for await (const o of this.store.list(`uploads/${uploadId}/`)) await this.store.delete(o.key).catch(() => undefined);
  }

  /**
   * Garbage collection's share: sessions nobody completed within `ttlMs` end (row first), then
   * objects of ended sessions go — those whose row is already gone (a crash in between) once
   * older than `cutoffMs`.
   */
  async collect(actor: Actor, ttlMs: number, cutoffMs: number): Promise<{ expired: number; bytes: number }> {
    const expiredBefore = new Date(Date.now() - ttlMs).toISOString();
    const expired = this.db.prepare<{ id: string; kind: UploadKind; model: string; version: string; path: string }>('SELECT id, kind, model, version, path FROM model_uploads WHERE created_at < ?').all(expiredBefore);
    for (const u of expired) await this.end(actor, u.id, `${u.kind}s.upload_expired`, describe({ kind: u.kind, owner: u.model, path: u.path }, u.version));
    const ended = new Set(expired.map((u) => u.id));
    const live = new Set(this.db.prepare<{ id: string }>('SELECT id FROM model_uploads').all().map((r) => r.id));
    let bytes = 0;
    for await (const o of this.store.list('uploads/')) {
      const id = o.key.split('/')[1]!;
      if (live.has(id) || (o.modified && o.modified.getTime() > cutoffMs && !ended.has(id))) continue;
      await this.store.delete(o.key);
      bytes += o.size;
    }
    return { expired: expired.length, bytes };
  }
}

function targetKey(t: UploadTarget): string {
  return `${t.kind}\0${t.owner}\0${t.path}`;
}

/** The audit target: model:m@v/path, run:r/step/path or dataset:d/path, as the stores name them. */
function describe(t: UploadTarget, version: string): string {
  if (t.kind === 'model') return `model:${t.owner}@${version}/${t.path}`;
  if (t.kind === 'checkpoint') return `run:${t.owner}/${version}/${t.path}`;
  return `dataset:${t.owner}/${t.path}`;
}

function assemblyKey(uploadId: string): string {
  return `uploads/${uploadId}/assembly`;
}

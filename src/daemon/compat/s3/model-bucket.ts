import { Conflict, InvalidInput, NotFound } from '../../../engines/errors.js';
import type { ModelRegistry } from '../../../engines/models/model-registry.js';
import { ID_PATTERN } from '../../../engines/models/model-schema.js';
import type { Actor } from '../../../engines/sql/writer.js';
import { S3Error } from './s3-error.js';
import { compareKeys, type ObjectLocation, type S3Bucket, type S3Multipart, type S3Object } from './s3-bucket.js';
import { multipart, storeErrors } from './s3-multipart.js';

// The `models` bucket: keys are {model}/{version or alias}/{path}. Reads and listings resolve an
// alias to its version's files under the alias's own prefix, so `s3://models/llama/prod/` is
// what vLLM's streamer is pointed at. A listing shows aliases only where it is asked about
// them: a listing with delimiter "/" at the model level names each alias as a CommonPrefix
// next to the versions, and a prefix inside an alias lists its files; a recursive listing of
// the whole model lists versions only (`aws s3 sync` would otherwise copy every aliased file
// twice). A PUT writes into an open version, creating the model and the version on first use;
// a final version answers AccessDenied, naming it: finalizing stays on the native API.

const FINAL_HINT = 'Finalized versions are read-only; write to an open version';
const finalHint = (message: string) => `${message}. ${FINAL_HINT}`;

export class ModelBucket implements S3Bucket {
  readonly name = 'models';
  readonly readAccess = 'read' as const;
  readonly multipart: S3Multipart;

  constructor(
    private readonly models: ModelRegistry,
    readonly createdAt: string,
  ) {
    this.multipart = multipart(models.uploads, {
        kind: 'model',
        target: split,
        // The version must be open now (a final one is refused before any part is sent), and an
        // alias in the key is recorded as the version it names (review: parts sent through an
        // alias were refused as NoSuchUpload).
        begin: async (actor, key) => {
          const { model, version } = split(key);
          await this.ensureVersion(actor, model, version);
          const v = this.models.resolveVersion(model, version);
          if (v.state !== 'open') throw new Conflict(`version ${v.version} of ${model} is finalized; its files cannot change`);
          return v.version;
        },
        conflictHint: FINAL_HINT,
        // An alias in the key counts when it names the session's version. The registry's own
        // check knew only model and path, so an upload begun for v1 could be completed "as" v9 (review).
        same: (key, session) => {
          try {
            return this.models.resolveVersion(session.model, split(key).version).version === session.version;
          } catch {
            return false;
          }
        },
      });
  }

  list(prefix: string, delimiter: string | undefined, after = '', limit = Infinity): S3Object[] {
    const slash = prefix.indexOf('/');
    const byKey = (a: S3Object, b: S3Object) => compareKeys(a.key, b.key);
    // The root folded by "/": one key per model is enough (`aws s3 ls s3://models/`).
    if (delimiter === '/' && slash === -1) {
      return this.models.firstFilePerModel(prefix).map((f) => this.object(`${f.model}/${f.version}/${f.path}`, f)).sort(byKey);
    }
    const model = slash === -1 ? undefined : prefix.slice(0, slash);
    const rest = slash === -1 ? '' : prefix.slice(slash + 1);
    if (model !== undefined && ID_PATTERN.test(model) && this.exists(model)) {
      const aliases = Object.entries(this.models.getModel(model).aliases);
      const intoAlias = aliases.some(([alias]) => rest.startsWith(`${alias}/`));
      // A model's versions folded by "/": one key per version, and one per alias.
      if (delimiter === '/' && !rest.includes('/')) {
        const out = this.models.firstFilePerVersion(model).map((f) => this.object(`${model}/${f.version}/${f.path}`, f));
        for (const [alias, version] of aliases) {
          const first = this.models.firstFilePerVersion(model).find((f) => f.version === version);
          if (first && alias.startsWith(rest)) out.push(this.object(`${model}/${alias}/${first.path}`, first));
        }
        return out.filter((o) => o.key.startsWith(prefix)).sort(byKey);
      }
      // A recursive listing inside the versions: one indexed range per page.
      if (delimiter === undefined && !intoAlias && Number.isFinite(limit)) {
        const base = `${model}/`;
        let cursor = after.startsWith(base) ? after.slice(base.length) : compareKeys(after, base) < 0 ? '' : '\u{10ffff}';
        const out: S3Object[] = [];
        while (out.length <= limit) {
          const page = this.models.filesAfter(model, cursor, rest, 1000);
          if (page.length === 0) break;
          for (const f of page) {
            const key = `${base}${f.version}/${f.path}`;
            if (!key.startsWith(prefix)) return out; // past the prefix: sorted, so done
            out.push(this.object(key, f));
          }
          const last = page.at(-1)!;
          cursor = `${last.version}/${last.path}`;
        }
        return out;
      }
    }
    const names = slash === -1 ? this.modelNames().filter((n) => n.startsWith(prefix)) : [prefix.slice(0, slash)].filter((n) => ID_PATTERN.test(n) && this.exists(n));
    const out: S3Object[] = [];
    for (const model of names) {
      const m = this.models.getModel(model);
      for (const v of m.versions) this.addFiles(out, model, v.version, v.version, prefix);
      const rest = slash === -1 ? '' : prefix.slice(slash + 1);
      for (const [alias, version] of Object.entries(m.aliases)) {
        const inside = rest.startsWith(`${alias}/`);
        const grouped = delimiter === '/' && !rest.includes('/') && alias.startsWith(rest);
        if (inside) this.addFiles(out, model, version, alias, prefix);
        else if (grouped) {
          // One key stands for the alias: the listing folds it into the CommonPrefix model/alias/.
          const first = this.models.listFiles(model, version)[0];
          if (first) out.push(this.object(`${model}/${alias}/${first.path}`, first));
        }
      }
    }
    return out.sort((a, b) => compareKeys(a.key, b.key));
  }

  locate(key: string): ObjectLocation {
    const { model, version, path } = split(key);
    try {
      const f = this.models.locateFile(model, version, path);
      const file = { key: f.key, sha256: f.sha256, size: f.size, tier: f.tier };
      return {
        ...this.object(key, { size: f.size, sha256: f.sha256, etag: f.etag ?? null, created_at: f.created_at ?? new Date(0).toISOString() }),
        open: (range) => this.models.openFile(file, range),
        check: () => this.models.checkFile(file),
      };
    } catch (err) {
      if (err instanceof NotFound || err instanceof InvalidInput) throw new S3Error('NoSuchKey', 'The specified key does not exist.');
      throw err;
    }
  }

  async put(actor: Actor, key: string, body: AsyncIterable<Uint8Array>, etag: () => string | undefined, expectedSha256: string | undefined): Promise<S3Object> {
    const { model, version, path } = split(key);
    // The model and version are made with the file's row, so a refused body leaves neither.
    const f = await storeErrors(() => this.models.putFile(actor, model, version, path, body, expectedSha256, etag, true), finalHint);
    return { key, size: f.size, etag: etag() ?? f.sha256, lastModified: new Date().toISOString() };
  }

  async delete(actor: Actor, key: string): Promise<void> {
    let parts: { model: string; version: string; path: string };
    try {
      parts = split(key);
    } catch {
      return; // no such key can exist
    }
    const { model, version, path } = parts;
    if (!this.exists(model)) return;
    await storeErrors(async () => {
      try {
        await this.models.deleteFile(actor, model, version, path);
      } catch (err) {
        if (err instanceof NotFound) return; // no such version: nothing to delete
        throw err;
      }
    }, finalHint);
  }

  async copy(actor: Actor, from: string, to: string): Promise<S3Object> {
    const src = split(from);
    const dst = split(to);
    try {
      this.models.locateFile(src.model, src.version, src.path);
    } catch (err) {
      if (err instanceof NotFound || err instanceof InvalidInput) throw new S3Error('NoSuchKey', 'The specified key does not exist.');
      throw err;
    }
    await this.ensureVersion(actor, dst.model, dst.version);
    const f = await storeErrors(() => this.models.copyFile(actor, src, dst), finalHint);
    return { key: to, size: f.size, etag: f.etag ?? f.sha256, lastModified: new Date().toISOString() };
  }

  /** The model and the version exist after this (made on first use); an alias is taken as is. */
  private async ensureVersion(actor: Actor, model: string, version: string): Promise<void> {
    if (!this.exists(model)) await this.models.putModel(actor, model, {});
    try {
      this.models.resolveVersion(model, version);
    } catch (err) {
      if (!(err instanceof NotFound)) throw err;
      await this.models.createVersion(actor, model, { version }).catch((e: unknown) => {
        if (!(e instanceof Conflict)) throw e; // made meanwhile by a concurrent upload
      });
    }
  }

  private addFiles(out: S3Object[], model: string, version: string, as: string, prefix: string): void {
    const base = `${model}/${as}/`;
    if (!base.startsWith(prefix) && !prefix.startsWith(base)) return;
    for (const f of this.models.listFiles(model, version)) {
      const key = base + f.path;
      if (key.startsWith(prefix)) out.push(this.object(key, f));
    }
  }

  private object(key: string, f: { size: number; sha256: string; etag: string | null; created_at: string }): S3Object {
    return { key, size: f.size, etag: f.etag ?? f.sha256, lastModified: f.created_at };
  }

  private modelNames(): string[] {
    const names: string[] = [];
    for (let page = this.models.listModels(1000); page.length > 0; page = this.models.listModels(1000, page.at(-1)!.name)) names.push(...page.map((m) => m.name));
    return names;
  }

  private exists(model: string): boolean {
    try {
      this.models.getModel(model);
      return true;
    } catch (err) {
      if (err instanceof NotFound) return false;
      throw err;
    }
  }
}

/** model/version/path, each part valid, or NoSuchKey (reads) — a PUT reports it the same way. */
function split(key: string): { model: string; owner: string; version: string; path: string } {
  const a = key.indexOf('/');
  const b = a === -1 ? -1 : key.indexOf('/', a + 1);
  if (a === -1 || b === -1 || b === key.length - 1) throw new S3Error('NoSuchKey', 'keys in the models bucket are {model}/{version or alias}/{path}');
  const model = key.slice(0, a);
  const version = key.slice(a + 1, b);
  if (!ID_PATTERN.test(model) || !ID_PATTERN.test(version)) throw new S3Error('NoSuchKey', 'model and version names are 1-128 letters, digits and . _ : @ -');
  return { model, owner: model, version, path: key.slice(b + 1) };
}

import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { InvalidInput, NotFound } from '../errors.js';
import { checkKey, type ByteRange, type ObjectInfo, type ObjectStore, type PutOptions, type PutResult } from './object-store.js';

// Objects as files under one root. A put streams into <root>/.tmp/<uuid> while hashing, fsyncs
// it, then renames it onto the key and fsyncs the directory: rename is atomic, so a reader (or
// a restart after kill -9) sees the old state or the whole new object, never a partial file.
// Whatever a crash leaves in .tmp is garbage, removed by sweepTemp().

const TMP = '.tmp';

export class FsObjectStore implements ObjectStore {
  readonly name = 'fs';

  constructor(private readonly root: string) {}

  private path(key: string): string {
    checkKey(key);
    if (key === TMP || key.startsWith(`${TMP}/`)) throw new Error(`invalid object key ${JSON.stringify(key)}`);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, body: AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    const target = this.path(key);
    const tmpDir = join(this.root, TMP);
    await mkdir(tmpDir, { recursive: true });
    const tmp = join(tmpDir, randomUUID());
    const hash = createHash('sha256');
    let size = 0;
    // Opened before the stream so the temp file exists now: a failure's unlink below can never
    // race a lazy open that would recreate the file after it.
    const out = (await open(tmp, 'wx', 0o600)).createWriteStream();
    try {
      for await (const chunk of body) {
        hash.update(chunk);
        size += chunk.byteLength;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', r));
      }
      out.end();
      await finished(out);
      const sha256 = hash.digest('hex');
      if (options.expectedSha256 && options.expectedSha256.toLowerCase() !== sha256) {
        throw new InvalidInput(`the content's sha256 is ${sha256}, not the ${options.expectedSha256} the client declared`);
      }
      await fsyncPath(tmp);
      await mkdir(dirname(target), { recursive: true });
      await rename(tmp, target);
      await fsyncPath(dirname(target));
      return { key, size, sha256 };
    } catch (err) {
      out.destroy();
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const path = this.path(key);
    const info = await this.head(key);
    if (!info) throw new NotFound(`object ${key} does not exist`);
    if (range && (range.start < 0 || range.end < range.start || range.end >= info.size)) {
      throw new InvalidInput(`range ${range.start}-${range.end} is outside the object (${info.size} bytes)`);
    }
    return createReadStream(path, range ? { start: range.start, end: range.end } : {});
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { key, size: s.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const path of walk(this.root)) {
      const key = relative(this.root, path).split(sep).join('/');
      if (key.startsWith(`${TMP}/`) || !key.startsWith(prefix)) continue;
      const s = await stat(path);
      yield { key, size: s.size, modified: s.mtime };
    }
  }

  /** Removes temp files older than `olderThanMs`: the leftovers of puts a crash interrupted. */
  async sweepIncomplete(olderThanMs: number): Promise<number> {
    const dir = join(this.root, TMP);
    let removed = 0;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const p = join(dir, name);
      if (Date.now() - (await stat(p)).mtimeMs >= olderThanMs) {
        await rm(p, { force: true });
        removed++;
      }
    }
    return removed;
  }
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function* walk(dir: string): AsyncIterable<string> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.isFile()) yield p;
  }
}

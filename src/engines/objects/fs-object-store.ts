import { createHash, randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, rmdir, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { InsufficientStorage, InvalidInput, isOutOfSpace, NotFound, Unavailable } from '../errors.js';
import {
  checkKey,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
  type PutCondition,
  type PutOptions,
  type PutResult,
  type SlotFile,
  type VersionedObject,
} from './object-store.js';

// Objects as files under one root. A put streams into <root>/.tmp/<uuid> while hashing, fsyncs
// it, then renames it onto the key and fsyncs the directory: rename is atomic, so a reader (or
// a restart after kill -9) sees the old state or the whole new object, never a partial file.
// Whatever a crash leaves in .tmp is garbage, removed by sweepTemp().

const TMP = '.tmp';
/**
 * A conditional put holds its key's lock for milliseconds; one this old was left by a process
 * that died holding it (kill -9 mid-renewal), and is broken. Waiting longer only delays whoever
 * takes over the lease after such a crash.
 */
const STALE_LOCK_MS = 3_000;
const LOCK_WAIT_MS = 5_000;

export class FsObjectStore implements ObjectStore {
  readonly name = 'fs';

  /** Temp files this process is writing now: never swept, whatever the grace period. */
  private readonly active = new Set<string>();

  constructor(private readonly root: string) {}

  // Slot files (multipart assembly). Not atomic like put(): the file is written in place, part
  // by part, and only seal() makes it an object. The caller (model-uploads.ts) records which
  // slots hold which verified part, so bytes a crash left half-written in a slot are never
  // read; seal renames the file, so the object appears whole or not at all.
  readonly slots: SlotFile = {
    writeAt: async (key, offset, max, body, options = {}) => {
      const target = this.path(key);
      const hash = createHash('sha256');
      let size = 0;
      let fh: FileHandle | undefined;
      try {
        fh = await inDir(target, () => open(target, constants.O_RDWR | constants.O_CREAT, 0o600));
        for await (const chunk of body) {
          if (size + chunk.byteLength > max) throw new InvalidInput(`this part is larger than its slot (${max} bytes)`);
          hash.update(chunk);
          await writeFully(fh, chunk, offset + size);
          size += chunk.byteLength;
        }
        const sha256 = hash.digest('hex');
        if (options.expectedSha256 && options.expectedSha256.toLowerCase() !== sha256) {
          throw new InvalidInput(`the content's sha256 is ${sha256}, not the ${options.expectedSha256} the client declared`);
        }
        await fh.datasync();
        return { key, size, sha256 };
      } catch (err) {
        if (isOutOfSpace(err)) throw new InsufficientStorage(`the object store's disk (${this.root})`);
        throw err;
      } finally {
        await fh?.close().catch(() => undefined);
      }
    },
    seal: async (from, size, key, options = {}) => {
      const source = this.path(from);
      const target = this.path(key);
      let fh: FileHandle;
      try {
        fh = await open(source, 'r+');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFound(`object ${from} does not exist`);
        throw err;
      }
      try {
        if ((await fh.stat()).size < size) throw new InvalidInput(`${from} holds fewer than ${size} bytes`);
        const hash = createHash('sha256');
        const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
        for (let at = 0; at < size; ) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - at), at);
          if (bytesRead === 0) throw new InvalidInput(`${from} ended before ${size} bytes`);
          hash.update(buf.subarray(0, bytesRead));
          at += bytesRead;
        }
        const sha256 = hash.digest('hex');
        if (options.expectedSha256 && options.expectedSha256.toLowerCase() !== sha256) {
          throw new InvalidInput(`the content's sha256 is ${sha256}, not the ${options.expectedSha256} the client declared`);
        }
        // Renamed first, then cut to size: a crash in between leaves a too-long file under a key
        // no row names yet (garbage collection's), never a short one.
        await inDir(target, () => rename(source, target)).catch((err: NodeJS.ErrnoException) => {
          // Removed since it was opened (an abort deleting the upload's files).
          throw err.code === 'ENOENT' ? new NotFound(`object ${from} does not exist`) : err;
        });
        await fh.truncate(size);
        await fh.sync();
        await fsyncPath(dirname(target));
        await fsyncPath(dirname(source)).catch(() => undefined);
        return { key, size, sha256 };
      } catch (err) {
        if (isOutOfSpace(err)) throw new InsufficientStorage(`the object store's disk (${this.root})`);
        throw err;
      } finally {
        await fh.close().catch(() => undefined);
      }
    },
  };

  private path(key: string): string {
    checkKey(key);
    if (key === TMP || key.startsWith(`${TMP}/`)) throw new Error(`invalid object key ${JSON.stringify(key)}`);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, body: AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    const target = this.path(key);
    const tmpDir = join(this.root, TMP);
    const tmp = join(tmpDir, randomUUID());
    const hash = createHash('sha256');
    let size = 0;
    let fh: FileHandle | undefined;
    this.active.add(tmp);
    try {
      await mkdir(tmpDir, { recursive: true });
      // Opened before the body is read, so the temp file exists now: the unlink below can never
      // race a lazy open that would recreate it. Written through the handle's promises rather
      // than a WriteStream: a full disk rejects the write that hit it, where a stream's 'error'
      // event with nobody listening would end the process.
      fh = await open(tmp, 'wx', 0o600);
      let unsynced = 0;
      for await (const chunk of body) {
        hash.update(chunk);
        size += chunk.byteLength;
        await writeFully(fh, chunk);
        unsynced += chunk.byteLength;
        if (options.syncEveryBytes && unsynced >= options.syncEveryBytes) {
          await fh.datasync();
          unsynced = 0;
        }
      }
      const sha256 = hash.digest('hex');
      if (options.expectedSha256 && options.expectedSha256.toLowerCase() !== sha256) {
        throw new InvalidInput(`the content's sha256 is ${sha256}, not the ${options.expectedSha256} the client declared`);
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      await inDir(target, () => rename(tmp, target));
      await fsyncPath(dirname(target));
      return { key, size, sha256 };
    } catch (err) {
      await fh?.close().catch(() => undefined);
      // At once, not at the next GC: on a full disk these bytes are what the next write needs.
      await unlink(tmp).catch(() => undefined);
      if (isOutOfSpace(err)) throw new InsufficientStorage(`the object store's disk (${this.root})`);
      throw err;
    } finally {
      this.active.delete(tmp);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const path = this.path(key);
    // The file is opened here, so a missing object is a NotFound now, before the caller has
    // sent a status line, and the stream below reads the file that was opened even if the
    // key is replaced or deleted meanwhile.
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EISDIR') throw new NotFound(`object ${key} does not exist`);
      throw err;
    }
    try {
      const { size } = await fh.stat();
      if (range && (range.start < 0 || range.end < range.start || range.end >= size)) {
        throw new InvalidInput(`range ${range.start}-${range.end} is outside the object (${size} bytes)`);
      }
    } catch (err) {
      await fh.close();
      throw err;
    }
    // autoClose (the default) closes the handle when the stream ends or is destroyed.
    // 1 MiB reads, as the model cache serves hits (issue 19): Node's 64 KiB default made the
    // event loop, not the disk, the limit of a large download.
    return fh.createReadStream(range ? { start: range.start, end: range.end, highWaterMark: 1024 * 1024 } : { highWaterMark: 1024 * 1024 });
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
    const path = this.path(key);
    await rm(path, { force: true });
    // Its directory goes too once empty (an upload's uploads/<id>/ was left behind for every
    // upload — review). A writer that made it a moment ago retries its step (inDir).
    if (dirname(path) !== this.root) await rmdir(dirname(path)).catch(() => undefined);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const path of walk(this.root)) {
      const key = relative(this.root, path).split(sep).join('/');
      if (key.startsWith(`${TMP}/`) || !key.startsWith(prefix)) continue;
      // Deleted since the directory was read (a concurrent delete): not there any more.
      const s = await stat(path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      if (s) yield { key, size: s.size, modified: s.mtime };
    }
  }

  async readVersioned(key: string): Promise<VersionedObject | undefined> {
    try {
      const body = await readFile(this.path(key));
      return { body, version: contentVersion(body) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  // Compare-and-swap under a lock file made with O_EXCL (atomic on local disks and on NFSv3+,
  // which is how two hosts would share this tier). The version is the content's hash: writers
  // of the lease put a sequence number in the body, so two different writes never collide, and
  // two identical bodies are the same state anyway.
  async putIf(key: string, body: Buffer, condition: PutCondition): Promise<string | undefined> {
    const target = this.path(key);
    const tmpDir = join(this.root, TMP);
    await mkdir(tmpDir, { recursive: true });
    const lock = join(tmpDir, `lock-${createHash('sha256').update(key).digest('hex').slice(0, 32)}`);
    await acquireLock(lock);
    try {
      const current = await this.readVersioned(key);
      if ('ifAbsent' in condition ? current !== undefined : current?.version !== condition.ifVersion) return undefined;
      const tmp = join(tmpDir, randomUUID());
      try {
        await writeFile(tmp, body, { mode: 0o600, flag: 'wx' });
        await fsyncPath(tmp);
        await mkdir(dirname(target), { recursive: true });
        await rename(tmp, target);
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        if (isOutOfSpace(err)) throw new InsufficientStorage(`the object store's disk (${this.root})`);
        throw err;
      }
      await fsyncPath(dirname(target));
      return contentVersion(body);
    } finally {
      await unlink(lock).catch(() => undefined);
    }
  }

  /** Removes temp files older than `olderThanMs`: the leftovers of puts a crash interrupted. */
  async sweepIncomplete(olderThanMs: number): Promise<number> {
    const dir = join(this.root, TMP);
    let removed = 0;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const p = join(dir, name);
      if (this.active.has(p) || name.startsWith('lock-')) continue;
      const s = await stat(p).catch(() => undefined);
      if (s && Date.now() - s.mtimeMs >= olderThanMs) {
        await rm(p, { force: true });
        removed++;
      }
    }
    return removed;
  }
}

function contentVersion(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

async function acquireLock(lock: string): Promise<void> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await (await open(lock, 'wx', 0o600)).close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
    if (age > STALE_LOCK_MS) {
      await unlink(lock).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) throw new Unavailable(`the object store's lock ${lock} stayed taken for ${LOCK_WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 2 + Math.random() * 8));
  }
}

/**
 * Runs `step` (a rename or create into `target`'s directory) after making the directory; once
 * more if the directory vanished in between (delete removes directories it empties).
 */
async function inDir<T>(target: string, step: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    await mkdir(dirname(target), { recursive: true });
    try {
      return await step();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 2 || (await stat(dirname(target)).then(() => true, () => false))) throw err;
    }
  }
}

/** Writes all of `chunk` (a write may take fewer bytes than it was given), at `position` when given. */
async function writeFully(fh: FileHandle, chunk: Uint8Array, position?: number): Promise<void> {
  for (let done = 0; done < chunk.byteLength; ) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.byteLength - done, position === undefined ? null : position + done);
    done += bytesWritten;
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

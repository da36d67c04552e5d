import { Readable } from 'node:stream';
import type { FetchObject } from './model-cache.js';

// A whole object read as several ranged GETs at once, handed on as one stream in order — how
// the Run:ai model streamer reads weights from S3. One GET stream from MinIO or S3 is bounded
// by one connection's window and one server thread; `width` of them keep more of the link
// busy. The part at the head streams as it arrives (the first reader does not wait for a
// whole part); the parts behind it are read into memory as they come, so a fill holds at
// most `width` × `partBytes`. Order, length and the sha256 are the caller's to check, as for
// one GET (ModelCache.copy verifies both before the file counts as cached).

export interface RangedFetchOptions {
  /** Bytes per ranged GET. */
  partBytes: number;
  /** GETs in flight. */
  width: number;
}

/** Resolves once the first part is open, so a missing object fails here, before any byte is served. */
export async function rangedFetch(fetch: FetchObject, size: number, { partBytes, width }: RangedFetchOptions): Promise<Readable> {
  const parts = Math.ceil(size / partBytes);
  const range = (i: number) => ({ start: i * partBytes, end: Math.min(size, (i + 1) * partBytes) - 1 });
  const queue: Part[] = [new Part(Promise.resolve(await fetch(range(0))))];
  let next = 1;
  const topUp = () => {
    while (next < parts && queue.length < width) queue.push(new Part(fetch(range(next++))));
  };
  topUp();
  async function* inOrder(): AsyncGenerator<Buffer> {
    try {
      while (queue.length > 0) {
        yield* queue[0]!.chunks();
        queue.shift();
        topUp();
      }
    } finally {
      // A reader gone or a part failed: the GETs still running are stopped, not left to fill memory.
      for (const p of queue) p.destroy();
    }
  }
  return Readable.from(inOrder(), { objectMode: false, highWaterMark: 1024 * 1024 });
}

/** One ranged GET, read as its bytes arrive whether or not anyone is consuming them yet. */
class Part {
  private readonly buffered: Buffer[] = [];
  private done = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;
  private stream: Readable | undefined;
  private destroyed = false;

  constructor(opening: Promise<Readable>) {
    opening.then(
      (stream) => {
        if (this.destroyed) {
          stream.destroy();
          return;
        }
        this.stream = stream;
        stream.on('data', (c: Buffer) => this.push(c));
        stream.on('end', () => this.finish());
        stream.on('error', (err) => this.finish(err));
      },
      (err: Error) => this.finish(err),
    );
  }

  async *chunks(): AsyncGenerator<Buffer> {
    for (;;) {
      while (this.buffered.length > 0) yield this.buffered.shift()!;
      if (this.error) throw this.error;
      if (this.done) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  destroy(): void {
    this.destroyed = true;
    this.stream?.destroy();
    this.buffered.length = 0;
  }

  private push(c: Buffer): void {
    this.buffered.push(c);
    this.notify();
  }

  private finish(err?: Error): void {
    if (err) this.error = err;
    this.done = true;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

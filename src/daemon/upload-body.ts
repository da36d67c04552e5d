import type { Context } from 'hono';

// The body of a streamed upload (model, checkpoint and dataset files), read chunk by chunk.
//
// When the engine stops reading early — the disk is full, the sha256 is wrong, the version
// was finalized — the client is usually still sending. Cancelling the request stream would
// destroy the socket under @hono/node-server, and most clients then report a reset instead
// of the error the daemon answered (fetch: "other side closed"). So the error path reads and
// discards what is left, up to a bound, before the answer goes out; past the bound the
// connection is dropped, as S3 does.

const DISCARD_MAX_BYTES = 256 * 1024 * 1024;
const DISCARD_MAX_MS = 5_000;

export async function withUploadBody<T>(c: Context, use: (body: AsyncIterable<Uint8Array>) => Promise<T>): Promise<T> {
  const stream = c.req.raw.body;
  if (!stream) return use((async function* () {})());
  const reader = stream.getReader();
  let finished = false;
  const body: AsyncIterable<Uint8Array> = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          finished = true;
          return;
        }
        yield value;
      }
    },
  };
  try {
    return await use(body);
  } catch (err) {
    if (!finished) await discardRest(reader);
    throw err;
  }
}

async function discardRest(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  const deadline = Date.now() + DISCARD_MAX_MS;
  let bytes = 0;
  try {
    for (;;) {
      const next = await Promise.race([reader.read(), new Promise<'timeout'>((r) => setTimeout(r, Math.max(0, deadline - Date.now()), 'timeout').unref())]);
      if (next === 'timeout' || next.done) break;
      bytes += next.value.byteLength;
      if (bytes > DISCARD_MAX_BYTES) break;
    }
    if (Date.now() >= deadline || bytes > DISCARD_MAX_BYTES) await reader.cancel();
  } catch {
    // The client went away: nothing left to read.
  }
}

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { DecryptionFailed } from './aead.js';

// Objects sealed in 64 KiB packages, after MinIO's DARE format: a header with the object's own
// data key (random, wrapped by the KEK), then packages of AES-256-GCM ciphertext + tag.
// Package i uses nonce 0⁴ ‖ i (big-endian, 8 bytes) — unique because the key is unique to the
// object — and authenticates (i, final?) as associated data, so packages cannot be reordered,
// dropped or the object cut at a package boundary without failing. Every package but the last
// holds exactly 64 KiB, so a plaintext offset maps to a package by arithmetic and a range read
// fetches and decrypts only the packages it touches. An empty object is one empty final package.
//
//   header:  "STRS1" ‖ wrapped data key (60 bytes)          = 65 bytes
//   package: ciphertext (≤ 65536) ‖ tag (16)

type Bytes = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export const PACKAGE = 64 * 1024;
const TAG = 16;
const MAGIC = Buffer.from('STRS1');
const WRAPPED = 60;
export const HEADER = MAGIC.length + WRAPPED;

/** What wraps each object's data key: the Keyring (KEK), or a fixed key in tests. */
export interface KeyWrapper {
  wrap(dataKey: Buffer, context: string): Buffer;
  unwrap(wrapped: Buffer, context: string): Buffer;
}

export class Sealer {
  constructor(private readonly keyring: KeyWrapper) {}

  /** Plaintext size of a sealed object of `rawSize` bytes. */
  static plainSize(rawSize: number): number {
    const body = rawSize - HEADER;
    if (body < TAG) throw new DecryptionFailed(`a sealed object of ${rawSize} bytes is too short`);
    const packages = Math.ceil(body / (PACKAGE + TAG));
    return body - packages * TAG;
  }

  /** Size of the sealed form of `plainSize` bytes (header, then one tag per package). */
  static rawSize(plainSize: number): number {
    return HEADER + plainSize + Math.max(1, Math.ceil(plainSize / PACKAGE)) * TAG;
  }

  /** The sealed bytes of `body`, streamed; memory stays at about two packages. */
  async *seal(body: Bytes): AsyncIterable<Buffer> {
    const key = randomBytes(32);
    yield Buffer.concat([MAGIC, this.keyring.wrap(key, 'object')]);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let index = 0;
    for await (const chunk of body) {
      pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      pendingBytes += chunk.byteLength;
      // Keep at least one byte back: only the end of the stream says which package is final.
      while (pendingBytes > PACKAGE) {
        const all = Buffer.concat(pending);
        yield sealPackage(key, index++, all.subarray(0, PACKAGE), false);
        const rest = all.subarray(PACKAGE);
        pending = [rest];
        pendingBytes = rest.length;
      }
    }
    yield sealPackage(key, index, Buffer.concat(pending), true);
  }

  /**
   * Plaintext of a sealed object, or of the inclusive `range` of it. `readRaw` reads an
   * inclusive byte range of the sealed object; the header and the touched packages are read.
   */
  async open(readRaw: (start: number, end: number) => Promise<Bytes>, rawSize: number, range?: { start: number; end: number }): Promise<Readable> {
    const plain = Sealer.plainSize(rawSize);
    const packages = Math.max(1, Math.ceil(plain / PACKAGE));
    const header = await collect(await readRaw(0, HEADER - 1));
    if (header.length !== HEADER || !header.subarray(0, MAGIC.length).equals(MAGIC)) throw new DecryptionFailed('not a sealed object (bad header)');
    const key = this.keyring.unwrap(header.subarray(MAGIC.length), 'object');
    const start = range?.start ?? 0;
    const end = range?.end ?? plain - 1;
    const first = Math.floor(start / PACKAGE);
    const last = plain === 0 ? 0 : Math.floor(end / PACKAGE);
    const rawStart = HEADER + first * (PACKAGE + TAG);
    const rawEnd = Math.min(rawSize - 1, HEADER + (last + 1) * (PACKAGE + TAG) - 1);
    const source = await readRaw(rawStart, rawEnd);
    async function* decrypt(): AsyncIterable<Buffer> {
      let buffered: Buffer[] = [];
      let bufferedBytes = 0;
      let index = first;
      const emit = (sealed: Buffer): Buffer => {
        const clear = openPackage(key, index, sealed, index === packages - 1);
        const from = index === first ? start - first * PACKAGE : 0;
        const to = index === last ? end - index * PACKAGE + 1 : clear.length;
        index++;
        return clear.subarray(from, Math.max(from, to));
      };
      for await (const chunk of source) {
        buffered.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        bufferedBytes += chunk.byteLength;
        while (bufferedBytes >= PACKAGE + TAG && index <= last) {
          const all = Buffer.concat(buffered);
          yield emit(all.subarray(0, PACKAGE + TAG));
          const rest = all.subarray(PACKAGE + TAG);
          buffered = [rest];
          bufferedBytes = rest.length;
        }
      }
      if (index <= last) {
        if (index !== packages - 1 || bufferedBytes < TAG) throw new DecryptionFailed('the sealed object ended early');
        yield emit(Buffer.concat(buffered));
      }
    }
    return Readable.from(decrypt(), { objectMode: false });
  }
}

function nonce(index: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(index), 4);
  return n;
}

function aad(index: number, final: boolean): Buffer {
  const a = Buffer.alloc(9);
  a.writeBigUInt64BE(BigInt(index), 0);
  a[8] = final ? 1 : 0;
  return a;
}

function sealPackage(key: Buffer, index: number, plain: Buffer, final: boolean): Buffer {
  const cipher = createCipheriv('aes-256-gcm', key, nonce(index));
  cipher.setAAD(aad(index, final));
  return Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
}

function openPackage(key: Buffer, index: number, sealed: Buffer, final: boolean): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, nonce(index));
  decipher.setAAD(aad(index, final));
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG)), decipher.final()]);
  } catch {
    throw new DecryptionFailed(`package ${index} of a sealed object failed authentication (tampered, reordered or cut)`);
  }
}

async function collect(source: Bytes): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of source) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

import type { Context } from 'hono';
import { Packr } from 'msgpackr';

// Bulk endpoints answer in MessagePack when the client asks for it (Accept:
// application/msgpack), JSON otherwise. Plain MessagePack maps, no msgpackr extensions, so
// any MessagePack library can read the answer.

const packr = new Packr({ useRecords: false });

export function wantsMsgpack(c: Context): boolean {
  return /application\/(x-)?msgpack/i.test(c.req.header('accept') ?? '');
}

export function reply(c: Context, value: unknown, status: 200 | 201 = 200): Response {
  if (wantsMsgpack(c)) {
    return c.body(new Uint8Array(packr.pack(value)), status, { 'Content-Type': 'application/msgpack' });
  }
  return c.json(value as object, status);
}

import { z } from 'zod';
import { InvalidInput } from '../engines/errors.js';

// Lists take ?limit (default 50, at most 1000) and an opaque ?cursor that the previous page
// returned as next_cursor. Cursors are base64url JSON, so their content can change between
// versions without clients noticing.

export const pageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(50),
  cursor: z.string().max(512).optional(),
});

export function encodeCursor(position: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(position)).toString('base64url');
}

export function decodeCursor<T extends Record<string, string | number>>(cursor: string | undefined, shape: z.ZodType<T>): T | undefined {
  if (cursor === undefined) return undefined;
  try {
    return shape.parse(JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')));
  } catch {
    throw new InvalidInput('the cursor is not one this server returned');
  }
}

/** `rows` is the result of a query for limit + 1 rows: the extra one says another page exists. */
export function page<T>(rows: T[], limit: number, next: (last: T) => Record<string, string | number>) {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, next_cursor: rows.length > limit && last !== undefined ? encodeCursor(next(last)) : null };
}

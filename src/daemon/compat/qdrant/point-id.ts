import { InvalidInput } from '../../../engines/errors.js';

// Qdrant point ids are unsigned integers or UUIDs; Strata vector ids are strings. An integer
// is stored as its decimal text and a UUID in its lower-case hyphenated form, whatever form the
// client sent (LangChain's Python store sends `uuid4().hex`, without hyphens), so every
// spelling of one id names one vector. Answers turn decimal ids back into numbers.

const UUID = /^(?:urn:uuid:)?\{?([0-9a-f]{8})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{12})\}?$/i;

/** The stored id for a point id a client sent; 400 for anything else. */
export function pointId(raw: unknown, where = 'id'): string {
  if (typeof raw === 'number') {
    if (Number.isSafeInteger(raw) && raw >= 0) return String(raw);
    throw new InvalidInput(`${where}: ${raw} is not a valid point id (an unsigned integer up to 2^53-1, or a UUID)`);
  }
  if (typeof raw === 'string') {
    const m = UUID.exec(raw);
    if (m) return m.slice(1, 6).join('-').toLowerCase();
  }
  throw new InvalidInput(`${where}: ${JSON.stringify(raw)?.slice(0, 80)} is not a valid point id (an unsigned integer or a UUID)`);
}

/** The id as a Qdrant client expects it: a number for decimal ids, else the text. */
export function wireId(id: string): number | string {
  if (/^(0|[1-9][0-9]{0,15})$/.test(id)) {
    const n = Number(id);
    if (Number.isSafeInteger(n)) return n;
  }
  return id;
}

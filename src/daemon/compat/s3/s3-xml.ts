import { S3Error } from './s3-error.js';

// S3's XML bodies: written by hand from a few element builders (the shapes are small and
// fixed; a general XML library would add nothing but a dependency), and the one error body.

const NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

export function escapeXml(text: string): string {
  // CR, LF and TAB as character references (a parser would fold a raw CR LF into LF, and the
  // key in a listing would no longer be the key stored); other control characters cannot be
  // written in XML 1.0 at all and are replaced (keys cannot hold them: s3-app.ts refuses them).
  return text.replace(/[&<>"'\u0000-\u001f]/g, (c) =>
    ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;', '\r': '&#13;', '\n': '&#10;', '\t': '&#9;' })[c] ?? '\ufffd',
  );
}

/** <name>text</name>, the text escaped; undefined values are left out. */
export function el(name: string, value: string | number | boolean | undefined | null): string {
  return value === undefined || value === null ? '' : `<${name}>${escapeXml(String(value))}</${name}>`;
}

export function doc(root: string, inner: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="${NS}">${inner}</${root}>`;
}

export function errorXml(err: S3Error, resource: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error>${el('Code', err.code)}${el('Message', err.message)}${el('Resource', resource)}${el('RequestId', requestId)}</Error>`;
}

/**
 * The text of the few elements a request body may carry (CompleteMultipartUpload, Delete):
 * every <name>…</name> in document order, entities decoded. Enough for those shapes, which
 * hold no nested element of the same name. A linear scan with indexOf: the regex it replaced
 * was quadratic on an unclosed tag (review: a 480 KB body of "<Part>" held the event loop 27 s).
 * An open tag without its close is MalformedXML.
 */
export function elements(xml: string, name: string): string[] {
  const out: string[] = [];
  const open = `<${name}`;
  const close = `</${name}>`;
  let at = 0;
  for (;;) {
    const start = xml.indexOf(open, at);
    if (start === -1) return out;
    const after = xml[start + open.length];
    // <PartNumber> is not <Part>: the name must end at ">" or whitespace.
    if (after !== '>' && after !== ' ' && after !== '\t' && after !== '\n' && after !== '\r') {
      at = start + open.length;
      continue;
    }
    const gt = xml.indexOf('>', start);
    if (gt === -1) throw new S3Error('MalformedXML', `an unterminated <${name}> tag`);
    const end = xml.indexOf(close, gt + 1);
    if (end === -1) throw new S3Error('MalformedXML', `<${name}> is not closed`);
    out.push(decodeEntities(xml.slice(gt + 1, end)));
    at = end + close.length;
  }
}

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      if (!Number.isFinite(code) || code > 0x10ffff) throw new S3Error('MalformedXML', 'a numeric character reference is out of range');
      return String.fromCodePoint(code);
    }
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e]!;
  });
}

/** RFC 7231 IMF-fixdate (the AWS SDK throws on any other Last-Modified form). */
export function httpDate(iso: string): string {
  return new Date(iso).toUTCString();
}

/** ISO 8601 with milliseconds, as S3 writes LastModified in listings. */
export function isoDate(iso: string): string {
  return new Date(iso).toISOString();
}

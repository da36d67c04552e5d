import { createHash, randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Hono, type Context } from 'hono';
import { RateLimited, StrataError } from '../../../engines/errors.js';
import { RateLimiter } from '../../rate-limiter.js';
import { authorize, type Access } from '../../auth.js';
import type { Caller } from '../../app-env.js';
import { parseRange } from '../../byte-range.js';
import { NativeResponse } from '../../native-response.js';
import { rawTarget } from '../../request-target.js';
import { withUploadBody } from '../../upload-body.js';
import type { StrataNode } from '../../strata-node.js';
import { decodeAwsChunked } from './aws-chunked.js';
import { checkBody } from './checksums.js';
import { CheckpointBucket } from './checkpoint-bucket.js';
import { DatasetBucket } from './dataset-bucket.js';
import { ModelBucket } from './model-bucket.js';
import { compareKeys, type S3Bucket, type S3Object } from './s3-bucket.js';
import { S3Error } from './s3-error.js';
import { doc, el, elements, errorXml, httpDate, isoDate } from './s3-xml.js';
import { isSigV2Query, verifyV2Query } from './sigv2-query.js';
import { verify } from './sigv4.js';

// The S3-compatible endpoint (issue 17), on its own listener (s3.listen), like MinIO's: one
// handler that authenticates with SigV4 against the credentials tokens carry, finds the bucket
// (path style, or virtual-host style under s3.domain) and runs the operation. Buckets map keys
// to Strata's stores (s3-bucket.ts); everything S3-specific — listings, ranges, conditionals,
// aws-chunked bodies, checksums, XML errors — lives here and beside it. Reads go through the
// same registry calls as native downloads, so through the NVMe cache, streamed.

export interface S3Options {
  /** Virtual-host style: <bucket>.<domain>. */
  domain?: string | undefined;
  /** What GetBucketLocation answers; signatures are accepted for any region. */
  region: string;
}

const MAX_KEYS = 1000;

export function createS3App(node: StrataNode, options: S3Options): Hono {
  const app = new Hono();
  const started = new Date().toISOString();
  const buckets = new Map<string, S3Bucket>([
    ['checkpoints', new CheckpointBucket(node.checkpoints, node.models, started)],
    ['datasets', new DatasetBucket(node.datasets, (key) => node.objectMissing('hot', key), started, node.models.uploads)],
    ['models', new ModelBucket(node.models, started)],
  ]);

  // The native app's cross-cutting controls, applied here too (review: the S3 port had none):
  // the per-token rate limit, failed-authentication counting, the request log and metrics.
  const limit = node.config.security.rate_limit;
  const limiter = new RateLimiter(limit.requests_per_second, limit.burst, () => node.metrics.rateLimited.inc());

  app.all('*', async (c) => {
    const started = performance.now();
    let route = 's3';
    let tokenId: string | undefined;
    const response = await handle(c, (op) => (route = `s3:${op}`), (id) => (tokenId = id));
    const seconds = (performance.now() - started) / 1000;
    const method = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'].includes(c.req.method) ? c.req.method : 'other';
    node.metrics.observeRequest(method, route, response.status, seconds);
    node.requestLog.write({ reqId: response.headers.get('x-amz-request-id') ?? '', method, route, status: response.status, ms: Math.round(seconds * 1e4) / 10, tokenId });
    if (node.draining && !response.headers.has('x-hono-already-sent')) response.headers.set('Connection', 'close');
    return response;
  });

  const handle = async (c: Context, op: (name: string) => void, caller_: (tokenId: string) => void): Promise<Response> => {
    const requestId = randomUUID().replace(/-/g, '').slice(0, 16).toUpperCase();
    const target = rawTarget(c);
    const q = target.indexOf('?');
    const rawPath = q === -1 ? target : target.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : target.slice(q + 1));
    const headers: Record<string, string | undefined> = {};
    c.req.raw.headers.forEach((v, k) => (headers[k] = v));
    let resource = rawPath;
    try {
      const { bucket, key, virtual } = locate(rawPath, headers.host, options.domain);
      resource = bucket ? `/${bucket}${key ? `/${key}` : ''}` : '/';
      let verified: ReturnType<typeof verify>;
      try {
        const secretOf = (id: string) => node.tokens.s3Credential(id)?.secret;
        verified = isSigV2Query(query)
          ? verifyV2Query({ method: c.req.method, target, headers, virtualBucket: virtual ? bucket : undefined }, secretOf)
          : verify({ method: c.req.method, target, headers }, secretOf);
      } catch (err) {
        if (err instanceof S3Error && err.status === 403) node.authFailed(headers.authorization || query.has('X-Amz-Signature') || query.has('Signature') ? 'invalid' : 'missing');
        throw err;
      }
      const info = node.tokens.s3Credential(verified.accessKeyId)!.info;
      const caller: Caller = { tokenId: info.id, role: info.role, userId: info.user_id };
      caller_(caller.tokenId);
      try {
        limiter.take(caller.tokenId);
      } catch (err) {
        if (err instanceof RateLimited) throw Object.assign(new S3Error('SlowDown', 'Please reduce your request rate.', 503), { retryAfter: String((err.details as { retry_after_seconds?: number } | undefined)?.retry_after_seconds ?? 1) });
        throw err;
      }
      // Keys with control characters are refused: XML cannot carry most of them, and a listing
      // would not give back the key stored (review: a CR LF came back as LF).
      if (key !== undefined && /[\u0000-\u001f\u007f]/.test(key)) throw new S3Error('InvalidArgument', 'object keys cannot contain control characters');
      const allow = (access: Exclude<Access, 'public'>) => {
        try {
          authorize(caller, access);
        } catch (err) {
          throw new S3Error('AccessDenied', (err as Error).message);
        }
      };
      const method = c.req.method;
      if (!bucket) {
        if (method !== 'GET') throw new S3Error('MethodNotAllowed', 'only GET (ListBuckets) is allowed on the service');
        op('ListBuckets');
        allow('read');
        return xml(c, requestId, doc('ListAllMyBucketsResult', `<Owner>${el('ID', 'strata')}${el('DisplayName', 'strata')}</Owner><Buckets>${[...buckets.values()].map((b) => `<Bucket>${el('Name', b.name)}${el('CreationDate', isoDate(b.createdAt))}</Bucket>`).join('')}</Buckets>`));
      }
      const b = buckets.get(bucket);
      if (!key) {
        if (method === 'PUT') {
          allow('service');
          // The buckets are Strata's stores: creating one that exists is a no-op, others are refused.
          if (!b) throw new S3Error('InvalidBucketName', `buckets here are Strata's stores (${[...buckets.keys()].join(', ')}); "${bucket}" cannot be created`);
          return new Response(null, { status: 200, headers: { 'x-amz-request-id': requestId, Location: `/${bucket}` } });
        }
        if (!b) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist');
        if (method === 'POST' && query.has('delete')) {
          op('DeleteObjects');
          allow('service');
          return xml(c, requestId, await deleteObjects(c, b, headers, caller));
        }
        allow(b.readAccess);
        op(method === 'HEAD' ? 'HeadBucket' : 'ListObjects');
        if (method === 'HEAD') return new Response(null, { status: 200, headers: { 'x-amz-request-id': requestId, 'x-amz-bucket-region': options.region } });
        if (method !== 'GET') throw new S3Error('NotImplemented', `${method} on a bucket is not implemented`);
        if (query.has('location')) return xml(c, requestId, doc('LocationConstraint', '').replace('></LocationConstraint>', `>${options.region === 'us-east-1' ? '' : options.region}</LocationConstraint>`));
        if (query.has('versioning')) return xml(c, requestId, doc('VersioningConfiguration', ''));
        if (query.has('uploads')) return xml(c, requestId, doc('ListMultipartUploadsResult', el('Bucket', bucket) + el('IsTruncated', false)));
        // A configuration Strata has no counterpart for: said so, never a listing in its place.
        const sub = BUCKET_SUBRESOURCES.find((r) => query.has(r));
        if (sub) throw new S3Error('NotImplemented', `bucket ${sub} is not implemented: the buckets are Strata's stores`);
        return xml(c, requestId, listObjects(b, bucket, query));
      }
      if (!b) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist');
      if (method === 'GET' && query.has('uploadId')) {
        allow('service');
        const parts = await b.multipart.listParts(key, query.get('uploadId')!);
        return xml(
          c,
          requestId,
          doc('ListPartsResult', el('Bucket', bucket) + el('Key', key) + el('UploadId', query.get('uploadId')) + el('IsTruncated', false) + parts.map((p) => `<Part>${el('PartNumber', p.part)}${p.md5 ? el('ETag', `"${p.md5}"`) : ''}${el('Size', p.size)}</Part>`).join('')),
        );
      }
      const sub = OBJECT_SUBRESOURCES.find((r) => query.has(r));
      if (sub) {
        // aws s3 cp between keys reads the source's tags (GetObjectTagging) before copying: there
        // are none. Any other object sub-resource is refused, never answered with the object.
        op(`${method}Object:${sub}`);
        allow(b.readAccess);
        if (method === 'GET' && sub === 'tagging') {
          b.locate(key);
          return xml(c, requestId, doc('Tagging', '<TagSet></TagSet>'));
        }
        throw new S3Error('NotImplemented', `object ${sub} is not implemented`);
      }
      if (method === 'GET' || method === 'HEAD') {
        op(method === 'HEAD' ? 'HeadObject' : 'GetObject');
        allow(b.readAccess);
        return await getObject(c, b, key, headers, method === 'HEAD', requestId, query);
      }
      const uploadId = query.get('uploadId') ?? undefined;
      op(`${method}Object`);
      if (method === 'PUT') {
        allow('service');
        const copySource = headers['x-amz-copy-source'];
        if (copySource !== undefined && uploadId !== undefined) {
          // UploadPartCopy (aws s3 cp between keys goes multipart past 8 MiB): the part's bytes are
          // read from the source, which may be in any bucket the caller can read.
          op('UploadPartCopy');
          const part = partNumber(query);
          const src = parseCopySource(copySource);
          const sb = buckets.get(src.bucket);
          if (!sb) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist');
          allow(sb.readAccess);
          const o = sb.locate(src.key);
          const range = copyRange(headers['x-amz-copy-source-range'], o.size);
          const checked = checkBody((await o.open(range)) as AsyncIterable<Uint8Array>, {});
          await b.multipart.putPart({ tokenId: caller.tokenId }, key, uploadId, part, checked.body, {
            expectedSha256: undefined,
            length: range ? range.end - range.start + 1 : o.size,
            md5: checked.md5,
          });
          return xml(c, requestId, doc('CopyPartResult', el('LastModified', isoDate(new Date().toISOString())) + el('ETag', `"${checked.md5()}"`)));
        }
        if (copySource !== undefined) {
          const from = copySourceKey(copySource, bucket);
          const object = await needs(b, 'copy', 'copies')({ tokenId: caller.tokenId }, from, key);
          return xml(c, requestId, doc('CopyObjectResult', el('LastModified', isoDate(object.lastModified)) + el('ETag', `"${object.etag}"`)));
        }
        if (uploadId !== undefined || query.has('partNumber')) {
          if (uploadId === undefined) throw new S3Error('InvalidArgument', 'UploadPart needs uploadId and a partNumber from 1 to 10000');
          const part = partNumber(query);
          return await withUploadBody(c, async (source) => {
            const checked = checkBody(...framed(source, headers, verified));
            await b.multipart.putPart({ tokenId: caller.tokenId }, key, uploadId, part, checked.body, {
              expectedSha256: /^[0-9a-f]{64}$/.test(verified.payloadHash) ? verified.payloadHash : undefined,
              length: declaredLength(headers, verified.payloadHash),
              md5: checked.md5,
            });
            return new Response(null, { status: 200, headers: { 'x-amz-request-id': requestId, ETag: `"${checked.md5()}"`, ...checked.echo() } });
          });
        }
        return await withUploadBody(c, async (source) => {
          const stored = await putObject(b, key, source, headers, verified, caller);
          return new Response(null, { status: 200, headers: { 'x-amz-request-id': requestId, ETag: `"${stored.object.etag}"`, ...stored.echo } });
        });
      }
      if (method === 'POST' && query.has('uploads')) {
        allow('service');
        const id = await b.multipart.startMultipart({ tokenId: caller.tokenId }, key);
        return xml(c, requestId, doc('InitiateMultipartUploadResult', el('Bucket', bucket) + el('Key', key) + el('UploadId', id)));
      }
      if (method === 'POST' && uploadId !== undefined) {
        allow('service');
        const object = await completeMultipart(c, b, key, uploadId, caller);
        return xml(c, requestId, doc('CompleteMultipartUploadResult', el('Location', `/${bucket}/${key}`) + el('Bucket', bucket) + el('Key', key) + el('ETag', `"${object.etag}"`)));
      }
      if (method === 'DELETE') {
        allow('service');
        if (uploadId !== undefined) await b.multipart.abortMultipart({ tokenId: caller.tokenId }, key, uploadId);
        else await needs(b, 'delete', 'deletes')({ tokenId: caller.tokenId }, key);
        return new Response(null, { status: 204, headers: { 'x-amz-request-id': requestId } });
      }
      throw new S3Error('NotImplemented', `${method} ${query.toString() ? `with ?${[...query.keys()].join('&')} ` : ''}is not implemented`);
    } catch (err) {
      // The client went away mid-body: nobody reads the answer (499, as native requests log it).
      if (c.req.raw.signal?.aborted || (err as Error)?.message === 'aborted' || (err as NodeJS.ErrnoException)?.code === 'ECONNRESET') {
        node.log.info({ resource }, 'S3 client closed the connection before the answer');
        return new Response(null, { status: 499, headers: { 'x-amz-request-id': requestId } });
      }
      const e = toS3Error(err);
      if (e.status >= 500 && e.status !== 501 && e.status !== 503 && e.status !== 507) node.log.error({ err: String(err), resource }, 'S3 request failed');
      // A HEAD error has no body (the SDKs read the status alone).
      const body = c.req.method === 'HEAD' ? null : errorXml(e, resource, requestId);
      const contentRange = (e as { contentRange?: string }).contentRange;
      const retryAfter = (e as { retryAfter?: string }).retryAfter;
      return new Response(body, { status: e.status, headers: { 'Content-Type': 'application/xml', 'x-amz-request-id': requestId, ...(contentRange ? { 'Content-Range': contentRange } : {}), ...(retryAfter ? { 'Retry-After': retryAfter } : {}) } });
    }
  };
  return app;
}

/** The bucket's optional operation, or NotImplemented naming what to do instead. */
function needs<K extends 'delete' | 'copy'>(b: S3Bucket, op: K, what: string): NonNullable<S3Bucket[K]> {
  const fn = b[op];
  if (!fn) throw new S3Error('NotImplemented', `the ${b.name} bucket does not take ${what}`);
  return fn.bind(b) as NonNullable<S3Bucket[K]>;
}

function xml(_c: Context, requestId: string, body: string): Response {
  return new Response(body, { status: 200, headers: { 'Content-Type': 'application/xml', 'x-amz-request-id': requestId } });
}

/** Path style /bucket/key, or virtual-host style bucket.<domain>/key. */
function locate(rawPath: string, host: string | undefined, domain: string | undefined): { bucket: string | undefined; key: string | undefined; virtual?: true } {
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    throw new S3Error('InvalidArgument', 'the request path has a malformed percent-encoding');
  }
  const hostname = (host ?? '').replace(/:\d+$/, '').toLowerCase();
  if (domain && hostname.endsWith(`.${domain.toLowerCase()}`)) {
    const key = path.slice(1);
    return { bucket: hostname.slice(0, -domain.length - 1), key: key || undefined, virtual: true };
  }
  const slash = path.indexOf('/', 1);
  if (path === '/' || path === '') return { bucket: undefined, key: undefined };
  if (slash === -1) return { bucket: path.slice(1), key: undefined };
  const key = path.slice(slash + 1);
  return { bucket: path.slice(1, slash), key: key || undefined };
}

/**
 * ListObjectsV2 (list-type=2) and V1: keys after the start point, folded into CommonPrefixes
 * by the delimiter; a CommonPrefix counts toward max-keys like a key. The continuation token
 * is the last entry given (a key, or a CommonPrefix whose keys are then all skipped).
 */
function listObjects(b: S3Bucket, bucket: string, query: URLSearchParams): string {
  const v2 = query.get('list-type') === '2';
  const prefix = query.get('prefix') ?? '';
  const delimiter = query.get('delimiter') || undefined;
  const maxKeysText = query.get('max-keys');
  const maxKeys = maxKeysText === null ? MAX_KEYS : Number(maxKeysText);
  if (!Number.isInteger(maxKeys) || maxKeys < 0) throw new S3Error('InvalidArgument', 'max-keys must be a non-negative integer');
  const limit = Math.min(maxKeys, MAX_KEYS);
  const urlEncode = query.get('encoding-type') === 'url';
  if (query.has('encoding-type') && !urlEncode) throw new S3Error('InvalidArgument', 'encoding-type must be url');
  let after = '';
  const token = query.get('continuation-token');
  if (v2 && token !== null) {
    after = Buffer.from(token, 'base64url').toString('utf8');
    // Only a token this endpoint gave: it round-trips (review: garbage restarted anywhere).
    if (token === '' || Buffer.from(after, 'utf8').toString('base64url') !== token) throw new S3Error('InvalidArgument', 'The continuation token provided is incorrect');
  } else if (v2) after = query.get('start-after') ?? '';
  else after = query.get('marker') ?? '';
  const skipUnder = delimiter && after.endsWith(delimiter) ? after : undefined;

  const contents: S3Object[] = [];
  const prefixes: string[] = [];
  let last = '';
  let truncated = false;
  for (const o of b.list(prefix, delimiter, after, limit + 1)) {
    if (compareKeys(o.key, after) <= 0 || (skipUnder && o.key.startsWith(skipUnder))) continue;
    let entry: string = o.key;
    let common: string | undefined;
    if (delimiter) {
      const at = o.key.indexOf(delimiter, prefix.length);
      if (at !== -1) common = o.key.slice(0, at + delimiter.length);
    }
    if (common !== undefined) {
      if (prefixes.at(-1) === common) continue;
      entry = common;
    }
    if (contents.length + prefixes.length >= limit) {
      truncated = true;
      break;
    }
    if (common !== undefined) prefixes.push(common);
    else contents.push(o);
    last = entry;
  }
  const enc = (s: string) => (urlEncode ? encodeURIComponent(s).replace(/%2F/g, '/') : s);
  const items =
    contents.map((o) => `<Contents>${el('Key', enc(o.key))}${el('LastModified', isoDate(o.lastModified))}${el('ETag', `"${o.etag}"`)}${el('Size', o.size)}${el('StorageClass', 'STANDARD')}</Contents>`).join('') +
    prefixes.map((p) => `<CommonPrefixes>${el('Prefix', enc(p))}</CommonPrefixes>`).join('');
  const common = el('Name', bucket) + el('Prefix', enc(prefix)) + (delimiter ? el('Delimiter', enc(delimiter)) : '') + el('MaxKeys', maxKeys) + (urlEncode ? el('EncodingType', 'url') : '') + el('IsTruncated', truncated);
  if (v2) {
    return doc(
      'ListBucketResult',
      common +
        el('KeyCount', contents.length + prefixes.length) +
        (token ? el('ContinuationToken', token) : '') +
        (query.has('start-after') ? el('StartAfter', enc(query.get('start-after')!)) : '') +
        (truncated ? el('NextContinuationToken', Buffer.from(last, 'utf8').toString('base64url')) : '') +
        items,
    );
  }
  return doc('ListBucketResult', common + el('Marker', enc(query.get('marker') ?? '')) + (truncated ? el('NextMarker', enc(last)) : '') + items);
}

async function getObject(c: Context, b: S3Bucket, key: string, headers: Record<string, string | undefined>, head: boolean, requestId: string, query: URLSearchParams): Promise<Response> {
  const o = b.locate(key);
  const etag = `"${o.etag}"`;
  const modified = Math.floor(new Date(o.lastModified).getTime() / 1000) * 1000;
  const base: Record<string, string> = { 'x-amz-request-id': requestId, ETag: etag, 'Last-Modified': httpDate(o.lastModified), 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
  // response-* overrides (signed with the request, presigned links above all): the headers the
  // answer carries, e.g. a Content-Disposition that makes a browser save the file.
  for (const [param, header] of RESPONSE_OVERRIDES) {
    const value = query.get(param);
    if (value === null) continue;
    if (/[\r\n\0]/.test(value)) throw new S3Error('InvalidArgument', `${param} cannot contain line breaks`);
    base[header] = value;
  }
  // Conditionals in RFC 9110's order (S3's too): If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since.
  const ifMatch = headers['if-match'];
  if (ifMatch !== undefined && !matches(ifMatch, etag)) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
  const ifUnmodified = dateOf(headers['if-unmodified-since']);
  if (ifMatch === undefined && ifUnmodified !== undefined && modified > ifUnmodified) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
  const ifNoneMatch = headers['if-none-match'];
  const ifModified = dateOf(headers['if-modified-since']);
  if ((ifNoneMatch !== undefined && matches(ifNoneMatch, etag)) || (ifNoneMatch === undefined && ifModified !== undefined && modified <= ifModified)) {
    return new Response(null, { status: 304, headers: { 'x-amz-request-id': requestId, ETag: etag, 'Last-Modified': base['Last-Modified']! } });
  }
  // If-Range (RFC 9110 §13.1.5): the range only while the object is the one the client holds —
  // a strong ETag match, or a date no older than Last-Modified; otherwise the whole object.
  const ifRange = headers['if-range'];
  const rangeHolds = ifRange === undefined || (ifRange.startsWith('"') ? ifRange.trim() === etag : (dateOf(ifRange) ?? -1) >= modified);
  const range = rangeHolds ? parseRange(headers.range, o.size) : undefined;
  if (range === 'unsatisfiable') throw Object.assign(new S3Error('InvalidRange', 'The requested range is not satisfiable'), { contentRange: `bytes */${o.size}` });
  const status = range ? 206 : 200;
  // No checksum header on any answer: none is stored, and a full-object one on a 206 makes
  // `aws s3 cp` fail the download (FIELD-NOTES).
  const out: Record<string, string> = { ...base, 'Content-Length': String(range ? range.end - range.start + 1 : o.size) };
  if (range) out['Content-Range'] = `bytes ${range.start}-${range.end}/${o.size}`;
  if (head) {
    await o.check();
    return new Response(null, { status, headers: out });
  }
  const stream = await o.open(range);
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  if (!outgoing) return new Response(Readable.toWeb(stream) as ReadableStream, { status, headers: out });
  // As native downloads: straight into the socket under node:http (see routes/models.ts).
  outgoing.writeHead(status, out);
  pipeline(stream, outgoing).catch(() => stream.destroy());
  return new NativeResponse(null, { status, headers: { 'x-hono-already-sent': 'true' } });
}

/** The body as stored: aws-chunked decoded when the payload mode says so, with its trailers. */
function framed(source: AsyncIterable<Uint8Array>, headers: Record<string, string | undefined>, verified: ReturnType<typeof verify>): [AsyncIterable<Uint8Array>, Record<string, string | undefined>, () => Record<string, string>] {
  const mode = verified.payloadHash;
  if (!mode.startsWith('STREAMING-')) {
    if (mode !== 'UNSIGNED-PAYLOAD' && !/^[0-9a-f]{64}$/.test(mode)) throw new S3Error('InvalidRequest', 'x-amz-content-sha256 must be a SHA-256, UNSIGNED-PAYLOAD or a STREAMING- mode');
    return [source, headers, () => ({})];
  }
  const signed = mode === 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD' || mode === 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
  if (!signed && mode !== 'STREAMING-UNSIGNED-PAYLOAD-TRAILER') throw new S3Error('InvalidRequest', `unsupported x-amz-content-sha256 mode ${mode}`);
  const decodedText = headers['x-amz-decoded-content-length'];
  const decodedLength = decodedText === undefined ? undefined : Number(decodedText);
  if (decodedLength !== undefined && (!Number.isSafeInteger(decodedLength) || decodedLength < 0)) throw new S3Error('InvalidArgument', 'x-amz-decoded-content-length must be a non-negative integer');
  let trailers: Record<string, string> = {};
  const body = decodeAwsChunked(source, { ...(signed ? { signing: verified } : {}), ...(decodedLength !== undefined ? { decodedLength } : {}), trailers: (t) => (trailers = t) });
  return [body, headers, () => trailers];
}

async function putObject(
  b: S3Bucket,
  key: string,
  source: AsyncIterable<Uint8Array>,
  headers: Record<string, string | undefined>,
  verified: ReturnType<typeof verify>,
  caller: Caller,
): Promise<{ object: S3Object; echo: Record<string, string> }> {
  // A signed payload's SHA-256 is checked by the store itself (it hashes what it writes).
  const expectedSha256 = /^[0-9a-f]{64}$/.test(verified.payloadHash) ? verified.payloadHash : undefined;
  const checked = checkBody(...framed(source, headers, verified));
  const object = await b.put({ tokenId: caller.tokenId }, key, checked.body, checked.md5, expectedSha256);
  return { object, echo: checked.echo() };
}

const RESPONSE_OVERRIDES: Array<[string, string]> = [
  ['response-content-type', 'Content-Type'],
  ['response-content-disposition', 'Content-Disposition'],
  ['response-content-encoding', 'Content-Encoding'],
  ['response-content-language', 'Content-Language'],
  ['response-cache-control', 'Cache-Control'],
  ['response-expires', 'Expires'],
];

/** Sub-resources of a bucket that name a configuration S3 keeps and Strata does not. */
const BUCKET_SUBRESOURCES = ['accelerate', 'acl', 'analytics', 'cors', 'encryption', 'intelligent-tiering', 'inventory', 'lifecycle', 'logging', 'metrics', 'notification', 'object-lock', 'ownershipControls', 'policy', 'policyStatus', 'publicAccessBlock', 'replication', 'requestPayment', 'tagging', 'website'];
/** Sub-resources of an object other than the object itself. */
const OBJECT_SUBRESOURCES = ['acl', 'attributes', 'legal-hold', 'retention', 'restore', 'select', 'tagging', 'torrent'];

/** The smallest part S3 accepts, but for the last. */
const MIN_PART = 5 * 1024 * 1024;

/**
 * CompleteMultipartUpload: the listed parts, ascending, each but the last at least 5 MiB, each
 * ETag the MD5 the part had when it was stored (kept with the part, so completing reads no
 * part again). The object's ETag is S3's: the MD5 of the parts' binary MD5s, "-" and their count.
 */
async function completeMultipart(c: Context, b: S3Bucket, key: string, uploadId: string, caller: Caller): Promise<S3Object> {
  const text = await readSmallBody(c, 1024 * 1024);
  const parts = elements(text, 'Part').map((p) => ({ number: Number(elements(p, 'PartNumber')[0]), etag: (elements(p, 'ETag')[0] ?? '').trim().replace(/^"|"$/g, '') }));
  if (parts.length === 0 || parts.some((p) => !Number.isInteger(p.number) || p.number < 1 || p.number > 10_000)) throw new S3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
  for (let i = 1; i < parts.length; i++) if (parts[i]!.number <= parts[i - 1]!.number) throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. Parts must be ordered by part number.');
  // A retry whose first answer was lost (the session has ended): the same answer again.
  const done = b.multipart.completedUpload(key, uploadId);
  if (done) return done;
  const stored = new Map((await b.multipart.listParts(key, uploadId)).map((p) => [p.part, p]));
  const digests = parts.map((p, i) => {
    const s = stored.get(p.number);
    if (s === undefined) throw new S3Error('InvalidPart', `part ${p.number} was not uploaded`);
    if (i < parts.length - 1 && s.size < MIN_PART) throw new S3Error('EntityTooSmall', `part ${p.number} is ${s.size} bytes; every part but the last must be at least 5 MiB`);
    if (s.md5 === null || s.md5 !== p.etag.toLowerCase()) throw new S3Error('InvalidPart', `the ETag given for part ${p.number} is not the MD5 of the part stored`);
    return Buffer.from(s.md5, 'hex');
  });
  const etag = `${createHash('md5').update(Buffer.concat(digests)).digest('hex')}-${parts.length}`;
  return b.multipart.completeMultipart({ tokenId: caller.tokenId }, key, uploadId, parts.map((p) => p.number), etag);
}

/** The body's length as the request declared it (decoded, for aws-chunked), if it did. */
function declaredLength(headers: Record<string, string | undefined>, payloadHash: string): number | undefined {
  const text = payloadHash.startsWith('STREAMING-') ? headers['x-amz-decoded-content-length'] : headers['content-length'];
  return text !== undefined && /^\d{1,15}$/.test(text) ? Number(text) : undefined;
}

/** x-amz-copy-source: "/bucket/key" or "bucket/key", URL-encoded, optionally ?versionId=… (ignored). */
function parseCopySource(header: string): { bucket: string; key: string } {
  let source: string;
  try {
    source = decodeURIComponent(header.split('?')[0]!.replace(/^\//, ''));
  } catch {
    throw new S3Error('InvalidArgument', 'x-amz-copy-source has a malformed percent-encoding');
  }
  const slash = source.indexOf('/');
  if (slash === -1 || slash === source.length - 1) throw new S3Error('InvalidArgument', 'x-amz-copy-source must be bucket/key');
  return { bucket: source.slice(0, slash), key: source.slice(slash + 1) };
}

/** CopyObject's source: the same bucket (a copy is a new reference to the same blob). */
function copySourceKey(header: string, bucket: string): string {
  const src = parseCopySource(header);
  if (src.bucket !== bucket) throw new S3Error('NotImplemented', 'CopyObject between buckets is not implemented (the buckets are different stores); copy in parts (UploadPartCopy) or download and upload');
  return src.key;
}

/** x-amz-copy-source-range: bytes=first-last, inside the source. */
function copyRange(header: string | undefined, size: number): { start: number; end: number } | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d{1,15})-(\d{1,15})$/.exec(header.trim());
  if (!m) throw new S3Error('InvalidArgument', 'x-amz-copy-source-range must be bytes=first-last');
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (start > end || end >= size) throw new S3Error('InvalidRange', `The requested range bytes=${start}-${end} is not satisfiable for an object of ${size} bytes`);
  return { start, end };
}

/** partNumber: 1 to 10000, digits only. */
function partNumber(query: URLSearchParams): number {
  const text = query.get('partNumber') ?? '';
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 10_000) throw new S3Error('InvalidArgument', 'UploadPart needs uploadId and a partNumber from 1 to 10000');
  return Number(text);
}

/** DeleteObjects: each key deleted where allowed; errors per key, not for the request. */
async function deleteObjects(c: Context, b: S3Bucket, headers: Record<string, string | undefined>, caller: Caller): Promise<string> {
  const text = await readSmallBody(c, 2 * 1024 * 1024, headers);
  const quiet = (elements(text, 'Quiet')[0] ?? '').trim() === 'true';
  const keys = elements(text, 'Object').map((o) => elements(o, 'Key')[0]);
  if (keys.length === 0 || keys.length > 1000 || keys.some((k) => k === undefined)) throw new S3Error('MalformedXML', 'Delete needs 1 to 1000 <Object><Key>…</Key></Object> elements');
  let out = '';
  for (const key of keys as string[]) {
    try {
      await needs(b, 'delete', 'deletes')({ tokenId: caller.tokenId }, key);
      if (!quiet) out += `<Deleted>${el('Key', key)}</Deleted>`;
    } catch (err) {
      const e = toS3Error(err);
      out += `<Error>${el('Key', key)}${el('Code', e.code)}${el('Message', e.message)}</Error>`;
    }
  }
  return doc('DeleteResult', out);
}

async function readSmallBody(c: Context, max: number, headers?: Record<string, string | undefined>): Promise<string> {
  const stream = c.req.raw.body;
  if (!stream) return '';
  // Content-MD5 or a flexible checksum on these small XML bodies is checked like a PUT's.
  const body = headers ? checkBody(stream as unknown as AsyncIterable<Uint8Array>, headers).body : (stream as unknown as AsyncIterable<Uint8Array>);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > max) throw new S3Error('MalformedXML', `the request body is larger than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function matches(header: string, etag: string): boolean {
  return header.split(',').some((t) => {
    const tag = t.trim();
    return tag === '*' || tag === etag || tag === etag.slice(1, -1) || tag === `W/${etag}`;
  });
}

function dateOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : t;
}

/** Strata's own errors as the S3 codes a client expects. */
function toS3Error(err: unknown): S3Error {
  if (err instanceof S3Error) return err;
  if (err instanceof StrataError) {
    // A full disk is 507 with MinIO's kind of code: retrying will not help, unlike a 503.
    const byCode: Record<string, [string, number]> = {
      insufficient_storage: ['XStrataStorageFull', 507],
      unavailable: ['ServiceUnavailable', 503],
      read_only_replica: ['AccessDenied', 403],
      not_found: ['NoSuchKey', 404],
      forbidden: ['AccessDenied', 403],
      invalid_input: ['InvalidArgument', 400],
      payload_too_large: ['EntityTooLarge', 400],
      conflict: ['OperationAborted', 409],
    };
    const [code, status] = byCode[err.code] ?? ['InternalError', 500];
    return new S3Error(code, err.message, status);
  }
  return new S3Error('InternalError', 'We encountered an internal error. Please try again.');
}

import { createHmac, timingSafeEqual } from 'node:crypto';
import { S3Error } from './s3-error.js';
import { MAX_EXPIRES_S, type SecretLookup, type SignedRequest, type Verified } from './sigv4.js';

// Presigned URLs signed the old way (Signature Version 2 query auth: AWSAccessKeyId, Expires,
// Signature). Only this form of SigV2 is accepted, because boto3 — 1.26 as Debian ships it and
// 1.43 alike — still presigns with it when the client is built with an endpoint_url and no
// signature_version: `generate_presigned_url` then hands users a URL they expect to work. MinIO
// accepts it for the same reason. Header auth stays SigV4-only.
//
// StringToSign = VERB \n Content-MD5 \n Content-Type \n Expires \n x-amz-* headers resource,
// signed with HMAC-SHA1 (node:crypto). The resource is the path as sent (still percent-encoded,
// as botocore signs it), "/bucket" first for a virtual-host request, then the sub-resources S3
// names, sorted, with decoded values.

const SUBRESOURCES = new Set([
  'acl', 'cors', 'delete', 'lifecycle', 'location', 'logging', 'notification', 'partNumber', 'policy', 'requestPayment',
  'response-cache-control', 'response-content-disposition', 'response-content-encoding', 'response-content-language',
  'response-content-type', 'response-expires', 'restore', 'tagging', 'torrent', 'uploadId', 'uploads', 'versionId', 'versioning', 'versions', 'website',
]);

/** Whether a query carries SigV2 presigned auth. */
export function isSigV2Query(params: URLSearchParams): boolean {
  return params.has('AWSAccessKeyId') && params.has('Signature');
}

export function verifyV2Query(req: SignedRequest & { virtualBucket?: string | undefined }, secretOf: SecretLookup, nowMs = Date.now()): Verified {
  if (req.headers.authorization !== undefined) throw new S3Error('InvalidArgument', 'Only one auth mechanism allowed; only the Signature query parameter or the Authorization header should be specified');
  const q = req.target.indexOf('?');
  const rawPath = q === -1 ? req.target : req.target.slice(0, q);
  const params = new URLSearchParams(q === -1 ? '' : req.target.slice(q + 1));
  const accessKeyId = params.get('AWSAccessKeyId')!;
  // A "+" the client left unescaped reads as a space; base64 has no spaces.
  const signature = params.get('Signature')!.replace(/ /g, '+');
  const expiresRaw = params.get('Expires') ?? '';
  if (!/^\d{1,12}$/.test(expiresRaw)) throw new S3Error('AccessDenied', 'Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters');
  const expires = Number(expiresRaw);
  if (nowMs > expires * 1000) throw new S3Error('AccessDenied', 'Request has expired');
  if (expires * 1000 - nowMs > MAX_EXPIRES_S * 1000) throw new S3Error('AuthorizationQueryParametersError', `a presigned URL may live at most ${MAX_EXPIRES_S} seconds`);
  const secret = secretOf(accessKeyId);
  if (secret === undefined) throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
  const amz = Object.keys(req.headers)
    .filter((k) => k.startsWith('x-amz-'))
    .sort()
    .map((k) => `${k}:${req.headers[k]!.trim()}\n`)
    .join('');
  const sub = [...params.entries()]
    .filter(([k]) => SUBRESOURCES.has(k))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([k, v]) => (v === '' ? k : `${k}=${v}`))
    .join('&');
  const resource = `${req.virtualBucket ? `/${req.virtualBucket}` : ''}${rawPath}${sub ? `?${sub}` : ''}`;
  const stringToSign = `${req.method}\n${req.headers['content-md5'] ?? ''}\n${req.headers['content-type'] ?? ''}\n${expiresRaw}\n${amz}${resource}`;
  const expected = createHmac('sha1', secret).update(stringToSign).digest();
  const given = Buffer.from(signature, 'base64');
  if (given.length !== expected.length || given.toString('base64') !== signature || !timingSafeEqual(given, expected)) {
    throw new S3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
  }
  return { accessKeyId, payloadHash: 'UNSIGNED-PAYLOAD', signingKey: Buffer.alloc(0), seedSignature: '', amzDate: '', scope: '' };
}

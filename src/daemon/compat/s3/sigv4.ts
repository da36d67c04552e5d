import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { S3Error } from './s3-error.js';

// AWS Signature Version 4 as S3 checks it, for the S3-compatible endpoint: header auth
// (Authorization: AWS4-HMAC-SHA256 …) and presigned URLs (X-Amz-Algorithm … in the query).
// The canonical request is rebuilt from what arrived — the path decoded and encoded again by
// S3's rule (every byte but A–Z a–z 0–9 - . _ ~ and "/"), the query sorted by encoded name —
// so clients that escape more or less than needed still verify. Only node:crypto primitives
// (HMAC-SHA256, SHA-256, constant-time compare); nothing hand-rolled.
//
// Not here: what the payload hash promises. verify() returns it (a hex SHA-256, UNSIGNED-PAYLOAD
// or a STREAMING-… mode) with the signing key and seed signature that aws-chunked.ts needs for
// per-chunk signatures.

export const ALGORITHM = 'AWS4-HMAC-SHA256';
/** How far x-amz-date may be from this node's clock (S3's own limit). */
export const MAX_SKEW_MS = 15 * 60 * 1000;
/** The longest a presigned URL may live (S3: seven days). */
export const MAX_EXPIRES_S = 7 * 24 * 3600;

export interface SignedRequest {
  method: string;
  /** The request target as sent: path and query, still percent-encoded. */
  target: string;
  /** Lower-case header names; a repeated header's values joined by ",". */
  headers: Record<string, string | undefined>;
}

export interface Verified {
  accessKeyId: string;
  /** The x-amz-content-sha256 value (header auth) or UNSIGNED-PAYLOAD (presigned). */
  payloadHash: string;
  /** For per-chunk signatures of aws-chunked bodies. */
  signingKey: Buffer;
  seedSignature: string;
  amzDate: string;
  scope: string;
}

/** Finds the secret of an access key id, or undefined when there is no such key. */
export type SecretLookup = (accessKeyId: string) => string | undefined;

export function verify(req: SignedRequest, secretOf: SecretLookup, nowMs = Date.now()): Verified {
  const q = req.target.indexOf('?');
  const rawPath = q === -1 ? req.target : req.target.slice(0, q);
  const params = parseQuery(q === -1 ? '' : req.target.slice(q + 1));
  const presigned = params.some(([k]) => k === 'X-Amz-Algorithm');
  if (presigned && req.headers.authorization !== undefined) throw new S3Error('InvalidArgument', 'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified');
  if (presigned && params.filter(([k]) => k.startsWith('X-Amz-')).length !== new Set(params.filter(([k]) => k.startsWith('X-Amz-')).map(([k]) => k)).size) throw new S3Error('AuthorizationQueryParametersError', 'a presigned URL names each X-Amz- parameter once');
  const auth = presigned ? fromQuery(params, nowMs) : fromHeader(req.headers, nowMs);
  // Exactly 64 lower-case hex digits: Buffer.from(…, 'hex') stops at the first bad one, so
  // trailing junk after a valid signature was accepted (review).
  if (!/^[0-9a-f]{64}$/.test(auth.signature)) throw new S3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
  const secret = secretOf(auth.accessKeyId);
  if (secret === undefined) throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
  const signed = auth.signedHeaders.split(';');
  if (!signed.includes('host')) throw new S3Error('AuthorizationHeaderMalformed', 'the signed headers must include host');
  const headerLines = signed.map((name) => {
    const value = req.headers[name];
    if (value === undefined) throw new S3Error('AccessDenied', `a signed header is missing from the request: ${name}`);
    return `${name}:${value.trim().replace(/\s+/g, ' ')}\n`;
  });
  const payloadHash = presigned ? (req.headers['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD') : (req.headers['x-amz-content-sha256'] ?? '');
  if (!presigned && payloadHash === '') throw new S3Error('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  const canonical = [
    req.method,
    canonicalPath(rawPath),
    canonicalQuery(presigned ? params.filter(([k]) => k !== 'X-Amz-Signature') : params),
    headerLines.join(''),
    auth.signedHeaders,
    presigned ? 'UNSIGNED-PAYLOAD' : payloadHash,
  ].join('\n');
  const stringToSign = [ALGORITHM, auth.amzDate, auth.scope, sha256Hex(canonical)].join('\n');
  const signingKey = deriveKey(secret, auth.date, auth.region, auth.service);
  const expected = createHmac('sha256', signingKey).update(stringToSign).digest();
  const given = Buffer.from(auth.signature, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new S3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
  }
  return { accessKeyId: auth.accessKeyId, payloadHash, signingKey, seedSignature: auth.signature, amzDate: auth.amzDate, scope: auth.scope };
}

/** kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"). */
export function deriveKey(secret: string, date: string, region: string, service: string): Buffer {
  const kDate = createHmac('sha256', `AWS4${secret}`).update(date).digest();
  const kRegion = createHmac('sha256', kDate).update(region).digest();
  const kService = createHmac('sha256', kRegion).update(service).digest();
  return createHmac('sha256', kService).update('aws4_request').digest();
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

interface AuthFields {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  scope: string;
  signedHeaders: string;
  signature: string;
  amzDate: string;
}

function fromHeader(headers: SignedRequest['headers'], nowMs: number): AuthFields {
  const header = headers.authorization;
  if (!header) throw new S3Error('AccessDenied', 'Access Denied (no Authorization header and no presigned query)');
  if (!header.startsWith(`${ALGORITHM} `)) throw new S3Error('AuthorizationHeaderMalformed', `only ${ALGORITHM} is accepted`);
  const fields = new Map<string, string>();
  for (const part of header.slice(ALGORITHM.length + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (!credential || !signedHeaders || !signature) throw new S3Error('AuthorizationHeaderMalformed', 'the Authorization header needs Credential, SignedHeaders and Signature');
  const amzDate = headers['x-amz-date'];
  if (!amzDate) throw new S3Error('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
  const when = parseAmzDate(amzDate);
  if (Math.abs(when - nowMs) > MAX_SKEW_MS) throw new S3Error('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.');
  return { ...parseCredential(credential, amzDate), signedHeaders: signedHeaders.toLowerCase(), signature, amzDate };
}

function fromQuery(params: Array<[string, string]>, nowMs: number): AuthFields {
  const get = (k: string) => params.find(([name]) => name === k)?.[1];
  if (get('X-Amz-Algorithm') !== ALGORITHM) throw new S3Error('AuthorizationQueryParametersError', `X-Amz-Algorithm must be ${ALGORITHM}`);
  const credential = get('X-Amz-Credential');
  const signedHeaders = get('X-Amz-SignedHeaders');
  const signature = get('X-Amz-Signature');
  const amzDate = get('X-Amz-Date');
  const expires = Number(get('X-Amz-Expires'));
  if (!credential || !signedHeaders || !signature || !amzDate) throw new S3Error('AuthorizationQueryParametersError', 'a presigned URL needs X-Amz-Credential, X-Amz-Date, X-Amz-SignedHeaders and X-Amz-Signature');
  if (!Number.isInteger(expires) || expires < 1 || expires > MAX_EXPIRES_S) throw new S3Error('AuthorizationQueryParametersError', `X-Amz-Expires must be an integer from 1 to ${MAX_EXPIRES_S}`);
  const when = parseAmzDate(amzDate);
  if (when - nowMs > MAX_SKEW_MS) throw new S3Error('AccessDenied', 'Request is not valid yet');
  if (nowMs > when + expires * 1000) throw new S3Error('AccessDenied', 'Request has expired');
  return { ...parseCredential(credential, amzDate), signedHeaders: signedHeaders.toLowerCase(), signature, amzDate };
}

function parseCredential(credential: string, amzDate: string): Pick<AuthFields, 'accessKeyId' | 'date' | 'region' | 'service' | 'scope'> {
  const parts = credential.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request') throw new S3Error('AuthorizationHeaderMalformed', 'Credential must be <key>/<date>/<region>/<service>/aws4_request');
  const [accessKeyId, date, region, service] = parts as [string, string, string, string];
  if (date !== amzDate.slice(0, 8)) throw new S3Error('AuthorizationHeaderMalformed', 'the credential date does not match x-amz-date');
  if (service !== 's3') throw new S3Error('AuthorizationHeaderMalformed', `the credential names service ${service}, not s3`);
  return { accessKeyId, date, region, service, scope: `${date}/${region}/${service}/aws4_request` };
}

function parseAmzDate(v: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(v);
  if (!m) throw new S3Error('AccessDenied', 'x-amz-date must be of the form YYYYMMDDTHHMMSSZ');
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** Query pairs decoded; a name without "=" has the empty value. */
function parseQuery(raw: string): Array<[string, string]> {
  if (raw === '') return [];
  return raw.split('&').filter(Boolean).map((pair) => {
    const eq = pair.indexOf('=');
    const k = eq === -1 ? pair : pair.slice(0, eq);
    const v = eq === -1 ? '' : pair.slice(eq + 1);
    return [decode(k), decode(v)];
  });
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, '%20'));
  } catch {
    throw new S3Error('InvalidArgument', 'the request target has a malformed percent-encoding');
  }
}

/** S3's URI encoding: every byte but the unreserved set, "/" kept in paths. */
export function uriEncode(s: string, keepSlash: boolean): string {
  const encoded = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepSlash ? encoded.replace(/%2F/g, '/') : encoded;
}

function canonicalPath(rawPath: string): string {
  return uriEncode(decodePath(rawPath), true);
}

function decodePath(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new S3Error('InvalidArgument', 'the request path has a malformed percent-encoding');
  }
}

function canonicalQuery(params: Array<[string, string]>): string {
  return params
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

import { describe, expect, it } from 'vitest';
import { S3Error } from '../../../../src/daemon/compat/s3/s3-error.js';
import { verifyV2Query } from '../../../../src/daemon/compat/s3/sigv2-query.js';

// Vectors signed by botocore (Debian's python3-boto3, generate_presigned_url with an endpoint_url
// and the clock held at 1141889060, ExpiresIn=60), not by this code.
const ID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const QUERY = `AWSAccessKeyId=${ID}&Expires=1141889120&Signature=fScKGHCDI0NY5E7CYp9Vc8VKMbY%3D`;
const NOW = 1141889000_000;
const secretOf = (id: string) => (id === ID ? SECRET : undefined);
const code = (f: () => unknown) => {
  try {
    f();
    return 'ok';
  } catch (err) {
    return err instanceof S3Error ? err.code : String(err);
  }
};

describe('SigV2 presigned URLs', () => {
  it("verifies AWS's documented example, path style and virtual-host style", () => {
    expect(verifyV2Query({ method: 'GET', target: `/johnsmith/photos/puppy.jpg?${QUERY}`, headers: {} }, secretOf, NOW).accessKeyId).toBe(ID);
    expect(code(() => verifyV2Query({ method: 'GET', target: `/photos/puppy.jpg?${QUERY}`, headers: {}, virtualBucket: 'johnsmith' }, secretOf, NOW))).toBe('ok');
    // An escaped key and a signed response-content-type override.
    const target = `/johnsmith/photos/a%20b%2Bc.jpg?response-content-type=text%2Fplain&AWSAccessKeyId=${ID}&Signature=KUXTY1TdgE3rUOiCpajDKEeXP%2B0%3D&Expires=1141889120`;
    expect(code(() => verifyV2Query({ method: 'GET', target, headers: {} }, secretOf, NOW))).toBe('ok');
    expect(code(() => verifyV2Query({ method: 'GET', target: target.replace('text%2Fplain', 'text%2Fhtml'), headers: {} }, secretOf, NOW))).toBe('SignatureDoesNotMatch');
  });

  it('refuses another path, method or key, an expired or too distant Expires, and a second auth mechanism', () => {
    expect(code(() => verifyV2Query({ method: 'GET', target: `/johnsmith/photos/kitten.jpg?${QUERY}`, headers: {} }, secretOf, NOW))).toBe('SignatureDoesNotMatch');
    expect(code(() => verifyV2Query({ method: 'PUT', target: `/johnsmith/photos/puppy.jpg?${QUERY}`, headers: {} }, secretOf, NOW))).toBe('SignatureDoesNotMatch');
    expect(code(() => verifyV2Query({ method: 'GET', target: `/johnsmith/photos/puppy.jpg?${QUERY.replace(ID, 'AKIAOTHER')}`, headers: {} }, secretOf, NOW))).toBe('InvalidAccessKeyId');
    expect(code(() => verifyV2Query({ method: 'GET', target: `/johnsmith/photos/puppy.jpg?${QUERY}`, headers: {} }, secretOf, 1141889121_000))).toBe('AccessDenied');
    expect(code(() => verifyV2Query({ method: 'GET', target: `/johnsmith/photos/puppy.jpg?${QUERY}`, headers: {} }, secretOf, NOW - 8 * 86_400_000))).toBe('AuthorizationQueryParametersError');
    expect(code(() => verifyV2Query({ method: 'GET', target: `/johnsmith/photos/puppy.jpg?${QUERY.replace('1141889120', 'soon')}`, headers: {} }, secretOf, NOW))).toBe('AccessDenied');
    expect(code(() => verifyV2Query({ method: 'GET', target: `/johnsmith/photos/puppy.jpg?${QUERY}`, headers: { authorization: 'AWS4-HMAC-SHA256 x' } }, secretOf, NOW))).toBe('InvalidArgument');
  });
});

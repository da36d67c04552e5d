import { createHash, createHmac } from 'node:crypto';

/** The AWS SDK signer's hash interface over node:crypto, for requests the tests sign by hand. */
export class Sha256 {
  private readonly h;
  constructor(secret?: string | Uint8Array) {
    this.h = secret ? createHmac('sha256', secret) : createHash('sha256');
  }
  update(data: string | Uint8Array) {
    this.h.update(data);
  }
  async digest() {
    return new Uint8Array(this.h.digest());
  }
}

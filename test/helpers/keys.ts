import { randomBytes } from 'node:crypto';
import { openValue, sealValue } from '../../src/engines/crypto/aead.js';
import type { KeyWrapper } from '../../src/engines/crypto/sealed-stream.js';

/** A KEK held in memory, for driver-level tests that need no database. */
export function testKeyWrapper(kek = randomBytes(32)): KeyWrapper {
  return {
    wrap: (key, context) => sealValue(kek, key, Buffer.from(context)),
    unwrap: (wrapped, context) => openValue(kek, wrapped, Buffer.from(context)),
  };
}

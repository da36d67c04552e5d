import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

// The master key never encrypts data itself: it wraps the key-encryption key kept in the
// database (keyring.ts), so rotating it rewrites one row, not the data. It comes from a file
// (`openssl rand -base64 32`) or from the config through ${ENV}, and is exactly 32 bytes.

export class MasterKeyError extends Error {}

export interface MasterKey {
  key: Buffer;
  /** Names the key without revealing it, so an error can say which key a data dir expects. */
  id: string;
}

export function loadMasterKey(source: { file?: string | undefined; value?: string | undefined }): MasterKey {
  let text: string;
  if (source.value !== undefined) text = source.value;
  else if (source.file !== undefined) {
    try {
      text = readFileSync(source.file, 'utf8');
    } catch (err) {
      throw new MasterKeyError(`cannot read the master key file ${source.file} (${(err as NodeJS.ErrnoException).code})`);
    }
  } else throw new MasterKeyError('encryption is enabled but no master key is configured (encryption.master_key_file or encryption.master_key)');
  const trimmed = text.trim();
  const key = Buffer.from(trimmed, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || key.length !== 32) {
    throw new MasterKeyError(`the master key must be 32 random bytes in base64 (as \`openssl rand -base64 32\` prints them); got ${key.length} bytes`);
  }
  return { key, id: masterKeyId(key) };
}

export function masterKeyId(key: Buffer): string {
  return createHmac('sha256', key).update('strata master key id').digest('hex').slice(0, 16);
}

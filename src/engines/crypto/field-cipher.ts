import type { Tx } from '../sql/writer.js';
import { openValue, sealValue } from './aead.js';
import type { Keyring } from './keyring.js';

// Sensitive columns (message content, emails, preferences, feedback text) sealed with the
// owning user's key. A sealed value is text — "enc1:" + base64(nonce ‖ ciphertext ‖ tag) —
// so it fits the existing TEXT columns, travels through the change log and archives as is,
// and is told apart from plaintext written before encryption was turned on. The user id is
// the associated data: a value copied into another user's row does not open.

const PREFIX = 'enc1:';

export class FieldCipher {
  constructor(private readonly keyring: Keyring | undefined) {}

  get enabled(): boolean {
    return this.keyring?.enabled ?? false;
  }

  seal(tx: Tx, userId: string, text: string): string {
    if (!this.enabled) return text;
    const key = this.keyring!.userKeyForWrite(tx, userId);
    return PREFIX + sealValue(key, Buffer.from(text, 'utf8'), Buffer.from(userId)).toString('base64');
  }

  /**
   * Seals with the key the user already has, for a store other than the one that holds keys
   * (the billing ledger): the key must exist, see ensureKey.
   */
  sealWithExistingKey(userId: string, text: string): string {
    if (!this.enabled) return text;
    const key = this.keyring!.userKey(userId);
    if (!key) throw new Error(`user ${userId} has no data key; call ensureKey in a write first`);
    return PREFIX + sealValue(key, Buffer.from(text, 'utf8'), Buffer.from(userId)).toString('base64');
  }

  /** Whether sealing for the user needs a key made first (encryption on, and none yet). */
  needsKey(userId: string): boolean {
    return this.enabled && this.keyring!.userKey(userId) === undefined;
  }

  /** Makes the user's key in this transaction if there is none. */
  ensureKey(tx: Tx, userId: string): void {
    if (this.enabled) this.keyring!.userKeyForWrite(tx, userId);
  }

  /** Plaintext of a stored value; a value whose user key was destroyed reads as undefined. */
  open(userId: string, stored: string): string | undefined {
    if (!stored.startsWith(PREFIX)) return stored;
    const key = this.keyring?.userKey(userId);
    if (!key) return undefined;
    return openValue(key, Buffer.from(stored.slice(PREFIX.length), 'base64'), Buffer.from(userId)).toString('utf8');
  }

  /** The lookup key of an email: its lower-cased form, or a keyed hash of it when encrypted. */
  emailKey(email: string): string {
    const normal = email.trim().toLowerCase();
    return this.enabled ? this.keyring!.blindIndex(`email:${normal}`) : normal;
  }
}

import { RateLimited } from '../engines/errors.js';

// Per-token token buckets: `burst` requests at once, refilled at `perSecond`. In memory and per
// node — a limit against a runaway or hostile client, not billing (quotas do that, durably).
// Idle buckets are dropped, so memory follows the number of recently active tokens.

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private sweeps = 0;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly onLimited: () => void = () => undefined,
  ) {}

  /** Takes one request from the token's bucket or throws RateLimited (429 with Retry-After). */
  take(tokenId: string, now = performance.now()): void {
    if (this.perSecond <= 0) return;
    const b = this.buckets.get(tokenId) ?? { tokens: this.burst, at: now };
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
    b.at = now;
    if (b.tokens < 1) {
      this.buckets.set(tokenId, b);
      this.onLimited();
      throw new RateLimited(Math.max(1, Math.ceil((1 - b.tokens) / this.perSecond)));
    }
    b.tokens -= 1;
    this.buckets.set(tokenId, b);
    if (++this.sweeps % 10_000 === 0) this.sweep(now);
  }

  private sweep(now: number): void {
    const full = (this.burst / this.perSecond) * 1000;
    for (const [id, b] of this.buckets) if (now - b.at > full) this.buckets.delete(id);
  }
}

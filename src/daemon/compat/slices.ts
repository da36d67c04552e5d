// Cooperative slicing for CPU work a compatible API does on the event loop in proportion to
// what a client asked for (re-ranking, rendering a page of large messages): tick() yields to
// the loop once the current slice has run for SLICE_MS, so other requests are served between
// slices instead of waiting for the whole job.

const SLICE_MS = 8;

export class Slices {
  private started = performance.now();

  async tick(): Promise<void> {
    if (performance.now() - this.started < SLICE_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    this.started = performance.now();
  }
}

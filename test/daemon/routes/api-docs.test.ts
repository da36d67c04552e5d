import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { startDaemon, tempDir } from '../../helpers/daemon.js';

// GET /docs renders the OpenAPI document with the bundled Swagger UI. The page is loaded in
// headless Chromium (Debian's `chromium`), which runs its scripts with no network but the
// daemon's: a rendered operation list proves the page, its files and /openapi.json work
// together and that nothing is fetched from a CDN.

const CHROMIUM = ['chromium', 'chromium-browser'].find((c) => spawnSync(c, ['--version']).status === 0);

describe('GET /docs', () => {
  it('serves the page and the renderer\'s files from the package, without a token', async () => {
    const d = await startDaemon();
    try {
      const page = await fetch(`${d.url}/docs`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toContain('text/html');
      const html = await page.text();
      expect(html).not.toMatch(/https?:\/\//);
      for (const f of ['swagger-ui.css', 'swagger-ui-bundle.js', 'init.js']) {
        const r = await fetch(`${d.url}/docs/${f}`);
        expect(r.status, f).toBe(200);
        expect((await r.arrayBuffer()).byteLength, f).toBeGreaterThan(50);
      }
      const other = await fetch(`${d.url}/docs/index.html`);
      expect(other.status).toBe(400);
      expect((await other.json()).error.code).toBe('invalid_input');
    } finally {
      await d.stop();
    }
  });

  it.skipIf(!CHROMIUM && process.env.CI !== 'true')('renders the operation list in headless Chromium', async () => {
    expect(CHROMIUM, 'chromium is required in CI (apt-get install chromium)').toBeDefined();
    const d = await startDaemon();
    try {
      const r = spawnSync(
        CHROMIUM!,
        ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${tempDir('strata-chromium-')}`, '--virtual-time-budget=15000', '--dump-dom', `${d.url}/docs`],
        { encoding: 'utf8', timeout: 90_000 },
      );
      expect(r.status, r.stderr).toBe(0);
      const dom = r.stdout;
      // Swagger UI's operation blocks, one per route: the users and models routes among them.
      const operations = dom.match(/class="opblock opblock-/g) ?? [];
      expect(operations.length, dom.slice(0, 2000)).toBeGreaterThan(50);
      expect(dom).toContain('/v1/users');
      expect(dom).toContain('/v1/models/{model}/versions');
    } finally {
      await d.stop();
    }
  }, 120_000);
});

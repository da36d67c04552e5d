import { z } from 'zod';
import { detectPii } from '../../engines/privacy/pii-detector.js';
import type { ApiRouter } from '../api-router.js';

// Erasure and export live with the users routes (they act on a user); this is the scanner.

export function privacyRoutes(router: ApiRouter): void {
  router.route(
    {
      method: 'post',
      path: '/v1/privacy/scan',
      summary: 'Find personal data in a text: emails, phones, credit cards, US SSNs, IPs, API keys (offsets in UTF-16 code units)',
      tag: 'privacy',
      access: 'shared',
      body: z.strictObject({ text: z.string().max(1_000_000) }),
      responses: { 200: { description: '{findings: [{type, start, end}]}' } },
    },
    async (c, { body }) => c.json({ findings: detectPii(body.text) }),
  );
}

import { z } from 'zod';
import type { ApiRouter } from '../api-router.js';
import type { StrataNode } from '../strata-node.js';

// Erasure and export live with the users routes (they act on a user); here: retention and the scanner.

export function privacyRoutes(router: ApiRouter, node: StrataNode): void {
  router.route(
    {
      method: 'post',
      path: '/v1/admin/jobs/retention',
      summary: 'Apply the retention policies now, or with ?dry_run=true list what they would remove',
      tag: 'admin',
      access: 'admin',
      query: z.strictObject({ dry_run: z.enum(['true', 'false']).optional() }),
      responses: { 200: { description: 'per data kind: counts, cutoffs and (model versions) items' } },
    },
    async (c, { query }) => c.json(await node.runRetention(query.dry_run === 'true')),
  );

  router.route(
    {
      method: 'post',
      path: '/v1/privacy/scan',
      summary: 'Find personal data in a text: emails, phones, credit cards, US SSNs, IPs, API keys (offsets in UTF-16 code units)',
      tag: 'privacy',
      access: 'shared',
      body: z.strictObject({ text: z.string().max(1_000_000) }),
      responses: { 200: { description: '{findings: [{type, start, end}]}, and truncated: true when the text held more than 10,000 (the first 10,000 are listed)' } },
    },
    async (c, { body }) => {
      const { findings, total } = await node.pii.scan(body.text);
      return c.json(total > findings.length ? { findings, truncated: true, total } : { findings });
    },
  );
}

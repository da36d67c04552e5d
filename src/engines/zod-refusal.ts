import type { z } from 'zod';
import { InvalidInput } from './errors.js';

/** Problems listed in details.issues; the rest are counted in details.issues_total. */
const MAX_LISTED = 20;

/**
 * A failed zod parse as the 400 clients get: the first three problems in the message, the first
 * twenty in details.issues with the count of all of them, each with its path from `where`
 * (`body.vectors.0.id`). Every problem used to be listed, and a megabyte of wrong-typed ids
 * made a 45 MB answer; sixteen made a read-only token crash the daemon (review).
 */
export function zodRefusal(where: string, error: z.ZodError): InvalidInput {
  const issues = error.issues.slice(0, MAX_LISTED).map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
  return new InvalidInput(issues.slice(0, 3).map((i) => `${i.path}: ${i.message}`).join('; '), { issues, issues_total: error.issues.length });
}

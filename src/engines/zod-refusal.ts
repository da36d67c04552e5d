import type { z } from 'zod';
import { InvalidInput } from './errors.js';

/**
 * A failed zod parse as the 400 clients get: the first three problems in the message, every
 * one in details.issues, each with its path from `where` (`body.vectors.0.id`).
 */
export function zodRefusal(where: string, error: z.ZodError): InvalidInput {
  const issues = error.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
  return new InvalidInput(issues.slice(0, 3).map((i) => `${i.path}: ${i.message}`).join('; '), { issues });
}

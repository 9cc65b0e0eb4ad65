/**
 * The policy's JSON Schema, generated from the zod wire schema so the two cannot drift.
 * Editors use it (yaml-language-server) to complete and check policy files as they are typed.
 */
import { z } from 'zod';
import { policySchema } from './schema.js';

/** The JSON Schema of a policy file, as users may write it (defaulted fields optional). */
export function policyJsonSchema(): Record<string, unknown> {
  // io 'input': describe what may be written, where every defaulted field is optional.
  const generated = z.toJSONSchema(policySchema, { io: 'input', target: 'draft-2020-12' });
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'Pilotfish policy',
    description: 'Routes, upstreams and resilience settings of the Pilotfish sidecar proxy. See config/policy-contract.yaml.',
    ...generated,
  };
}

/** The committed text of config/policy.schema.json. */
export function renderPolicyJsonSchema(): string {
  return `${JSON.stringify(policyJsonSchema(), null, 2)}\n`;
}

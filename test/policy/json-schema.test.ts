import { readFile } from 'node:fs/promises';
import t from 'tap';
import { policyJsonSchema, renderPolicyJsonSchema } from '../../lib/policy/json-schema.js';
import { inRepo } from '../support/repo.js';

t.test('the committed config/policy.schema.json is what the code generates now', async (t) => {
  const committed = await readFile(inRepo('config/policy.schema.json'), 'utf8');
  t.equal(committed, renderPolicyJsonSchema(),
    'stale: regenerate with `npm run schema`');
});

t.test('the JSON Schema describes what users write', async (t) => {
  const schema = policyJsonSchema() as {
    $schema: string; title: string; required: string[]; additionalProperties: boolean;
    properties: Record<string, { properties?: Record<string, { default?: unknown }> }>;
  };
  t.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  t.equal(schema.title, 'Pilotfish policy');
  t.same(Object.keys(schema.properties), ['version', 'resolvers', 'listeners', 'identity', 'redis', 'registration', 'inbound', 'defaults', 'upstreams', 'routes', 'accessLog', 'tracing', 'shutdown', 'limits', 'readiness']);
  t.same([...schema.required].sort(), ['routes', 'upstreams', 'version'], 'defaulted sections are optional (io: input)');
  t.equal(schema.additionalProperties, false, 'a misspelt top-level field is an error in the editor too');
  t.equal(schema.properties.defaults!.properties!.timeout!.default, '15s', 'defaults appear as written');
});

import t from 'tap';
import { classifyStatus, DEFAULT_FAILURE_STATUSES, type Outcome } from '../../lib/resilience/outcome.js';

const defaults: [number, Outcome, string][] = [
  [200, 'success', 'a 200 is the upstream working'],
  [204, 'success', 'a 204 is the upstream working'],
  [301, 'success', 'a redirect is the upstream working'],
  [404, 'success', 'a 404 is the upstream working'],
  [500, 'success', '500 is a failure only when configured'],
  [502, 'failure', '502 is a failure'],
  [503, 'failure', '503 is a failure'],
  [504, 'failure', '504 is a failure'],
  [429, 'ignore', '429 is the upstream pushing back, not failing'],
  [408, 'ignore', '408 is the client being slow, not the upstream failing'],
];

t.test('classifyStatus with the default failure statuses', async (t) => {
  for (const [status, expected, why] of defaults) {
    t.equal(classifyStatus(status), expected, why);
    t.equal(classifyStatus(status, DEFAULT_FAILURE_STATUSES), expected, `${why} (explicit default set)`);
  }
});

t.test('classifyStatus with a configured failure set', async (t) => {
  const withServerError = new Set([500, 502, 503, 504]);
  t.equal(classifyStatus(500, withServerError), 'failure', '500 counts once configured');
  t.equal(classifyStatus(429, new Set([429])), 'failure', 'the configured set wins over the ignore rule');
  t.equal(classifyStatus(503, new Set([500])), 'success', 'a status outside a custom set is a success');
  t.equal(classifyStatus(408, new Set([500])), 'ignore', '408 stays ignored under a custom set');
});

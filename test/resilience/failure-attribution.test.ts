/**
 * Failure attribution: a failed try counts against the upstream only when no other endpoint
 * that may take traffic is known to work — one bad endpoint among good ones is its own problem
 * (outlier detection's), every endpoint failing is the upstream's (the breaker's).
 */
import t from 'tap';
import { FailureAttribution, type EndpointView } from '../../lib/resilience/failure-attribution.js';

function view(addresses: string[], ineligible: string[] = []): EndpointView {
  return { addresses, eligible: (a) => !ineligible.includes(a) };
}

t.test('one bad endpoint among working ones: its failures are its own', async (t) => {
  const fa = new FailureAttribution();
  const v = view(['a', 'b', 'c']);
  fa.record('a', 'success');
  fa.record('b', 'success');
  fa.record('c', 'failure');
  t.equal(fa.forUpstream('c', 'failure', v), 'ignore', 'a and b work: c failing is not the upstream failing');
  t.equal(fa.forUpstream('c', 'success', v), 'success', 'successes always count');
});

t.test('every endpoint failing: the failures are the upstream’s', async (t) => {
  const fa = new FailureAttribution();
  const v = view(['a', 'b', 'c']);
  t.equal(fa.forUpstream('a', 'failure', v), 'failure', 'nothing known to work yet: the first failure counts');
  fa.record('a', 'failure');
  fa.record('b', 'failure');
  fa.record('c', 'failure');
  for (const e of ['a', 'b', 'c']) t.equal(fa.forUpstream(e, 'failure', v), 'failure', `${e}: all failing`);
});

t.test('a single endpoint is the upstream', async (t) => {
  const fa = new FailureAttribution();
  fa.record('a', 'success');
  t.equal(fa.forUpstream('a', 'failure', view(['a'])), 'failure', 'its own earlier success is no alibi');
});

t.test('only eligible endpoints vouch: an ejected or unhealthy one does not', async (t) => {
  const fa = new FailureAttribution();
  fa.record('a', 'success');
  fa.record('b', 'failure');
  t.equal(fa.forUpstream('b', 'failure', view(['a', 'b'], ['a'])), 'failure', 'a is out of rotation: it cannot carry the traffic');
  t.equal(fa.forUpstream('b', 'failure', view(['a', 'b'])), 'ignore', 'back in rotation, it can');
});

t.test('the latest outcome decides; ignored outcomes say nothing; forgotten endpoints vouch no more', async (t) => {
  const fa = new FailureAttribution();
  const v = view(['a', 'b']);
  fa.record('a', 'success');
  fa.record('a', 'ignore');
  t.equal(fa.forUpstream('b', 'failure', v), 'ignore', 'an ignored outcome (client gone) leaves a working');
  fa.record('a', 'failure');
  t.equal(fa.forUpstream('b', 'failure', v), 'failure', 'a failed since: nobody is known to work');
  fa.record('a', 'success');
  fa.forget('a');
  t.equal(fa.forUpstream('b', 'failure', v), 'failure', 'a forgotten endpoint vouches for nobody');
});

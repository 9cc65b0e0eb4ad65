/** The operational log never prints a credential: URLs and secret-named fields are redacted, as on /admin. */
import { Writable } from 'node:stream';
import t from 'tap';
import { jsonLogger } from '../../lib/observe/logger.js';

t.test('credentials in URLs and secret-named fields are redacted; everything else is kept', async (t) => {
  const lines: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const logger = jsonLogger(out, () => 0);
  logger.log('error', 'policy rejected: etcd http://admin:hunter2@10.0.0.5:2379 refused', {
    errors: ['p.yaml:3:5 upstreams.a.discovery.etcd.endpoints[0]: bad url ftp://u:s3cret@host/x'],
    apiKey: 'abc123',
    upstream: 'orders',
    hash: 'f00d',
  });
  const text = lines.join('');
  for (const secret of ['hunter2', 's3cret', 'abc123']) t.notOk(text.includes(secret), `${secret} is not in the line`);
  const line = JSON.parse(text) as Record<string, unknown>;
  t.match(line.msg, /http:\/\/\*\*\*@10\.0\.0\.5:2379/, 'the URL stays readable, its userinfo hidden');
  t.equal(line.apiKey, '<redacted>');
  t.equal(line.upstream, 'orders', 'ordinary fields are kept');
  t.equal(line.hash, 'f00d');
  t.equal(line.level, 'error');
});

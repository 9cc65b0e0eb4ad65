/** The operational log: never prints a credential (URLs and secret-named fields are redacted, as on /admin), and writes only from its minimum level up. */
import { Writable } from 'node:stream';
import t from 'tap';
import { jsonLogger, LEVELS, parseLevel } from '../../lib/observe/logger.js';

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

t.test('levels: messages below the minimum are not written, and cost nothing (not dated, redacted or read)', async (t) => {
  const lines: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  let dated = 0;
  const logger = jsonLogger(out, () => (dated++, 0), 'warn');
  const untouchable = {
    get secret(): string {
      throw new Error('a filtered message must not read its fields');
    },
  };
  logger.log('debug', 'noisy', untouchable);
  logger.log('info', 'chatty', untouchable);
  t.equal(dated, 0, 'no clock read for a filtered message');
  logger.log('warn', 'careful');
  logger.log('error', 'broken');
  const shown = lines.map((l) => (JSON.parse(l) as { level: string; msg: string }).level);
  t.same(shown, ['warn', 'error'], 'warn and above are written');

  lines.length = 0;
  const byDefault = jsonLogger(out, () => 0);
  for (const level of LEVELS) byDefault.log(level, level);
  t.same(lines.map((l) => (JSON.parse(l) as { level: string }).level), ['info', 'warn', 'error'], 'the default minimum is info');

  lines.length = 0;
  const everything = jsonLogger(out, () => 0, 'debug');
  for (const level of LEVELS) everything.log(level, level);
  t.equal(lines.length, 4, 'debug writes every level');
});

t.test('parseLevel reads a level name in any case and refuses anything else', async (t) => {
  t.equal(parseLevel('debug'), 'debug');
  t.equal(parseLevel('WARN'), 'warn');
  t.equal(parseLevel(' Error '), 'error');
  for (const bad of [undefined, '', 'verbose', 'warning', 'toString', '__proto__']) t.equal(parseLevel(bad), null, `${String(bad)} is not a level`);
});

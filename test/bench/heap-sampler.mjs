// Preloaded (`node --import heap-sampler.mjs ...`) by alloc-sites.sh: V8's sampling heap profiler,
// counting what was allocated and collected since (`--heap-prof` keeps only what is still alive at
// the end, which says nothing about garbage). The first SIGUSR2 starts sampling, the second writes
// the profile to HEAP_SAMPLES_OUT; an in-process inspector session, so no debugger port is opened.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const out = process.env.HEAP_SAMPLES_OUT;
if (!out) throw new Error('heap-sampler.mjs: set HEAP_SAMPLES_OUT');
const session = new Session();
session.connect();
session.post('HeapProfiler.enable');
let sampling = false;
process.on('SIGUSR2', () => {
  if (!sampling) {
    sampling = true;
    const every = Number(process.env.HEAP_SAMPLES_INTERVAL ?? 1024);
    session.post('HeapProfiler.startSampling', { samplingInterval: every, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    return;
  }
  session.post('HeapProfiler.stopSampling', (err, result) => {
    if (err) throw err;
    writeFileSync(out, JSON.stringify(result.profile));
  });
});

import type { Test } from 'tap';

/**
 * Runs a measurement whose bar is on time (latency, throughput) and, if it misses, runs it once
 * more: the result judged is the first that meets its bars, else the last. This VM's hypervisor
 * takes up to half a vCPU for seconds at a time (one CI run took 1.5× its usual time), and a
 * stall that long moves a p99 or a rate; a real regression misses both runs. Every miss is printed.
 */
export async function measured<T>(t: Test, run: () => Promise<T>, meetsBars: (result: T) => boolean, runs = 2): Promise<T> {
  let result = await run();
  for (let n = 1; n < runs && !meetsBars(result); n++) {
    t.comment(`run ${n} missed a bar on time: measured again`);
    result = await run();
  }
  return result;
}

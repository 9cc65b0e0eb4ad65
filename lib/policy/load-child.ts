/**
 * The policy compiler's process (policy/load-apart.ts): loads the file named by its one
 * argument and answers its parent once, with the validated document or the issues.
 */
import { loadPolicy } from './load.js';
import type { CompilerAnswer } from './load-apart.js';

// A parent that is gone (it stopped, or gave up on this load) wants no answer.
process.once('disconnect', () => process.exit(0));

const result = await loadPolicy(process.argv[2] ?? '');
const answer: CompilerAnswer = result.ok
  ? { ok: true, wire: result.wire, hash: result.policy.source.hash, warnings: result.warnings }
  : { ok: false, issues: result.issues };
// Disconnecting once the answer is written lets the process end by itself.
if (process.connected) process.send?.(answer, undefined, undefined, () => process.disconnect());

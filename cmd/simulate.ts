/**
 * `pilotfish simulate SCENARIO [--policy FILE] [--seed N] [--every DURATION] [--json]`: runs a
 * scenario (examples/simulate/) against a policy on virtual time and prints the timeline. Thin:
 * the simulator is lib/simulate/.
 */
import { relative, resolve } from 'node:path';
import { formatIssue, loadPolicy } from '../lib/policy/load.js';
import { parseDuration, UnitError } from '../lib/policy/units.js';
import { toJson, toText } from '../lib/simulate/report.js';
import { loadScenario } from '../lib/simulate/scenario.js';
import { simulate, SimulationError } from '../lib/simulate/simulate.js';
import { splitFlag } from './flags.js';

/** The command's synopsis, for usage errors and the help. */
export const SIMULATE_USAGE = 'pilotfish simulate SCENARIO [--policy FILE] [--seed N] [--every DURATION] [--json]';

/** Runs the command; returns the exit code (0 ran, 1 an invalid scenario or policy, 2 bad usage). */
export async function runSimulateCommand(args: readonly string[]): Promise<number> {
  let scenarioFile: string | null = null;
  let policyFile: string | null = null;
  let seed: number | null = null;
  let everyMs: number | undefined;
  let json = false;
  const usage = (why: string): number => {
    process.stderr.write(`pilotfish simulate: ${why}\nusage: ${SIMULATE_USAGE}\n`);
    return 2;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    const [flag, inline] = splitFlag(a);
    const value = (): string | null => inline ?? args[++i] ?? null;
    if (flag === '--json') json = true;
    else if (flag === '--policy' || flag === '-p') {
      policyFile = value();
      if (!policyFile) return usage('--policy needs a file');
    } else if (flag === '--seed') {
      const v = value();
      if (v === null || !/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) return usage(`--seed needs a whole number, got ${v ?? 'nothing'}`);
      seed = Number(v);
    } else if (flag === '--every') {
      const v = value() ?? '';
      try {
        everyMs = parseDuration(v);
      } catch (err) {
        if (!(err instanceof UnitError)) throw err;
        return usage(`--every: ${err.message}`);
      }
      if (everyMs <= 0) return usage('--every needs a duration above zero');
    } else if (a.startsWith('-')) return usage(`unknown option ${a}`);
    else if (scenarioFile === null) scenarioFile = a;
    else return usage(`one scenario at a time (got ${scenarioFile} and ${a})`);
  }
  if (scenarioFile === null) return usage('which scenario? (e.g. examples/simulate/payments-slow.yaml)');

  const loaded = await loadScenario(scenarioFile);
  if (!loaded.ok) {
    for (const issue of loaded.issues) process.stderr.write(`error: ${formatIssue(issue)}\n`);
    return 1;
  }
  const scenario = loaded.scenario;
  const policyPath = policyFile !== null ? resolve(policyFile) : scenario.policy;
  if (policyPath === null) return usage(`${scenarioFile} names no policy: give --policy FILE (or policy: in the scenario)`);
  const policy = await loadPolicy(policyPath);
  if (!policy.ok) {
    for (const issue of policy.issues) process.stderr.write(`error: ${formatIssue(issue)}\n`);
    return 1;
  }
  for (const w of policy.warnings) process.stderr.write(`warning: ${formatIssue(w)}\n`);

  let result;
  try {
    result = await simulate(scenario, policy.policy, { seed: seed ?? scenario.seed ?? 1, ...(everyMs === undefined ? {} : { everyMs }) });
  } catch (err) {
    if (!(err instanceof SimulationError)) throw err;
    process.stderr.write(`error: ${scenarioFile}: ${err.message}\n`);
    return 1;
  }
  const labels = { scenario: scenarioFile, policy: policyFile ?? relative(process.cwd(), policyPath), description: scenario.description };
  process.stdout.write(json ? `${JSON.stringify(toJson(result, labels), null, 2)}\n` : toText(result, labels));
  return 0;
}

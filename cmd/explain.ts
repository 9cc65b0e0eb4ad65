/**
 * `pilotfish explain`: what the proxy would do with one request under a policy, without
 * starting it (lib/routing/explain.ts). Exit 0: a route matches; 1: none does; 2: bad usage,
 * a policy with errors, or a request the proxy would not route at all.
 */
import { resolve } from 'node:path';
import { formatIssue, loadPolicy } from '../lib/policy/load.js';
import { explain, formatExplanation, type ExplainRequest } from '../lib/routing/explain.js';
import { splitFlag } from './flags.js';

/** The subcommand's usage, for `--help` and usage errors. */
export const EXPLAIN_USAGE = `Usage: pilotfish explain --policy FILE --method M --url URL [--header NAME:VALUE]... [--inbound] [--json]

  --url      http://host/path (absolute-form), or /path with --header host:NAME
  --header   a request header; repeat for more (content-type: application/grpc makes a gRPC call)
  --inbound  explain against the inbound routes (calls to the local app) instead of the outbound ones
  --json     print the explanation as JSON

Exit status: 0 a route matches, 1 no route matches, 2 bad usage or an invalid policy.`;

// RFC 9110 token: what a header name is made of.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Runs `pilotfish explain ARGS`; resolves to the exit status. */
export async function runExplainCommand(
  args: readonly string[],
  io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream } = { out: process.stdout, err: process.stderr },
): Promise<number> {
  let policyFile: string | undefined;
  let method: string | undefined;
  let url: string | undefined;
  const headers: [string, string][] = [];
  let inbound = false;
  let json = false;
  const usage = (problem: string): number => {
    io.err.write(`pilotfish explain: ${problem}\n${EXPLAIN_USAGE}\n`);
    return 2;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const [flag, inline] = splitFlag(arg);
    const value = (): string | undefined => inline ?? args[++i];
    switch (flag) {
      case '--help':
      case '-h':
        io.out.write(`${EXPLAIN_USAGE}\n`);
        return 0;
      case '--policy':
      case '-p':
        policyFile = value();
        break;
      case '--method':
      case '-X':
        method = value();
        break;
      case '--url':
        url = value();
        break;
      case '--header':
      case '-H': {
        const h = value();
        const colon = h?.indexOf(':') ?? -1;
        const name = h?.slice(0, colon).trim() ?? '';
        if (h === undefined || colon < 1 || !TOKEN.test(name)) return usage(`--header needs NAME:VALUE, got ${JSON.stringify(h ?? '')}`);
        headers.push([name, h.slice(colon + 1).trim()]);
        break;
      }
      case '--inbound':
        inbound = true;
        break;
      case '--json':
        json = true;
        break;
      default:
        return usage(`unknown argument ${arg}`);
    }
  }
  if (!policyFile) return usage('which policy? (--policy FILE)');
  if (!method) return usage('which method? (--method GET)');
  if (!TOKEN.test(method)) return usage(`--method: ${JSON.stringify(method)} is not an HTTP method`);
  if (!url) return usage('which request? (--url http://host/path)');

  const loaded = await loadPolicy(resolve(policyFile));
  if (!loaded.ok) {
    for (const issue of loaded.issues) io.err.write(`error: ${formatIssue(issue)}\n`);
    io.err.write(`${policyFile}: invalid (${loaded.issues.length} error${loaded.issues.length === 1 ? '' : 's'}); nothing to explain\n`);
    return 2;
  }
  for (const w of loaded.warnings) io.err.write(`warning: ${formatIssue(w)}\n`);
  // Methods are case-sensitive on the wire, and clients send them in upper case: `get` is taken to mean GET.
  const request: ExplainRequest = { method: method.toUpperCase(), url, headers, direction: inbound ? 'inbound' : 'outbound' };
  const result = explain(loaded.policy, request);
  if (!result.ok) {
    io.err.write(`pilotfish explain: ${result.problem}\n`);
    return 2;
  }
  io.out.write(json ? `${JSON.stringify(result.explanation, null, 2)}\n` : formatExplanation(result.explanation));
  return result.explanation.matched === null ? 1 : 0;
}

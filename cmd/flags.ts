/** The CLI's one rule for flags: `--name=value` or `--name value`. */

/** `--name=value` split into the flag and its inline value; any other argument comes back whole. */
export function splitFlag(arg: string): [flag: string, inline: string | undefined] {
  const eq = arg.indexOf('=');
  return arg.startsWith('--') && eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, undefined];
}

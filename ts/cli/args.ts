/** A small argument parser: `--name value`, `--name=value` and boolean `--flag`. */
export interface Parsed {
  command: string | undefined;
  flags: Map<string, string | true>;
}

/** Splits argv into a command and flags. */
export function parseArgs(argv: string[]): Parsed {
  const flags = new Map<string, string | true>();
  let command: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) flags.set(a.slice(2, eq), a.slice(eq + 1));
      else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) flags.set(a.slice(2), argv[++i]);
      else flags.set(a.slice(2), true);
    } else if (a === '-h') {
      flags.set('help', true);
    } else if (command === undefined) {
      command = a;
    } else {
      throw new UsageError(`unexpected argument '${a}'`);
    }
  }
  return { command, flags };
}

/** A mistake in the command line: exit code 2. */
export class UsageError extends Error {}

/** A command that could not do its work (its message says why): exit code 1. */
export class CommandError extends Error {}

/** Throws a {@link UsageError} naming the first flag of `flags` that `command` does not take. */
export function checkFlags(flags: Map<string, string | true>, command: string, allowed: readonly string[]): void {
  for (const name of flags.keys()) {
    if (name !== 'help' && !allowed.includes(name)) throw new UsageError(`unknown option --${name} for ${command}`);
  }
}

/** Whether the boolean `--name` is set; a value (`--name=x`) is a mistake. */
export function flag(flags: Map<string, string | true>, name: string): boolean {
  const v = flags.get(name);
  if (typeof v === 'string') throw new UsageError(`--${name} takes no value, got '${v}'`);
  return v === true;
}

/** The value of `--name` among `allowed`, or `fallback`. */
export function choice<T extends string>(flags: Map<string, string | true>, name: string, allowed: readonly T[], fallback: T): T {
  const v = flags.get(name);
  if (v === undefined) return fallback;
  if (v === true || !allowed.includes(v as T)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}`);
  return v as T;
}

/** The integer value of `--name` within [min, max], or `fallback`. */
export function integer(flags: Map<string, string | true>, name: string, min: number, max: number, fallback: number): number {
  const v = flags.get(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v === true || !Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in [${min}, ${max}]`);
  return n;
}

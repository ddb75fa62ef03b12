/** The `crossdev` command line. */
import { CrossDeviceError } from '../errors.js';
import { bench, BENCH_HELP } from './bench.js';
import { plan, PLAN_HELP } from './plan.js';
import { parseArgs, UsageError } from './args.js';

const HELP = `crossdev: cross-device reduction for Node.js

Usage: crossdev <command> [options]

Commands:
  bench    all-reduce bandwidth on virtual CPU devices (crossdev bench --help)
  plan     print an all-reduce plan and its bytes per link (crossdev plan --help)

Exit codes: 0 success, 1 a check failed or an operation errored, 2 bad arguments.`;

async function main(argv: string[]): Promise<number> {
  const { command, flags } = parseArgs(argv);
  if (command === 'bench') {
    if (flags.has('help')) return console.log(BENCH_HELP), 0;
    return bench(flags);
  }
  if (command === 'plan') {
    if (flags.has('help')) return console.log(PLAN_HELP), 0;
    return plan(flags);
  }
  if (command === undefined || command === 'help' || flags.has('help')) {
    console.log(HELP);
    return command === undefined && !flags.has('help') ? 2 : 0;
  }
  throw new UsageError(`unknown command '${command}'`);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    if (e instanceof UsageError) {
      console.error(`crossdev: ${e.message} (see crossdev --help)`);
      process.exitCode = 2;
    } else if (e instanceof CrossDeviceError) {
      console.error(`crossdev: ${e.code}: ${e.message}`);
      process.exitCode = 1;
    } else {
      console.error(e);
      process.exitCode = 1;
    }
  },
);

/** The `crossdev` commands: what each runs, its help text and the options it takes. */
import { bench, BENCH_HELP } from './bench.js';
import { devices, DEVICES_FLAGS, DEVICES_HELP } from './devices.js';
import { plan, PLAN_FLAGS, PLAN_HELP } from './plan.js';

/** `crossdev --help`. */
export const HELP = `crossdev: cross-device reduction for Node.js

Usage: crossdev <command> [options]
       crossdev <command> --help

Commands:
  bench    all-reduce bandwidth on virtual CPU devices (crossdev bench --help)
  plan     an all-reduce plan and its bytes per link, or how a model's gradients are packed
           and what each link carries (crossdev plan --help)
  devices  the devices this process can use and their links (crossdev devices --help)

Options: --help, -h   this text (after a command: that command's options)

Exit codes (every command):
  0  success
  1  a failure at run time: a wrong benchmark result, a plan that cannot be built, an error
  2  bad arguments: an unknown command or option, a bad value (the message is on stderr)`;

/** A command: what it runs, its help text, and the options it takes. */
export interface Command {
  run(flags: Map<string, string | true>): number | Promise<number>;
  help: string;
  flags: readonly string[];
}

/** Every command, by name. */
export const COMMANDS: Record<string, Command> = {
  bench: { run: bench, help: BENCH_HELP, flags: ['alg', 'devices', 'dtype', 'op', 'backend', 'min-bytes', 'max-bytes', 'sync', 'json', 'out', 'plot'] },
  plan: { run: plan, help: PLAN_HELP, flags: PLAN_FLAGS },
  devices: { run: devices, help: DEVICES_HELP, flags: DEVICES_FLAGS },
};

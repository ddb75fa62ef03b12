/** The `crossdev` command line. */
import { CrossDeviceError } from '../errors.js';
import { checkFlags, CommandError, parseArgs, UsageError } from './args.js';
import { COMMANDS, HELP } from './commands.js';

/** Where a usage error points: the command's help once the command is known. */
let helpHint = 'crossdev --help';

async function main(argv: string[]): Promise<number> {
  const { command, flags } = parseArgs(argv);
  if (command === undefined && !flags.has('help')) {
    console.error(HELP);
    return 2;
  }
  if (command === undefined || command === 'help') {
    checkFlags(flags, 'crossdev', []);
    console.log(HELP);
    return 0;
  }
  const c = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!c) throw new UsageError(`unknown command '${command}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
  helpHint = `crossdev ${command} --help`;
  if (flags.has('help')) {
    console.log(c.help);
    return 0;
  }
  checkFlags(flags, `crossdev ${command}`, c.flags);
  return c.run(flags);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    if (e instanceof UsageError) {
      console.error(`crossdev: ${e.message} (see ${helpHint})`);
      process.exitCode = 2;
    } else if (e instanceof CrossDeviceError) {
      console.error(`crossdev: ${e.code}: ${e.message}`);
      process.exitCode = 1;
    } else if (e instanceof CommandError) {
      console.error(`crossdev: ${e.message}`);
      process.exitCode = 1;
    } else {
      console.error(e);
      process.exitCode = 1;
    }
  },
);

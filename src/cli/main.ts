// The kforce CLI: every command lives in src/cli/commands/<name>.ts as a thin wrapper over library functions.
import { Command, CommanderError } from 'commander';
import { registerInfo } from './commands/info.ts';
import { registerData } from './commands/data.ts';
import { registerTokenizer } from './commands/tokenizer.ts';
import { registerTrain } from './commands/train.ts';
import { registerDistill } from './commands/distill.ts';
import { registerServe } from './commands/serve.ts';
import { registerGenerate } from './commands/generate.ts';
import { registerBench } from './commands/bench.ts';
import { registerDemo } from './commands/demo.ts';

const program = new Command();
program
  .name('kforce')
  .description('K-Forcing: train an AR teacher, distil it into a k-token push-forward LM, generate, serve, measure.')
  .showHelpAfterError()
  .exitOverride();

registerInfo(program);
registerData(program);
registerTokenizer(program);
registerTrain(program);
registerDistill(program);
registerServe(program);
registerGenerate(program);
registerBench(program);
registerDemo(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  const msg = err instanceof Error ? err.message : String(err);
  console.error(`kforce: error: ${msg}`);
  if (process.env.KFORCE_DEBUG && err instanceof Error) console.error(err.stack);
  process.exit(1);
}

/**
 * `npm run sim -- [--seeds N] [--seed S] [--trace] [--bug NAME]`: runs the deterministic
 * simulator over N seeds (a fresh base seed unless --seed is given) and prints one closing
 * line (passes audited: training epochs and evaluation passes); on a violation prints the
 * seed, the broken invariant and the command that replays it, and exits 1.
 */
import { PlantedBug, type PlantedBugName } from '../../coordinator/coreTypes.ts';
import { seedsOf } from './seeds.ts';
import { runSeed, type SeedResult } from './simulator.ts';

interface Args {
  seeds: number;
  seed: string | undefined;
  trace: boolean;
  bug: PlantedBugName | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { seeds: 2000, seed: undefined, trace: false, bug: undefined };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    if (flag === '--seeds') {
      args.seeds = Number(value());
      if (!Number.isSafeInteger(args.seeds) || args.seeds < 1) usage('--seeds must be an integer >= 1');
    } else if (flag === '--seed') args.seed = value();
    else if (flag === '--trace') args.trace = true;
    else if (flag === '--bug') {
      const bug = value();
      if (!(Object.values(PlantedBug) as string[]).includes(bug)) usage(`--bug must be one of ${Object.values(PlantedBug).join(', ')}`);
      args.bug = bug as PlantedBugName;
    } else if (flag === '--help' || flag === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else usage(`unknown flag ${flag}`);
  }
  return args;
}

const USAGE = [
  `usage: npm run sim -- [--seeds N] [--seed S] [--trace] [--bug ${Object.values(PlantedBug).join('|')}]`,
  '',
  'Runs the real coordinator core against seeded fault schedules (test/sim) and checks every invariant.',
  '  --seeds N   how many fresh seeds (default 2000; the base seed is printed, each seed replays alone)',
  '  --seed S    one seed only (say, one a failure printed)',
  '  --trace     print what the core took in and decided, and what the simulated workers did',
  '  --bug B     plant a known bug in the core: the invariants must catch it',
].join('\n');

function usage(problem: string): never {
  console.error(`sim: ${problem}\n${USAGE}`);
  process.exit(2);
}

function replayCommand(seed: string, bug: PlantedBugName | undefined): string {
  return `npm run sim -- --seed ${JSON.stringify(seed)} --trace${bug ? ` --bug ${bug}` : ''}`;
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  // A lone --seed replays exactly that seed.
  const single = args.seed !== undefined && !process.argv.includes('--seeds');
  const { base, seeds } = seedsOf({ seeds: single ? 1 : args.seeds, seed: args.seed });
  if (!single) console.log(`sim: base seed ${base}, ${seeds.length} seeds${args.bug ? `, planted bug ${args.bug}` : ''}`);
  const started = performance.now();
  let faults = 0;
  let epochs = 0;
  // Evaluation passes begun, the seeds that reached one, and those in which a fault struck during one.
  let evalPasses = 0;
  let evaluating = 0;
  let evalFaulted = 0;
  // Generations begun mid-epoch, members renumbered, seeds whose workers train as under pg.elastic.
  let generations = 0;
  let renumbered = 0;
  let elasticSeeds = 0;
  let failed: SeedResult | undefined;
  for (const seed of seeds) {
    const result = runSeed(seed, { trace: args.trace, plantedBug: args.bug });
    faults += result.faults;
    epochs += result.epochs;
    evalPasses += result.evalPasses;
    if (result.evalPasses > 0) evaluating++;
    if (result.evalFaults > 0) evalFaulted++;
    generations += result.generations;
    renumbered += result.renumbered;
    if (result.scenario.elastic) elasticSeeds++;
    if (args.trace) console.log(result.trace.join('\n'));
    if (result.violation) {
      failed = result;
      break;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const ran = failed ? seeds.indexOf(failed.seed) + 1 : seeds.length;
  const evaluated = `${evalPasses} evaluation passes in ${evaluating} seeds, ${evalFaulted} of them with a fault during one`;
  const regrouped = `${generations} generations begun mid-epoch, ${renumbered} ranks renumbered, ${elasticSeeds} seeds with elastic training loops`;
  console.log(`${ran} seeds, ${faults} faults, ${epochs} passes (${evaluated}; ${regrouped}), ${failed ? 1 : 0} violations (${Math.round((ran / seconds) * 60)} seeds/minute)`);
  if (failed) {
    console.log(`violation at seed ${failed.seed}: ${failed.violation!.message}`);
    console.log(`replay: ${replayCommand(failed.seed, args.bug)}`);
    process.exit(1);
  }
}

main();

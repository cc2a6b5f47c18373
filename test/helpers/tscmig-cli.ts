// The tscmig command run from the TypeScript sources, for child processes started with
// `node --import test/helpers/ts-register.mjs test/helpers/tscmig-cli.ts …` (no build step).
import { main } from "../../src/cli/main.js";

await main(process.argv);

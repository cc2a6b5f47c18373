#!/usr/bin/env node
// Entry point of the `tscmig` command; the TypeScript sources are built into dist/ (npm run build,
// which `npm ci` runs through the prepare script).
import { main } from "../dist/src/cli/main.js";

await main(process.argv);

// Forks a TypeScript file of this project as a real child process (its own pid, killable with
// SIGKILL), with an IPC channel, through the transpile-on-load hooks of ./ts-register.mjs.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";

const register = fileURLToPath(new URL("./ts-register.mjs", import.meta.url));

export function forkTs(script: URL, args: string[] = []): ChildProcess {
  return fork(fileURLToPath(script), args, { execArgv: ["--import", register], stdio: ["ignore", "inherit", "inherit", "ipc"] });
}

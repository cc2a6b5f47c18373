// A launcher that starts one daemon (from dist/, as `tscmig up` does) and exits without stopping
// it: it sends the daemon's pid over IPC, then calls process.exit — or, given `--stay`, stays until
// killed (SIGKILL runs no exit hook). Used to show that daemons do not outlive the process that
// started them.
import { join } from "node:path";
import { spawnDaemon } from "../../src/client/local-daemons.js";
import { ROOT } from "./daemons.js";

const d = await spawnDaemon({ name: "orphan", entry: [join(ROOT, "bin", "tscmig.js")], readyTimeoutNs: 60_000_000_000n });
const stay = process.argv.includes("--stay");
process.send?.({ pid: d.child.pid }, () => (stay ? setInterval(() => undefined, 60_000) : process.exit(0)));

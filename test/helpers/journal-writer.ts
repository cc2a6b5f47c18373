// Child process for the kill -9 test of the journal: opens the journal in argv[2] and, until it is
// killed, commits migrations one after another. Each commit is one transaction that records the
// decision and hands the VM off; after each returns, the child tells the parent the migration id.
import { Journal } from "../../src/daemon/journal.js";

const journal = Journal.open(process.argv[2] as string);
let n = 0;

function next(): void {
  const migrationId = `m-${n}`;
  const vmId = `vm-${n}`;
  const generation = (1n << 64n) - 1n - BigInt(n);
  journal.transaction(() => {
    journal.putMigration({ migrationId, vmId, role: "source", phase: "commit", decision: "committed", generation, peer: "b:7071", updatedNs: BigInt(n) });
    journal.putVm({ vmId, generation, role: "handed-off", state: JSON.stringify({ n }), updatedNs: BigInt(n) });
  });
  n += 1;
  process.send?.({ committed: migrationId }, () => setImmediate(next));
}

next();

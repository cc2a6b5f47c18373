// A campaign worker thread: runs the sim runs it is handed, one at a time in the order given, and
// posts each checked outcome back (plain data; bigints survive structured cloning).

import { parentPort, workerData } from "node:worker_threads";
import { runSimTask, type SimTaskOptions } from "./campaign.js";

const task = workerData as SimTaskOptions;
const port = parentPort;
/** Run indices handed over ahead of time: runs go one at a time (a run owns the thread while it steps). */
const queue: number[] = [];
let running = false;

async function drain(p: NonNullable<typeof port>): Promise<void> {
  running = true;
  for (let i = queue.shift(); i !== undefined; i = queue.shift()) p.postMessage(await runSimTask(i, task));
  running = false;
}

if (port) {
  port.on("message", (i: number) => {
    queue.push(i);
    if (!running)
      void drain(port).catch((e: unknown) => {
        throw e;
      });
  });
}

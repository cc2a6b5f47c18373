// A campaign worker thread: runs the sim runs it is handed, one index at a time, and posts each
// checked outcome back (plain data; bigints survive structured cloning).

import { parentPort, workerData } from "node:worker_threads";
import { runSimTask, type SimTaskOptions } from "./campaign.js";

const task = workerData as SimTaskOptions;
const port = parentPort;
if (port) {
  port.on("message", (i: number) => {
    void runSimTask(i, task).then(
      (out) => port.postMessage(out),
      (e: unknown) => {
        throw e;
      },
    );
  });
}

// A raw TCP echo server, run as its own process by the benchmark (`node echo-server.js`): the floor
// under every round trip the daemons make. Prints {"port": N} on its first stdout line.

import { createServer } from "node:net";

const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("data", (chunk) => socket.write(chunk));
  socket.on("error", () => socket.destroy());
});
server.listen(0, "127.0.0.1", () => {
  const a = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof a === "object" && a !== null ? a.port : 0 })}\n`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

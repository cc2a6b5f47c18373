import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Daemon tests run bin/tscmig.js, which loads dist/: rebuild it first when src is newer.
    globalSetup: ["test/helpers/dist-fresh.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    reporters: process.env.CI ? ["default"] : ["default"],
  },
});

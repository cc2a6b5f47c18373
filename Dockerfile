# The tscmig image: one binary that runs as a migration source or destination daemon, or as the
# one-shot demo client (docker-compose.yml runs two daemons and the demo).
#
#   docker build -t tscmig:local .
#   docker run --rm -p 127.0.0.1:7070:7070 tscmig:local \
#     daemon --name a --http 0.0.0.0:7070 --grpc 0.0.0.0:7071 --data /var/lib/tscmig
#
# Two stages on the same base, so the native addon (better-sqlite3) built in the first one matches
# the Node ABI and glibc of the second. The runtime stage holds production dependencies, the
# compiled JavaScript and bin/, owned by root and run as the unprivileged `node` user: the process
# can write only its data directory. NODE_IMAGE lets an offline machine substitute a local image of
# the same Node 20 / Debian bookworm base (nothing can be pulled there).
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# better-sqlite3 fetches a prebuilt addon when it can and compiles it otherwise, which needs these
# tools, and Node's headers: the base image has them under /usr/local/include/node, so node-gyp
# is told to use those instead of downloading them (builds behind a firewall then still work).
ENV npm_config_nodedir=/usr/local
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first, from the lockfile only: this layer is reused until the lockfile changes.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# Created here and owned by `node` so that a new named volume mounted on it inherits a writable owner.
RUN mkdir -p /var/lib/tscmig && chown node:node /var/lib/tscmig
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
USER node
# 7070: HTTP control API (publish it); 7071: gRPC between daemons (keep it on the private network).
EXPOSE 7070 7071
# No curl or wget in slim images: node runs scripts/healthcheck.ts (compiled) to GET /healthz.
# Kept identical to the healthcheck of docker-compose.yml (test/e2e/compose-file.test.ts checks).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "dist/scripts/healthcheck.js"]
ENTRYPOINT ["node", "bin/tscmig.js"]
CMD ["daemon"]

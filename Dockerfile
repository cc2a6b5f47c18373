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
# Behind a proxy, pass it the usual way (--build-arg HTTP_PROXY=... HTTPS_PROXY=... NO_PROXY=...):
# those build arguments are predefined, reach apt and npm in this stage only, and are not recorded
# in the image's history. A base that already has the tools skips apt.
ENV npm_config_nodedir=/usr/local npm_config_update_notifier=false
RUN if command -v python3 && command -v make && command -v g++; then echo "build tools present"; else \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 make g++ \
      && rm -rf /var/lib/apt/lists/*; fi
# Dependencies first, from the lockfile only: this layer is reused until the lockfile changes.
# --ignore-scripts: `npm ci` would otherwise run this package's `prepare` (the TypeScript build)
# before the sources are here (TS5058); the one dependency that needs its install script, the
# native better-sqlite3, is rebuilt explicitly. BUILD_CA_PEM: the PEM text of a CA that signs the
# registry's certificate as this network presents it (an intercepting corporate proxy); used by
# npm in this stage only and deleted in the same step. A CA certificate is public, not a secret.
ARG BUILD_CA_PEM=""
COPY package.json package-lock.json ./
RUN set -e; if [ -n "$BUILD_CA_PEM" ]; then printf '%s\n' "$BUILD_CA_PEM" > /tmp/build-ca.pem; \
      export npm_config_cafile=/tmp/build-ca.pem NODE_EXTRA_CA_CERTS=/tmp/build-ca.pem; fi; \
    npm ci --ignore-scripts --no-audit --no-fund; \
    npm rebuild better-sqlite3; \
    rm -f /tmp/build-ca.pem
COPY . .
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

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

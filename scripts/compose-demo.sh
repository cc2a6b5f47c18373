#!/usr/bin/env bash
# Builds the tscmig image on a real container engine and runs the two-container demo of
# docker-compose.yml: a source and a destination daemon, each in its own container, and the one-shot
# demo client migrating a VM between them. CI runs this (see .ci/run); anyone with root can too.
#
#   scripts/compose-demo.sh            build, run the demo, then the compose end-to-end test, clean up
#   scripts/compose-demo.sh --no-test  build and run the demo only
#
# The engine is Debian's podman (with runc) serving the Docker API (`podman system service`), driven
# by Debian's docker-compose 1.29. Containers find each other by service name through CNI's dnsname
# plugin (dnsmasq): with netavark 1.4 + aardvark-dns instead, a container's name lookups stopped
# being answered for up to ~40 s whenever another container on its network was recreated. Everything lives in one temporary directory removed at the end:
# podman's storage, its network configuration, the API socket. Nothing is cached between runs and
# nothing of the machine's own podman state is touched.
#
# No image can be pulled here, so the base image is made locally: a minimal Debian bookworm
# (debootstrap) with this machine's Node.js 20 (node, npm, headers) under /usr/local and a `node`
# user, laid out like the official node:20-bookworm-slim the Dockerfile names by default.
# TSCMIG_NODE_IMAGE=IMAGE uses an image the engine already has instead.
#
# The build reaches apt and the npm registry the way this machine does:
#   - HTTP_PROXY / HTTPS_PROXY / NO_PROXY (either case) are passed as build arguments when set;
#     those are predefined build arguments: they stay out of the image and its history.
#   - A CA that signs the registry's certificate as this network presents it (an intercepting
#     proxy) is passed as BUILD_CA_PEM: the file named by TSCMIG_BUILD_CA_FILE, else the locally
#     added CAs in /usr/local/share/ca-certificates (Debian's place for them), else none.
# The script checks afterwards that neither reached the final image (history and environment).
#
# TSCMIG_COMPOSE_KEEP=1 leaves the engine, its state and the image in place for debugging.
#
# Exit status: 0 the demo committed a migration between the two containers, or the engine cannot
# run on this machine (the reason is printed, "SKIPPED: ..."); 1 the build, the demo or the test failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_TEST=1
[ "${1:-}" = "--no-test" ] && RUN_TEST=0
IMAGE=tscmig:local
BASE_IMAGE=localhost/tscmig-node-base:20
PROJECT="tscmigdemo$$"
T0=$SECONDS

say() { printf 'compose-demo: %s\n' "$*"; }
took() { printf '%ss' $((SECONDS - $1)); }
skip() {
  say "SKIPPED: $*"
  exit 0
}
fail() {
  say "FAILED: $*"
  exit 1
}

# --- what the engine needs --------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (rootful podman with runc; rootless podman needs subuids this script does not set up)"
for tool in podman runc docker-compose debootstrap node; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed (scripts/ci-deps.sh installs podman runc docker-compose debootstrap and the CNI dnsname plugin)"
done
[ -x /usr/lib/cni/dnsname ] || skip "the CNI dnsname plugin is not installed (golang-github-containernetworking-plugin-dnsname: service names resolve through it)"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" = 20 ] || [ -n "${TSCMIG_NODE_IMAGE:-}" ] || skip "the local base image carries this machine's node, which is $(node --version), not 20"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tscmig-compose.XXXXXX")
SERVICE_PID=""
HEALTH_PID=""
export CONTAINERS_CONF="$WORK/containers.conf" CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
export DOCKER_HOST="unix://$WORK/podman.sock" COMPOSE_PROJECT_NAME="$PROJECT"
# Daemons that talk gRPC off loopback authenticate each other with a shared peer token: one per
# run, never printed, given to both containers by the compose file.
TSCMIG_PEER_TOKEN=${TSCMIG_PEER_TOKEN:-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')}
export TSCMIG_PEER_TOKEN
COMPOSE=(docker-compose -f "$ROOT/docker-compose.yml")

cleanup() {
  if [ -n "${TSCMIG_COMPOSE_KEEP:-}" ]; then
    say "kept for debugging (TSCMIG_COMPOSE_KEEP): CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF DOCKER_HOST=$DOCKER_HOST; service pid $SERVICE_PID, healthchecks pid $HEALTH_PID"
    return
  fi
  [ -n "$HEALTH_PID" ] && kill "$HEALTH_PID" 2>/dev/null
  if [ -S "$WORK/podman.sock" ]; then
    "${COMPOSE[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  fi
  [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null
  podman system reset --force >/dev/null 2>&1
  # dnsname keeps each network's dnsmasq state under /run: stop what a failed start left behind.
  for dir in /run/containers/cni/dnsname/"${PROJECT}"_default /run/containers/cni/dnsname/tscmige2e*_default; do
    [ -d "$dir" ] || continue
    [ -f "$dir/pidfile" ] && kill "$(cat "$dir/pidfile")" 2>/dev/null
    rm -rf "$dir"
  done
  # The CNI firewall plugin leaves a removed network's per-bridge rules behind: drop those this run added.
  if [ -f "$WORK/iptables.before" ]; then
    iptables -S | grep -F -x -v -f "$WORK/iptables.before" | grep -E '^-A .*cni-podman[0-9]+' | while read -r rule; do
      bridge=$(grep -oE 'cni-podman[0-9]+' <<<"$rule" | head -1)
      ip link show "$bridge" >/dev/null 2>&1 || eval "iptables -D ${rule#-A }" 2>/dev/null
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# The VM's hard limit on open files is low (4096 on some): podman's default ulimits would exceed it
# and runc refuses to start the container. Ask for what the caller may have, at most 4096.
limit() { local hard; hard=$(ulimit -H "$1"); [ "$hard" = unlimited ] || [ "$hard" -gt 4096 ] && hard=4096; echo "$hard"; }
NOFILE=$(limit -n)
NPROC=$(limit -u)
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]
[engine]
runtime = "runc"
[network]
network_backend = "cni"
network_config_dir = "$WORK/networks"
EOF
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
mkdir -p "$WORK/networks"
iptables -S >"$WORK/iptables.before" 2>/dev/null || true
say "engine: $(podman --version), runc $(runc --version | head -1 | awk '{print $3}'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /'); ulimits nofile=$NOFILE nproc=$NPROC; state in $WORK"

# --- the base image ---------------------------------------------------------------------------------
make_base() {
  local rootfs="$WORK/rootfs" mirror="${TSCMIG_DEBIAN_MIRROR:-http://deb.debian.org/debian}" t=$SECONDS
  local node_bin npm_dir headers
  node_bin=$(readlink -f "$(command -v node)")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  headers="$(dirname "$(dirname "$node_bin")")/include/node"
  [ -f "$npm_dir/package.json" ] || fail "cannot find npm's package directory beside $(command -v npm)"
  [ -f "$headers/node_version.h" ] || fail "Node's headers are not at $headers (node-gyp needs them for better-sqlite3)"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
    tail -5 "$WORK/debootstrap.log"
    fail "debootstrap of Debian bookworm from $mirror failed (log above)"
  fi
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib/node_modules" "$rootfs/usr/local/include"
  cp "$node_bin" "$rootfs/usr/local/bin/node"
  cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  cp -a "$headers" "$rootfs/usr/local/include/node"
  chroot "$rootfs" groupadd --gid 1000 node && chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
    || fail "could not add the node user to the base image"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["node"]' - "$BASE_IMAGE" >/dev/null || fail "podman import of the base rootfs failed"
  rm -rf "$rootfs"
  say "base image $BASE_IMAGE: Debian bookworm (debootstrap) + this machine's node $(node --version) in $(took "$t")"
}

# --- the engine's API, and healthchecks ---------------------------------------------------------------
start_service() {
  podman system service --time=0 "$DOCKER_HOST" >"$WORK/service.log" 2>&1 &
  SERVICE_PID=$!
  for _ in $(seq 1 50); do
    [ -S "$WORK/podman.sock" ] && docker-compose version >/dev/null 2>&1 && "${COMPOSE[@]}" ps >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  tail -5 "$WORK/service.log"
  fail "podman system service did not answer on $DOCKER_HOST"
}

# podman schedules healthchecks with systemd timers; without systemd (a container, a CI VM) none
# run and `depends_on: service_healthy` waits forever. Run them the way the timers would.
drive_healthchecks() {
  while true; do
    for c in $(podman ps --filter label=com.docker.compose.project --format '{{.Names}}' 2>/dev/null); do
      podman healthcheck run "$c" >/dev/null 2>&1
    done
    sleep 1
  done
}

if [ -n "${TSCMIG_NODE_IMAGE:-}" ]; then
  BASE_IMAGE=$TSCMIG_NODE_IMAGE
  say "base image: $BASE_IMAGE (TSCMIG_NODE_IMAGE)"
else
  make_base
fi
start_service

# --- build ------------------------------------------------------------------------------------------
BUILD_ARGS=(--build-arg "NODE_IMAGE=$BASE_IMAGE")
passed=()
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  if [ -n "${!v:-}" ]; then
    BUILD_ARGS+=(--build-arg "$v=${!v}")
    passed+=("$v")
  fi
done
ca_files=()
if [ -n "${TSCMIG_BUILD_CA_FILE:-}" ]; then
  [ -r "$TSCMIG_BUILD_CA_FILE" ] || fail "TSCMIG_BUILD_CA_FILE=$TSCMIG_BUILD_CA_FILE is not readable"
  ca_files=("$TSCMIG_BUILD_CA_FILE")
elif [ -d /usr/local/share/ca-certificates ]; then
  mapfile -t ca_files < <(find /usr/local/share/ca-certificates -name '*.crt' -type f | sort)
fi
if [ ${#ca_files[@]} -gt 0 ]; then
  ca_pem=$(cat "${ca_files[@]}")
  # One environment string holds at most 128 KiB: a whole system bundle does not fit, and is not needed.
  [ ${#ca_pem} -lt 120000 ] || fail "the CA file(s) ${ca_files[*]} are too large for a build argument: name only the CA(s) the proxy uses in TSCMIG_BUILD_CA_FILE"
  BUILD_ARGS+=(--build-arg "BUILD_CA_PEM=$ca_pem")
  passed+=("BUILD_CA_PEM(${ca_files[*]})")
fi
say "building $IMAGE from Dockerfile; build arguments passed: NODE_IMAGE ${passed[*]:-}"
t=$SECONDS
if ! podman build --format docker --network host "${BUILD_ARGS[@]}" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1; then
  tail -40 "$WORK/build.log"
  fail "podman build failed (last lines above)"
fi
size=$(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')
say "image built: $IMAGE ($(podman image inspect "$IMAGE" --format '{{.Id}}' | cut -c1-12), $size) in $(took "$t")"
leaks=$( (podman history --no-trunc --format '{{.CreatedBy}}' "$IMAGE"; podman image inspect "$IMAGE" --format '{{range .Config.Env}}{{println .}}{{end}}') | grep -ciE 'BUILD_CA_PEM|BEGIN CERTIFICATE|_proxy=' || true)
[ "$leaks" = 0 ] || fail "a build argument (proxy or CA) reached the final image's history or environment"
say "no proxy setting or CA in the final image's history or environment"

# --- the demo -----------------------------------------------------------------------------------------
drive_healthchecks &
HEALTH_PID=$!
say "docker-compose up: source and destination daemons, then the demo client (project $PROJECT)"
t=$SECONDS
SOURCE_HTTP_PORT=0 DESTINATION_HTTP_PORT=0 timeout 240 "${COMPOSE[@]}" up --no-build --no-color --abort-on-container-exit --exit-code-from demo demo >"$WORK/up.log" 2>&1
code=$?
sed -n 's/^demo_1 *| \{0,1\}//p' "$WORK/up.log" | sed 's/^/  | /'
if [ "$code" != 0 ] || ! grep -q 'outcome: committed' "$WORK/up.log"; then
  tail -30 "$WORK/up.log"
  "${COMPOSE[@]}" logs --no-color --tail 20 source destination 2>&1 | tail -40
  fail "the compose demo exited $code without committing a migration (output above)"
fi
addr() { podman inspect "${PROJECT}_$1_1" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' 2>/dev/null; }
say "the demo committed a migration from container ${PROJECT}_source_1 ($(addr source)) to container ${PROJECT}_destination_1 ($(addr destination)) in $(took "$t")"

if [ "$RUN_TEST" = 1 ]; then
  # The compose end-to-end test against this engine and image: skew from the shell, the summary,
  # and a migration right after the destination container was recreated with a new address.
  t=$SECONDS
  if ! (cd "$ROOT" && TSCMIG_COMPOSE_ENGINE="$DOCKER_HOST" npx vitest run test/e2e/compose-up.test.ts >"$WORK/e2e.log" 2>&1); then
    cat "$WORK/e2e.log"
    fail "test/e2e/compose-up.test.ts failed against this engine (output above)"
  fi
  grep -E '✓|Tests|skip' "$WORK/e2e.log" | sed 's/^/  | /'
  # Handed an engine and an image, the test must run: a skip here is a failure, not a pass.
  if grep -qE 'skipped|skip:' "$WORK/e2e.log"; then
    fail "test/e2e/compose-up.test.ts skipped against this engine (output above): it must run here"
  fi

  say "compose end-to-end test passed in $(took "$t")"
fi
say "done in $(took "$T0") (base image, build, demo$([ "$RUN_TEST" = 1 ] && echo ", end-to-end test"))"

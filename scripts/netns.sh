#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair, for running one tscmig
# daemon per "host" with a real network between them (lighter than containers, no engine needed).
#
#   scripts/netns.sh check                       exit 0 when namespaces can be made here; else why, on stderr
#   scripts/netns.sh [-i ID] up                  create the pair (idempotent); prints the lines of `env`
#   scripts/netns.sh [-i ID] env                 print SRC_NS= DST_NS= SRC_ADDR= DST_ADDR= PREFIX= IFNAME=
#   scripts/netns.sh [-i ID] exec src|dst CMD... run CMD inside one namespace (exec'd: its PID is CMD's)
#   scripts/netns.sh [-i ID] down                delete the pair (idempotent); ends processes left inside
#   scripts/netns.sh list                        the tscmig namespaces that exist now
#
# ID (1-12 characters of [a-z0-9]; from -i/--id, else $NETNS_ID, else "dev") keeps parallel runs
# apart: the namespaces are tscmig-src-ID and tscmig-dst-ID. The veth pair is created straight into
# the two namespaces, so no interface ever appears in the host's namespace and `veth0` is the link's
# name on both sides. Addresses are 10.231.X.1/30 (src) and 10.231.X.2/30 (dst) with X = cksum(ID)
# mod 256; they exist only inside these two namespaces (the host has no route to them), so two
# topologies that happen to share an X cannot interfere.
#
# Both namespaces share the host kernel: one CLOCK_MONOTONIC, which the project takes as true time
# (docs/time-across-migration.md#the-time-model), exactly as for the two containers of docker-compose.yml;
# give both daemons one TSCMIG_TRUE_EPOCH_NS and they agree on true realtime exactly.
# Needs root and iproute2. The kernel here has no netem: shape with tbf/htb or drop with nft inside
# a namespace (`exec src tc ...`), and put delay/loss/reordering in a userspace proxy.
set -eu

prog=${0##*/}

die() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -eu$/{/^set -eu$/d;s/^# \{0,1\}//;p}' "$0"
}

id=${NETNS_ID:-dev}
while [ $# -gt 0 ]; do
  case $1 in
    -i | --id)
      [ $# -ge 2 ] || die "$1 needs a value"
      id=$2
      shift 2
      ;;
    --id=*)
      id=${1#--id=}
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      break
      ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || {
  usage >&2
  exit 2
}
command=$1
shift

case $id in
  '' | *[!a-z0-9]*) die "ID must be 1-12 characters of [a-z0-9], not '$id'" ;;
esac
[ "${#id}" -le 12 ] || die "ID must be at most 12 characters, not '$id'"

src_ns=tscmig-src-$id
dst_ns=tscmig-dst-$id
ifname=veth0
prefix=30
octet=$(($(printf '%s' "$id" | cksum | cut -d' ' -f1) % 256))
src_addr=10.231.$octet.1
dst_addr=10.231.$octet.2

need_ip() {
  command -v ip >/dev/null 2>&1 || die "iproute2's 'ip' is not installed (apt-get install iproute2)"
}

ns_exists() {
  ip netns list 2>/dev/null | cut -d' ' -f1 | grep -Fqx -- "$1"
}

print_env() {
  printf 'SRC_NS=%s\nDST_NS=%s\nSRC_ADDR=%s\nDST_ADDR=%s\nPREFIX=%s\nIFNAME=%s\n' \
    "$src_ns" "$dst_ns" "$src_addr" "$dst_addr" "$prefix" "$ifname"
}

do_check() {
  [ "$(uname -s)" = Linux ] || die "network namespaces need Linux, this is $(uname -s)"
  [ "$(id -u)" = 0 ] || die "creating network namespaces needs root (uid is $(id -u))"
  need_ip
  probe_a=tscmig-chk-$$-a
  probe_b=tscmig-chk-$$-b
  trap 'ip netns del "$probe_a" 2>/dev/null || true; ip netns del "$probe_b" 2>/dev/null || true' EXIT
  err=$(ip netns add "$probe_a" 2>&1) || die "'ip netns add' fails here: $err"
  err=$(ip netns add "$probe_b" 2>&1) || die "'ip netns add' fails here: $err"
  err=$(ip -n "$probe_a" link add veth0 type veth peer name veth0 netns "$probe_b" 2>&1) ||
    die "cannot create a veth pair between namespaces: $err"
  echo "ok: network namespaces and veth pairs work here"
}

do_up() {
  need_ip
  for ns in "$src_ns" "$dst_ns"; do
    ns_exists "$ns" || ip netns add "$ns"
  done
  # Deleting either end of a veth deletes the pair, so src having veth0 means dst has the peer.
  if ! ip -n "$src_ns" link show "$ifname" >/dev/null 2>&1; then
    ip -n "$dst_ns" link del "$ifname" >/dev/null 2>&1 || true
    ip -n "$src_ns" link add "$ifname" type veth peer name "$ifname" netns "$dst_ns"
  fi
  ip -n "$src_ns" addr replace "$src_addr/$prefix" dev "$ifname"
  ip -n "$dst_ns" addr replace "$dst_addr/$prefix" dev "$ifname"
  for ns in "$src_ns" "$dst_ns"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$ifname" up
  done
  print_env
}

# Ends the processes still inside namespace $1: SIGTERM, up to ~5 s for them to go, then SIGKILL.
# (A namespace outlives `ip netns del` while any process is inside it.)
end_processes_in() {
  pids=$(ip netns pids "$1" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086 # one PID per word
  kill -TERM $pids 2>/dev/null || true
  tries=0
  while [ "$tries" -lt 50 ]; do
    pids=$(ip netns pids "$1" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    sleep 0.1
    tries=$((tries + 1))
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

do_down() {
  need_ip
  for ns in "$src_ns" "$dst_ns"; do
    ns_exists "$ns" || continue
    end_processes_in "$ns"
    if ! err=$(ip netns del "$ns" 2>&1); then
      ns_exists "$ns" && die "cannot delete namespace $ns: $err"
    fi
  done
  return 0
}

do_exec() {
  [ $# -ge 2 ] || die "usage: $prog [-i ID] exec src|dst CMD [ARG...]"
  case $1 in
    src) ns=$src_ns ;;
    dst) ns=$dst_ns ;;
    *) die "side must be 'src' or 'dst', not '$1'" ;;
  esac
  shift
  need_ip
  ns_exists "$ns" || die "namespace $ns does not exist (run: $prog -i $id up)"
  exec ip netns exec "$ns" "$@"
}

case $command in
  check) do_check ;;
  up) do_up ;;
  env) print_env ;;
  exec) do_exec "$@" ;;
  down) do_down ;;
  list)
    need_ip
    ip netns list 2>/dev/null | cut -d' ' -f1 | grep '^tscmig-' || true
    ;;
  *) die "unknown command '$command' (see --help)" ;;
esac

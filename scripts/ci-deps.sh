#!/usr/bin/env bash
# Debian packages some tests and CI steps use: the stock gRPC client, compose validation, Chromium for
# the dashboard's browser tests, a real container engine for the image build and the two-container
# demo (scripts/compose-demo.sh: podman with runc, CNI plugins with dnsname for service names,
# Debian's docker-compose, debootstrap for the base image), openssl, iproute2. Best effort and quick:
# what needs a missing one skips with a printed reason. Says what it installs, or that everything was there.
set -u
need=()
/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null || need+=(python3-grpcio python3-grpc-tools)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -x /usr/lib/cni/dnsname ] || need+=(containernetworking-plugins golang-github-containernetworking-plugin-dnsname)
if [ ${#need[@]} -eq 0 ]; then
  echo "ci-deps: all present (python3-grpcio, docker-compose, openssl, iproute2, podman, runc, debootstrap, CNI dnsname)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ci-deps: installing ${need[*]}"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1; then
    echo "ci-deps: installed ${need[*]}"
  else
    echo "ci-deps: could not install ${need[*]}; the tests and steps that need them will skip"
  fi
else
  echo "ci-deps: missing ${need[*]} (not root or no apt-get); the tests and steps that need them will skip"
fi
# The browser tests drive Debian's Chromium (the npm browser download cannot work here); with its
# recommended packages, so that pages render with real fonts in the screenshots.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ci-deps: installing chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "ci-deps: could not install chromium; the browser tests will skip"
fi
if [ -x /usr/bin/chromium ]; then
  echo "ci-deps: browser tests use $(/usr/bin/chromium --version 2>/dev/null | head -1)"
else
  echo "ci-deps: no Chromium; the browser tests will skip"
fi
exit 0

#!/usr/bin/env bash
# Debian packages some tests use (stock gRPC client, compose validation, Chromium for the dashboard's
# browser tests). Best effort: tests that need a missing one skip with a printed reason.
set -u
need=()
/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null || need+=(python3-grpcio python3-grpc-tools)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ci-deps: installing ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 \
    || echo "ci-deps: could not install ${need[*]}; the tests that need them will skip"
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

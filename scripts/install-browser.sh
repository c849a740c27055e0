#!/usr/bin/env bash
# Installs Debian's Chromium for the end-to-end browser tests (tests/e2e), if missing.
# Needs root (CI runs as root); elsewhere it prints how to install and the e2e tests skip.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "note: /usr/bin/chromium missing; run 'sudo apt-get install chromium' for the browser tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  || echo "note: could not install chromium; the browser tests will skip" >&2
exit 0

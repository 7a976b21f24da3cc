#!/usr/bin/env bash
# Make sure Chromium is at $1: install Debian's package when missing and we can (root with apt-get),
# else fail with one line saying what to install.
set -euo pipefail
chromium="$1"
[ -x "$chromium" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium (apt-get)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -x "$chromium" ] && exit 0
echo "itc: error: no Chromium at $chromium: install Debian's package (sudo apt-get install chromium) or run make test-browser CHROMIUM=/path/to/chromium" >&2
exit 2

#!/usr/bin/env bash
# Sourced by install-tools.sh: Debian's chromium, the headless browser test/admin-ui drives through
# playwright-core (which downloads no browser of its own: it launches /usr/bin/chromium).
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
  command -v chromium >/dev/null 2>&1 || { echo "chromium still missing after installing it" >&2; return 1; }
fi

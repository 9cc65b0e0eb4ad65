#!/usr/bin/env bash
# Sourced by install-tools.sh: redis-server, the real Redis the global rate limit tests lease
# quota from. The tests run their own instance on a free loopback port (no persistence); where an
# init system honours the package's service, do not leave the system one running and enabled.
if ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    redis_sudo=""; [ "$(id -u)" -eq 0 ] || redis_sudo=sudo
    $redis_sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
  command -v redis-server >/dev/null 2>&1 || { echo "redis-server still missing after installing it" >&2; return 1; }
fi

#!/usr/bin/env bash
# Sourced by install-tools.sh: promtool, which lints the /metrics exposition (`promtool check metrics`).
# Debian ships it in the prometheus package; the server that package also ships is not wanted here.
if ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
  # Where an init system honours the package's service (no policy-rc.d veto), do not leave a Prometheus
  # server running and enabled because the tests needed its linter.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    promtool_sudo=""; [ "$(id -u)" -eq 0 ] || promtool_sudo=sudo
    $promtool_sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after installing prometheus" >&2; return 1; }
fi

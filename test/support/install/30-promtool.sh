#!/usr/bin/env bash
# Sourced by install-tools.sh: promtool (`promtool check metrics`, `check rules`, `test rules`) and the
# prometheus server that test/observability/ starts itself, on a temp dir and a free port. Debian ships
# both in the prometheus package; the system service that package also sets up is not wanted here.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  apt_install prometheus
  # Where an init system honours the package's service (no policy-rc.d veto), do not leave a Prometheus
  # server running and enabled because the tests needed the binaries.
  promtool_sudo=""; [ "$(id -u)" -eq 0 ] || promtool_sudo=sudo
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $promtool_sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    # sysvinit (or a container without systemd whose policy let the package start it)
    $promtool_sudo /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && { $promtool_sudo update-rc.d prometheus disable >/dev/null 2>&1 || true; }
  fi
  command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after installing prometheus" >&2; return 1; }
  command -v prometheus >/dev/null 2>&1 || { echo "prometheus still missing after installing prometheus" >&2; return 1; }
fi

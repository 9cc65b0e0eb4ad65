#!/usr/bin/env bash
# Shared helper: apt_install PKG... installs the missing ones (runs `apt-get update` once first).
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ ! -f /tmp/.pilotfish-apt-updated ]; then
    $sudo apt-get update -qq >/dev/null && touch /tmp/.pilotfish-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

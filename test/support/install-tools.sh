#!/usr/bin/env bash
# Installs what the tests need from the system (each script in install/ checks before it installs),
# so a fresh machine passes `npm test` with nothing set up by hand.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/install/apt.sh"
for script in "$here"/install/[0-9]*.sh; do
  [ -e "$script" ] || continue
  source "$script"
done

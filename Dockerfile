# syntax=docker/dockerfile:1
#
# Pilotfish sidecar image.
#
#   docker build -t pilotfish:dev .
#   docker run --rm -v "$PWD/my-policy.yaml:/etc/pilotfish/pilotfish.yaml:ro" -p 15000:15000 pilotfish:dev
#
# The policy is mounted at /etc/pilotfish/pilotfish.yaml (a ConfigMap volume in Kubernetes, a bind mount
# in Compose: see examples/). It must put the admin listener on 0.0.0.0:15000 so that probes and Prometheus
# from outside the container reach /healthz, /readyz and /metrics; /admin/* (policy, upstream state) still
# answers only listeners.admin.adminFrom, loopback by default, and shows no secrets. The outbound listener
# (the app's HTTP_PROXY) stays on 127.0.0.1:15001, reachable only from the pod / shared network namespace.
# Mount the directory rather than the single file where you can: a directory mount sees edits made by
# rename, so hot reload keeps working.
# `docker run pilotfish:dev validate /etc/pilotfish/pilotfish.yaml` checks a policy without serving.

# A supported Node.js LTS: the test suite runs on this major too (test/support/install/70-node-lts.sh).
ARG NODE_IMAGE=node:24-bookworm-slim

# ---------------------------------------------------------------- build: compile TypeScript, keep prod deps
FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Manifests first, so the dependency layer is reused while only sources change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY cmd ./cmd
COPY lib ./lib
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------- runtime
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
# Files stay owned by root: the process (user node) can read but not modify its own code.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# The default policy (loopback only) for `run` without --policy; the CMD below uses the mounted one.
COPY config ./config

# uid 1000 in the node images; Kubernetes' runAsNonRoot needs the number, so manifests set runAsUser: 1000.
USER node
EXPOSE 15000 15001 15006
# No curl in the slim image: Node's own fetch. Follows the admin listener of the mounted policy only if it
# stays on port 15000.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:15000/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Pilotfish drains in-flight requests on SIGTERM (policy drainTimeout), then exits. Node runs as PID 1 here
# and handles SIGTERM/SIGINT itself; no init process is needed for a single process.
STOPSIGNAL SIGTERM
# V8's young generation at 2 x 8 MiB instead of 2 x 16 (about 14 MiB less peak RSS under load, at no
# measurable CPU cost), collected on the main thread only (helper threads cost CPU a sidecar's CPU limit
# pays for): test/bench/node-flags.sh, which the benches share, says how both were measured.
ENTRYPOINT ["node", "--max-semi-space-size=8", "--no-parallel-scavenge", "dist/cmd/pilotfish.js"]
CMD ["run", "--policy", "/etc/pilotfish/pilotfish.yaml"]

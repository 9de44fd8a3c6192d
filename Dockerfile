# syntax=docker/dockerfile:1
# sessiond image: docker build -t sessiond:0.1.0 .
# deploy/kubernetes/ runs it; test/52-deploy.test.ts checks that this file and
# the manifests agree with the code and builds the same layout outside Docker.
ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile TypeScript, then keep only the runtime dependencies -----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# better-sqlite3 is a native module: npm downloads a prebuilt binary when one
# matches, and compiles it with these otherwise (no network, new Node release).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY generated ./generated
COPY descriptors ./descriptors
COPY src ./src
# tsconfig.build.json: rootDir "." and outDir "dist", so src/main.ts -> dist/src/main.js.
RUN node_modules/.bin/tsc -p tsconfig.build.json \
 && npm prune --omit=dev --no-audit --no-fund

# --- runtime: same base (same glibc for the native module), no compilers -----
FROM ${NODE_IMAGE} AS runtime
# Listening on every interface needs principals (docs/security.md), so the image
# expects the principals file where deploy/kubernetes/ mounts its Secret and
# fails to start without one, naming the path. Mount a folder holding
# principals.yaml (readable by uid 1000), not the file alone, so that edits reach
# the running server:
#   docker run -v "$PWD/principals:/etc/sessiond/principals:ro" -p 50051:50051 sessiond:0.1.0
# Only behind something that authenticates every caller:
#   docker run -e SESSIOND_PRINCIPALS_FILE= -e SESSIOND_ALLOW_UNAUTHENTICATED=true ...
ENV NODE_ENV=production \
    SESSIOND_LISTEN=0.0.0.0:50051 \
    SESSIOND_DB_PATH=/var/lib/sessiond/sessions.db \
    SESSIOND_PRINCIPALS_FILE=/etc/sessiond/principals/principals.yaml
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Server reflection reads the descriptor set from descriptors/ (next to dist/).
COPY --from=build /app/descriptors/sessiond.binpb ./descriptors/sessiond.binpb
# The `sessiond` command (admin, health, sessions) for kubectl exec and exec
# probes: with no src/ beside it, bin/sessiond.js runs dist/src/sessiond.js.
COPY bin/sessiond.js ./bin/sessiond.js
RUN mkdir -p /var/lib/sessiond && chown 1000:1000 /var/lib/sessiond
# The node image's "node" user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
VOLUME ["/var/lib/sessiond"]
EXPOSE 50051
# Node is PID 1 and handles SIGTERM itself: drain, final checkpoint, exit 0.
STOPSIGNAL SIGTERM
# No HEALTHCHECK: Kubernetes ignores it and uses the gRPC probes in deploy/kubernetes/.
CMD ["node", "dist/src/main.js"]

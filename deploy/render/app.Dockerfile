# syntax=docker/dockerfile:1
#
# An app image with portcullis inside, for render.yaml's preDeployCommand (and for a Kubernetes
# init container that runs the app image with command ["/usr/local/bin/portcullis", "migrate"]).
# The only portcullis-specific lines are the first FROM and the COPY --from; the rest stands in
# for your app's Dockerfile.

# A named stage for the portcullis image, so that the version is pinned in one place (and
# Renovate or Dependabot can bump it).
FROM ghcr.io/your-org/portcullis:0.1.0 AS portcullis

FROM node:22-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
# Includes drizzle/, drizzle-kit's `out` folder, which portcullis reads
# (PORTCULLIS_MIGRATIONS_DIR=./drizzle in render.yaml).
COPY . .
# One static file, no runtime dependencies: it runs on any Linux x86_64 base image.
COPY --from=portcullis /portcullis /usr/local/bin/portcullis
ENV NODE_ENV=production
# The base image's `node` user.
USER 1000:1000
EXPOSE 10000
CMD ["node", "dist/server.js"]

# syntax=docker/dockerfile:1
#
# portcullis as a container image: one static binary in an otherwise empty image.
#
#   docker build -t portcullis .                    # the image to publish (no migrations in it)
#   docker build --target example -t portcullis:example .
#                                                   # plus the repository's example migrations
#
# The binary is x86_64 (linux/amd64). On an arm64 machine, build with --platform linux/amd64.
#
# Targets:
#   runtime (the default, last stage)  /portcullis, /etc/ssl/certs/ca-certificates.crt,
#       /etc/passwd and /etc/group naming uid/gid 65532, an empty WORKDIR /app. Users put their
#       drizzle-kit folder at /app/migrations (FROM this image + COPY drizzle/ /app/migrations/)
#       or copy /portcullis into their own image. It deliberately holds no migrations: a COPY on
#       top of example migrations would merge two folders, and portcullis refuses a folder with
#       .sql files its journal does not list.
#   example  runtime + the repository's migrations/ (and seeds/ when the repository has one) in
#       /app, for the Compose demo and for trying portcullis out. Its seeds read
#       PORTCULLIS_SEED_VAR_ADMIN_EMAIL.
#
# Every file of both is laid out by deploy/docker/rootfs.sh, which scripts/check-deploy.sh also
# runs on the host to start the binary from exactly this layout as uid 65532.

FROM rust:1.95.0-bookworm AS build

# ring (rustls' cryptography) compiles C and assembly; for a musl target it must use musl's
# headers and libc. cc finds musl-gcc by itself today; naming it makes that independent of cc's
# lookup rules.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
ENV CC_x86_64_unknown_linux_musl=musl-gcc

WORKDIR /src

# Dependencies in their own layer: build them against placeholder sources, so that changing
# src/ rebuilds only portcullis itself. (Any target Cargo.toml names explicitly, such as a
# [[bench]] with a path, needs a placeholder here too.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && printf 'fn main() {}\n' >src/main.rs \
 && : >src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl \
 && rm -rf src

# The real sources. touch: COPY keeps the checkout's modification times, which can be older
# than the placeholder build, and cargo would then take the placeholder binary as up to date.
COPY src/ src/
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl

# The image's files, laid out here because the scratch stages below have no shell. The bind
# mount reads the build context (minus .dockerignore) without copying it into a layer.
RUN --mount=type=bind,target=/ctx \
    sh /ctx/deploy/docker/rootfs.sh \
      target/x86_64-unknown-linux-musl/release/portcullis /ctx /out


FROM scratch AS runtime
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Applies drizzle-kit migrations to PostgreSQL" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /out/runtime/ /
USER 65532:65532
WORKDIR /app
ENTRYPOINT ["/portcullis"]
CMD ["migrate"]


FROM runtime AS example
COPY --from=build /out/example/ /


# The default target is the image to publish.
FROM runtime

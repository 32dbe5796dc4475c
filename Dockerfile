# syntax=docker/dockerfile:1
#
#   docker build -t ghcr.io/claimguard/claimguard:0.1.0 .
#
# Builder on Debian bookworm so the binary's glibc matches the runtime image.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds;
# the binary is copied out because the target cache is not part of the layer.
# The release profile (Cargo.toml) has no debug info and strips symbols.
# kubectl-claimguard is the same binary under the name kubectl looks for
# plugins by (`kubectl claimguard explain pod/NAME`): a symlink, made here
# because the runtime image has no shell.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin claimguard \
 && cp target/release/claimguard /claimguard \
 && mkdir /plugins \
 && ln -s /claimguard /plugins/kubectl-claimguard

# distroless/cc: glibc, libgcc and CA roots, no shell, no package manager.
# The nonroot tag runs as 65532, the UID the Deployment pins.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /claimguard /claimguard
# A directory copy keeps the symlink a symlink.
COPY --from=builder /plugins/ /usr/local/bin/
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/claimguard"]
CMD ["serve"]

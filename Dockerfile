# syntax=docker/dockerfile:1
# Build: the same binary `cargo build --release` makes (OpenH264 and SQLite are compiled from bundled sources).
FROM rust:1.95-bookworm AS build
# nasm lets OpenH264 build its assembly (the local renderer encodes about twice as fast).
RUN apt-get update && apt-get install -y --no-install-recommends nasm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY schemas ./schemas
# The built-in mappings are compiled into the binary; the bench target must exist for the manifest to load.
COPY mappings ./mappings
COPY benches ./benches
RUN cargo build --release --locked --bin sora-shim && strip target/release/sora-shim

# Run: a small Debian base, no toolchain, non-root, data in a volume.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin sora \
    && mkdir -p /data && chown sora /data
COPY --from=build /src/target/release/sora-shim /usr/local/bin/sora-shim
USER sora
# MALLOC_ARENA_MAX=2: glibc's default (up to eight malloc arenas per core, each keeping what it freed) took the
# peak with 10,000 jobs in flight from 104 MiB to 176 MiB (BENCHMARKS.md, benches/memory.sh).
ENV SORA_SHIM_LISTEN=0.0.0.0:8080 SORA_SHIM_DATA_DIR=/data MALLOC_ARENA_MAX=2
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["sora-shim"]
CMD ["serve"]

# claude-relay: multi-stage build. The builder compiles the release binary; the runtime image
# holds only it (plus CA certificates for the upstream's TLS and curl for the health check)
# and runs as a non-root user. Not built on the development machine (no registry access
# there): see README "Running several instances".

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations ./migrations
COPY config ./config
COPY src ./src
# Cargo.toml names the test targets: their sources must exist for the manifest to load.
COPY tests ./tests
# The relay's profile for profile-guided optimisation, used when the image's rustc has the
# LLVM it was made with (otherwise a plain release build: the script says which).
COPY pgo ./pgo
COPY scripts/build-release.sh ./scripts/
RUN scripts/build-release.sh \
    && cp target/release/claude-relay /usr/local/bin/claude-relay

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --home-dir /app --shell /usr/sbin/nologin relay \
    && mkdir -p /app/data/journal \
    && chown -R relay:relay /app
COPY --from=builder /usr/local/bin/claude-relay /usr/local/bin/claude-relay
WORKDIR /app
USER relay
# The journal must outlive the container: mount a volume here, one per instance.
VOLUME ["/app/data/journal"]
ENV HOST=0.0.0.0 \
    PORT=3000 \
    USAGE_JOURNAL_DIR=/app/data/journal
EXPOSE 3000
# /health answers from memory (never waits on a backend); 200 unless the relay is unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/health" > /dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/claude-relay"]
CMD ["serve"]

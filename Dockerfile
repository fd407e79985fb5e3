# haul's container image: what the pods of `haul job backup|restore` run
# (one shard each), and what can run a whole backup in the cluster.
#
#   docker build -t registry.internal/haul:0.1 .
#   haul job backup -c prod.toml --shards 8 --image registry.internal/haul:0.1 | kubectl apply -f -
#
# Checked by CI with hadolint (no container runtime there); built wherever
# one exists. The runtime holds haul, PostgreSQL's client tools (pg_dump,
# pg_restore, for backups and restores that include databases), CA
# certificates, and nothing else; it runs as an unprivileged user with a
# read-only root filesystem (the Job mounts /tmp).

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p haul-cli --bin haul \
    && install -m 0755 target/release/haul /usr/local/bin/haul

FROM debian:bookworm-slim
# PostgreSQL 15's client: pg_dump must be at least as new as the server
# (use a newer client for newer servers).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311* postgresql-client-15=15.* \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/haul /usr/local/bin/haul
ENV HAUL_PG_BIN=/usr/lib/postgresql/15/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/haul"]
CMD ["--help"]

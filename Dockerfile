# imgate gateway image: multi-stage (build a venv, copy it into a slim runtime), non-root.
#   docker build -t imgate .
#   docker run --rm -p 50051:50051 --stop-timeout 20 imgate            # sandbox mode (say so)
#   docker run --rm -p 8080:8080 imgate sandbox --listen 0.0.0.0:8080   # emulators only
#   docker run --rm -p 50051:50051 --stop-timeout 20 -v $PWD/imgate.toml:/etc/imgate.toml:ro \
#       -e TENCENT_SECRET_KEY=... imgate serve --config /etc/imgate.toml
# More: docs/docker.md.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY server ./server
COPY clients/python ./clients/python
# Run-time dependencies at the exact versions CI tested (constraints.txt).
RUN python -m venv /opt/imgate && /opt/imgate/bin/pip install --constraint constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin imgate \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/imgate
COPY --from=build /opt/imgate /opt/imgate
# IMGATE_LISTEN is where `imgate serve` listens and what `imgate health` checks: change it
# (-e IMGATE_LISTEN=0.0.0.0:6000) and the health check follows.
ENV PATH=/opt/imgate/bin:$PATH PYTHONUNBUFFERED=1 IMGATE_LISTEN=0.0.0.0:50051
# The SQLite batch store (imgate.db) lives here: mount a volume so that batches survive
# the container (one gateway per volume: a second one on the same file is refused).
ENV IMGATE_STATE_DIR=/var/lib/imgate
VOLUME /var/lib/imgate
USER 10001
# 50051: gRPC. 50052: sandbox mode's emulators (with --sandbox-listen 0.0.0.0:50052).
# 8080: `imgate sandbox --listen 0.0.0.0:8080`, or the HTTP/JSON API ([http] listen).
# 9464: Prometheus metrics ([metrics] listen = "0.0.0.0:9464"). 50060: the plaintext
# health-only listener for probes that cannot speak TLS ([health] listen).
EXPOSE 50051 50052 8080 9464 50060
# grpc.health.v1 check of the overall service (""): `imgate health` imports grpc only
# (~0.1 s of CPU), and 30 s between checks keeps it well under 1% of a core. With [tls], set
# IMGATE_TARGET to the [health] listen address, or IMGATE_CA_FILE (docs/docker.md).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["imgate", "health"]
# SIGTERM drains: streams finish with an outcome per recipient within shutdown_grace_s
# (15 s by default). `docker stop` waits only 10 s before SIGKILL: run with
# --stop-timeout 20 (compose: stop_grace_period: 20s), as docs/docker.md says.
STOPSIGNAL SIGTERM
ENTRYPOINT ["imgate"]
# The default is the sandbox, on purpose and by name: the image listens on 0.0.0.0
# (IMGATE_LISTEN), where a plain `serve` without a config refuses to run the sandbox
# (CONTRACT §6 rule 20). Real vendors: `serve --config FILE` (with [callers], rule 18).
CMD ["serve", "--sandbox"]

# imgate gateway image: multi-stage (build a venv, copy it into a slim runtime), non-root.
#   docker build -t imgate .
#   docker run --rm -p 50051:50051 imgate                       # sandbox mode
#   docker run --rm -p 50051:50051 -v $PWD/imgate.toml:/etc/imgate.toml:ro \
#       -e TENCENT_SECRET_KEY=... imgate serve --config /etc/imgate.toml --listen 0.0.0.0:50051

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY clients/python ./clients/python
RUN python -m venv /opt/imgate && /opt/imgate/bin/pip install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin imgate
COPY --from=build /opt/imgate /opt/imgate
ENV PATH=/opt/imgate/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
EXPOSE 50051
# grpc.health.v1 check of the overall service ("") through the gateway's own client.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["imgate", "health", "--target", "127.0.0.1:50051"]
# SIGTERM drains: streams finish with an outcome per recipient within shutdown_grace_s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["imgate"]
CMD ["serve", "--listen", "0.0.0.0:50051"]

# syntax=docker/dockerfile:1
# Build stage: wheels for the gateway and its dependencies (build tools stay here).
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[fast,agent]'

# Final stage: the wheels installed into a slim Python, run as an unprivileged user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels 'chatkit-gateway[fast,agent]' \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/chatkit-gateway && chown 10001:10001 /var/lib/chatkit-gateway
# chatkit_agent routes' SQLite threads (store.url: sqlite:////var/lib/chatkit-gateway/…);
# mount a volume here to keep them across containers, or use PostgreSQL.
VOLUME ["/var/lib/chatkit-gateway"]
# The policy is yours, mounted at /etc/chatkit-gateway/gateway.yaml (README, "One server");
# without it the default command says what to mount. The repository's demo policy, to start:
COPY gateway.yaml /usr/share/chatkit-gateway/gateway.example.yaml
USER 10001:10001
EXPOSE 8080
# The gateway listens on 0.0.0.0 in a container; the policy says so through the env.
ENV GATEWAY_HOST=0.0.0.0 CHATKIT_STORE_URL=sqlite:////var/lib/chatkit-gateway/threads.db
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
# Exec form: the gateway is PID 1's only child-free process and receives SIGTERM itself.
ENTRYPOINT ["chatkit-gateway"]
CMD ["serve", "--config", "/etc/chatkit-gateway/gateway.yaml"]

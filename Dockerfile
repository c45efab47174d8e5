# ibanera-exporter: a multi-stage build. The wheel is built and installed into a venv in
# the first stage; the runtime stage gets only that venv, runs as a non-root user and
# reads its secrets from files under /run/secrets.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/ibanera-exporter \
 && /opt/ibanera-exporter/bin/pip install --no-cache-dir /wheels/*.whl

FROM ${PYTHON_IMAGE}
# Same base image as the build stage: the venv's interpreter path stays valid.
COPY --from=build /opt/ibanera-exporter /opt/ibanera-exporter
COPY deploy/config.yaml /etc/ibanera-exporter/config.yaml
# User and group 10001, as the Kubernetes Deployment runs it. /var/lib/ibanera-exporter holds
# the login state that must survive a restart (--storage.path): a volume, so that it stays
# writable under a read-only root file system.
RUN groupadd --system --gid 10001 ibanera \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin ibanera \
 && mkdir -p /var/lib/ibanera-exporter \
 && chown 10001:10001 /var/lib/ibanera-exporter
VOLUME /var/lib/ibanera-exporter
ENV PATH=/opt/ibanera-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 10095
# The image has Python, so the health check needs no curl. (With TLS in --web.config.file,
# probe https:// instead, or rely on your orchestrator's probes.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:10095/-/healthy', timeout=4)"]
ENTRYPOINT ["ibanera-exporter"]
CMD ["--config.file=/etc/ibanera-exporter/config.yaml", "--storage.path=/var/lib/ibanera-exporter"]

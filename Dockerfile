# Minimal image; hardening (multi-stage, non-root, healthcheck) comes with the deployment work.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir .
EXPOSE 10095
ENTRYPOINT ["ibanera-exporter"]
CMD ["--config.file", "/etc/ibanera-exporter/config.yaml"]

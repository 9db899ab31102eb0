# oneapi: the same install and start as README.md's first command, in a slim image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY oneapi ./oneapi
COPY schemas ./schemas
COPY providers.d ./providers.d
COPY dialects.d ./dialects.d
RUN pip install . \
 && useradd --system --uid 10001 --no-create-home --home-dir /app oneapi \
 && mkdir -p /data /app/config \
 && chown oneapi /data \
 # the default config's store (sqlite:///data/oneapi.db, relative to /app/config/config.yaml) lands on the volume
 && ln -s /data /app/config/data

# the default config, in a folder: mount your own folder over it (-v $PWD/config:/app/config:ro), not the file,
# since a file bind mount keeps the old inode when an editor saves and the reload never sees the change
COPY config.yaml ./config/config.yaml

USER oneapi
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/health', timeout=2).status != 200)"]

CMD ["oneapi", "serve", "--config", "/app/config/config.yaml"]

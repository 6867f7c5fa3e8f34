# The orchestrator service. It runs every build as a container on the HOST's Docker daemon, so
# it needs the host's socket: docker run -v /var/run/docker.sock:/var/run/docker.sock ...
# Its data (database, packages) lives in /var/lib/orchestrator: give it a named volume
# (-v orchestrator-data:/var/lib/orchestrator, as compose.yaml and deploy/stack.yaml do).
#
# BASE_IMAGE: any Debian trixie image. Where a registry is reachable the default works; offline,
# images/bootstrap makes orchestrator/base:trixie (compose.yaml passes it).
ARG BASE_IMAGE=debian:trixie-slim
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# CA certificates the host added (images/collect-ca), for a TLS-inspecting proxy.
COPY images/service/ca-certificates/ /usr/local/share/ca-certificates/
# repo-add (pacman-package-manager, with makepkg's library and bsdtar) and GnuPG make and sign
# the package repositories.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      pacman-package-manager makepkg libarchive-tools gnupg \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/orchestrator \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/orchestrator orchestrator \
 && install -d -o orchestrator -g orchestrator -m 0750 /var/lib/orchestrator

# Dependencies first, in their own layer, so a code change does not download them again.
COPY pyproject.toml /src/pyproject.toml
RUN /opt/orchestrator/bin/python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--no-cache-dir', *deps])"

COPY README.md /src/README.md
COPY orchestrator /src/orchestrator
RUN /opt/orchestrator/bin/pip install --no-cache-dir --no-deps /src && rm -rf /src
COPY images/service/entrypoint /usr/local/bin/orchestrator-entrypoint

ENV ORCHESTRATOR_HOST=0.0.0.0 \
    ORCHESTRATOR_PORT=7835 \
    ORCHESTRATOR_DATA_DIR=/var/lib/orchestrator
# No VOLUME: every container of an image with one that is not given a volume there gets an
# anonymous one, which outlives it unless it is removed with its volumes (-v); compose and the
# stack name theirs, so a VOLUME only ever made leftovers.
EXPOSE 7835
# Healthy = the daemon answers and the cpu build image is there.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/orchestrator/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7835/health', timeout=4)"]
# The entrypoint starts as root only to join the socket's group, then drops to `orchestrator`.
ENTRYPOINT ["/usr/local/bin/orchestrator-entrypoint"]
CMD ["serve"]
# Listening on 0.0.0.0 needs ORCHESTRATOR_API_TOKEN, or ORCHESTRATOR_ALLOW_UNAUTHENTICATED=true
# where the port is published on 127.0.0.1 only (as compose.yaml does).

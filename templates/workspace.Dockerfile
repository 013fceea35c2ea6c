# The default workspace image: a lean Debian bookworm with git, the PostgreSQL client, and Python
# with alembic, SQLAlchemy and psycopg in /opt/venv (first on PATH), so that a plain alembic
# project runs its migrations here with no Dockerfile of its own. Built locally by
# scripts/build-images (no registry needed).
#
# sandbox runs it as an unprivileged user (uid 1000 `sandbox`, or the invoking host user) with
# HOME=/tmp. /opt/venv is writable by that user, so `setup = ["pip install -e ."]` works.
# ca-bundle.crt is the host's CA bundle (or SANDBOX_CA_BUNDLE): behind a TLS-intercepting proxy,
# pip in this image and in images built FROM it reaches PyPI only with it.
ARG BASE_IMAGE=sandbox/debian:bookworm
FROM ${BASE_IMAGE}

ENV LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        bash \
        build-essential \
        ca-certificates \
        git \
        postgresql-client \
        python3 \
        python3-dev \
        python3-pip \
        python3-venv \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

COPY ca-bundle.crt /etc/ssl/certs/sandbox-ca-bundle.crt
ENV PIP_CERT=/etc/ssl/certs/sandbox-ca-bundle.crt \
    SSL_CERT_FILE=/etc/ssl/certs/sandbox-ca-bundle.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/sandbox-ca-bundle.crt \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "alembic>=1.13" "SQLAlchemy>=2.0" "psycopg[binary]>=3.1" pytest \
 && chmod -R a+rwX /opt/venv \
 && useradd --uid 1000 --user-group --create-home --shell /bin/bash sandbox

CMD ["bash"]

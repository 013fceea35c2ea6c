# The default workspace image: a lean Debian bookworm with git, Python and the PostgreSQL client.
# Built locally by scripts/build-images (no registry needed). sandbox runs it as the invoking
# host user (--user uid:gid) with HOME=/tmp, so nothing here assumes a particular user.
ARG BASE_IMAGE=sandbox/debian:bookworm
FROM ${BASE_IMAGE}

ENV LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
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

CMD ["bash"]

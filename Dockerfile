# syntax=docker/dockerfile:1
# The zeta-router image: the operator (`zeta-router operator`) and the router sidecar the
# operator puts in every model pod (`zeta-router router`) are the same image.
#
#   docker build -t zeta-router:0.1.0 .
#
# The builder turns the project and its dependencies into wheels, at the versions pinned in
# requirements.lock (make lock), so two builds of one commit carry the same packages; the final
# stage installs only those wheels (no compilers, no sources) and runs as an unprivileged
# numeric user. PYTHON_IMAGE is any Debian-based image with Python 3.11 and pip (the local
# cluster's images are built on a debootstrap base this way, with no registry).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY operator/ operator/
# The project's wheel plus a wheel of every dependency (all published as binary wheels).
RUN pip wheel --wheel-dir /wheels --constraint requirements.lock .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels zeta-router \
    && groupadd --gid 65532 zeta \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin zeta
# 65532 is also the UID the operator's pods and the router sidecars run as.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["zeta-router"]
CMD ["--help"]

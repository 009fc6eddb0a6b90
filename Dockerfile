# syntax=docker/dockerfile:1.7
# One image for the four kubemta services; each Deployment's `command` picks one
# (kubemta-ingress, kubemta-queue-manager, kubemta-dns-resolver, kubemta-delivery-worker).
# `kubemta-admin` (users, domains, dkim) runs the administration commands, e.g. with kubectl exec.
# There is no default service: the image has no CMD.

ARG PYTHON_VERSION=3.12

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- builder: a locked, non-editable install of the workspace into /app/.venv
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (only the lockfile and the pyprojects), so this layer is cached until they change.
COPY pyproject.toml uv.lock ./
COPY services/common/pyproject.toml services/common/
COPY services/mail-auth/pyproject.toml services/mail-auth/
COPY services/ingress/pyproject.toml services/ingress/
COPY services/queue-manager/pyproject.toml services/queue-manager/
COPY services/dns-resolver/pyproject.toml services/dns-resolver/
COPY services/delivery-worker/pyproject.toml services/delivery-worker/
COPY services/admin/pyproject.toml services/admin/
COPY services/tracker/pyproject.toml services/tracker/
COPY services/webhooks/pyproject.toml services/webhooks/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --all-packages --no-editable
# Then the sources, and the workspace members themselves (as wheels, not editable links).
COPY services/ services/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-editable

# ---- runtime: slim Python, only the virtual environment, non-root, read-only root filesystem friendly
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 kubemta \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kubemta
COPY --from=builder --chown=0:0 /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# SMTP 2525, submission 2587, SMTPS 2465 (the Service maps 25/587/465), metrics and health 9100
EXPOSE 2525 2587 2465 9100
USER 10001:10001
WORKDIR /app
LABEL org.opencontainers.image.title="kubemta" \
      org.opencontainers.image.description="Kubernetes-native mail transfer agent: ingress, queue-manager, dns-resolver, delivery-worker" \
      org.opencontainers.image.licenses="Apache-2.0"

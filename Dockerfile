# moodbot: the chat bots, the web demo, /healthz and /metrics in one process.
#
# NOTE: this recipe has NOT been built or run: the machine moodbot is developed on has no
# Docker. It follows the project's own set-up (uv, the locked uv.lock) step by step; expect
# to fix small things the first time it is built. See docs/DEPLOY.md.
#
#   docker build -t moodbot .
#   docker run --env-file .env -p 8080:8080 -v moodbot-data:/data moodbot

FROM python:3.11-slim

# uv, pinned to the version the lock file was written with.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock file changes. The
# training pipeline is a workspace member that a production install leaves out: only its
# pyproject.toml is needed, for uv to read the workspace.
COPY pyproject.toml uv.lock README.md ./
COPY training/pyproject.toml ./training/
RUN uv sync --frozen --no-dev --no-install-project

# Then the product itself, bot/ and ml/ (the model bundle ships inside ml/bundles/), installed
# as a wheel: tests/test_production_install.py runs this same install.
COPY bot ./bot
COPY ml ./ml
RUN uv sync --frozen --no-dev --no-editable

# An unprivileged user; the history database lives on a volume it owns.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin moodbot \
    && mkdir -p /data \
    && chown moodbot:moodbot /data
USER moodbot

ENV PATH="/app/.venv/bin:$PATH" \
    MOODBOT_DB=/data/moodbot.db \
    MOODBOT_WEB=true \
    MOODBOT_WEB_HOST=0.0.0.0 \
    MOODBOT_WEB_PORT=8080 \
    TELEGRAM_WEBHOOK_LISTEN=0.0.0.0 \
    TELEGRAM_WEBHOOK_PORT=8443 \
    MPLCONFIGDIR=/tmp/matplotlib
VOLUME ["/data"]

# 8080: web demo, /healthz, /metrics.  8443: the Telegram webhook (when TELEGRAM_WEBHOOK_URL is set).
EXPOSE 8080 8443

# /healthz is 503 while a bot is disconnected, the database is not writable or the process is
# shutting down; the start period covers loading TensorFlow and the models.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MOODBOT_WEB_PORT', '8080'), timeout=4)"]

# SIGTERM (docker stop) drains for MOODBOT_SHUTDOWN_GRACE_S (20 s): give it `--stop-timeout 30`.
STOPSIGNAL SIGTERM
CMD ["moodbot", "run", "--web"]

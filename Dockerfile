# posbridge: one image for every process (web, worker, beat, flower, migrations and the
# POS sandboxes); the process is chosen by the arguments, e.g. `docker run IMAGE worker -Q ingest`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install .` needs (see .dockerignore); every dependency ships a wheel
# for this platform, so no compiler is installed.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY workers ./workers
RUN pip install . && rm -rf /src

# Non-root, fixed uid so Kubernetes can enforce runAsNonRoot / runAsUser.
# /var/lib/posbridge is POSBRIDGE_VAR_DIR (beat's schedule file, embedded SQLite when no
# database URL is given); it is the only path the processes write to.
RUN groupadd --system --gid 10001 posbridge \
    && useradd --system --uid 10001 --gid posbridge --home-dir /var/lib/posbridge --create-home \
       --shell /usr/sbin/nologin posbridge

ENV POSBRIDGE_VAR_DIR=/var/lib/posbridge \
    POSBRIDGE_WEB_HOST=0.0.0.0 \
    POSBRIDGE_WEB_PORT=8000

USER 10001:10001
WORKDIR /var/lib/posbridge
EXPOSE 8000

ENTRYPOINT ["posbridge"]
CMD ["web"]

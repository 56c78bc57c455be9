# The one Pulse application image: api, outbox relay, worker, analytics, beat, flower and the
# migration job all run it with a different `pulse-start ROLE` (see docker/start, docker-compose.yml).
#
# Runtime dependencies only (pyproject's [project.dependencies]) plus the `monitoring` extra (Flower),
# at the versions of requirements/runtime.lock.
# The [dev] extra is NOT installed: it holds the test tools and SecantusDB (GPL, dev/test only).
# No credentials or settings are baked in: every setting comes from the environment at run time.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtualenv with the dependencies and the pulse wheel ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Third-party dependencies first, from requirements/runtime.lock alone (the exact versions of the
# runtime dependencies and the `monitoring` extra, resolved by `make lock` together with the dev lock,
# so the image runs what the tests ran), so this (slow) layer is rebuilt only when the lock changes.
COPY requirements/runtime.lock /tmp/runtime.lock
RUN pip install -r /tmp/runtime.lock && rm /tmp/runtime.lock

# Then the project itself (.dockerignore lets only pyproject.toml, README.md, requirements/, shared/,
# services/ and docker/ into the context), built as a wheel from a clean tree. --no-deps: everything it
# needs is installed above.
COPY . .
RUN pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && pip install --no-deps /tmp/wheels/pulse-*.whl \
 && rm -rf /tmp/wheels build *.egg-info \
 && pip check

# ---- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 pulse \
 && useradd --system --uid 10001 --gid pulse --home-dir /app --no-create-home --shell /usr/sbin/nologin pulse \
 && mkdir -p /app/var /keys \
 && chown pulse:pulse /app/var /keys
COPY --from=build /opt/venv /opt/venv
COPY docker/start /usr/local/bin/pulse-start
COPY docker/healthcheck /usr/local/bin/pulse-healthcheck
RUN chmod 0755 /usr/local/bin/pulse-start /usr/local/bin/pulse-healthcheck
# The code lives in the venv's site-packages; /app holds only the writable var/ (beat's schedule).
# /keys is where the dev-key job writes the development API key (a named volume takes its owner).
WORKDIR /app
USER pulse
EXPOSE 8000 5555
CMD ["pulse-start", "api"]

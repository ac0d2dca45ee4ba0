# One image for the agent and the operator (two entrypoints: vigil-agent, the
# default, and vigil-operator). The install steps are the same script CI runs
# (scripts/setup.sh), so what CI tests is what ships.
#
# Layers go from what changes least to what changes most: the OS packages and
# the kernel header tree (needs only setup.sh), then the dependencies (need only
# pyproject.toml), then the sources. A source change reruns only the last two
# steps (seconds); scripts/build-image.sh builds it without Docker.
FROM debian:bookworm-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    VIGIL_SETUP_NO_DEV=1 \
    PYTHON=python3

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/vigil

COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh os \
    && apt-get clean && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml ./
# kubernetes/aio is the client's asyncio twin (68 MB); the agent uses the sync
# client and kopf its own aiohttp client, so nothing imports it.
RUN bash scripts/setup.sh deps \
    && rm -rf /root/.cache .venv/lib/python3*/site-packages/kubernetes/aio

COPY . /opt/vigil
# tracefs is mounted by the agent at run time (or by the pod's hostPath).
RUN bash scripts/setup.sh && rm -rf /root/.cache

ENV PATH=/opt/vigil/.venv/bin:$PATH
ENTRYPOINT ["vigil-agent"]
CMD ["run", "--output", "json"]

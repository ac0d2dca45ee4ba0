# One image for the agent and the operator. The install steps are the same
# script CI runs (scripts/setup.sh), so what CI tests is what ships.
FROM debian:bookworm-slim

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip ca-certificates make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/vigil
COPY . /opt/vigil

# No dev extras in the image; tracefs is mounted by the agent at run time.
RUN VIGIL_SETUP_NO_DEV=1 PYTHON=python3 bash scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/* /root/.cache

ENV PATH=/opt/vigil/.venv/bin:$PATH
ENTRYPOINT ["vigil-agent"]
CMD ["run", "--output", "json"]

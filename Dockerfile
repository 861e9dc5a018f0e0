# magma-bench image: the API (`serve`), the study driver (`driver`, run through
# magma-ray-join when it talks to a Ray cluster), one-off `train` runs and, with
# `--entrypoint ray`, the Ray head and worker nodes. One image for all of them, so that every
# Ray node runs the same Python, Ray and package versions.
#
#   docker build -t magma-bench .                                        # CPU torch
#   docker build -t magma-bench:cuda --build-arg TORCH_VARIANT=cuda .    # CUDA torch
#   docker build --build-arg TORCH_VARIANT=cuda --build-arg TORCH_CUDA=cu126 ...
#   make wheelhouse && docker compose build --build-arg PIP_NO_INDEX=1   # no index reached
#
# BASE_IMAGE is any Debian-like image with python3 (and its venv module), groupadd and
# useradd: the public python:3.11-slim-bookworm by default, or a local one where no registry
# can be reached (the docker test imports one made by debootstrap, docker/local/). The
# builder and the runtime share it, so the venv's interpreter exists in both.
#
# No `# syntax=` line: the daemon's built-in Dockerfile frontend (RUN --mount, COPY --chmod)
# builds it, so no frontend image is pulled either.
#
# The bundled C4 sample and T5 tokenizer (worker/assets) are package data, so they are
# installed with the package: the image needs no network at run time.

ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

# --------------------------------------------------------------------------------------
# builder: a virtual environment in /opt/venv with torch, the dependencies and the package
# --------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# cpu: torch from the PyTorch CPU index (small, no CUDA libraries).
# cuda: torch from the PyTorch CUDA index named by TORCH_CUDA (a tag the chosen torch
#       version is published for, e.g. cu126, cu128, cu130); needs the NVIDIA driver and
#       the NVIDIA Container Toolkit on the host, nothing CUDA-specific in the image.
ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_CUDA=cu128
# 1: pip reads ./wheelhouse alone (``make wheelhouse``), no index; 0: the indexes too.
ARG PIP_NO_INDEX=0

# pip reads PIP_NO_INDEX (a build argument, so in the environment of every RUN) and
# PIP_FIND_LINKS: each pip step bind-mounts ./wheelhouse there, so no wheel stays in a layer.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheelhouse \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    pip install --upgrade pip setuptools wheel

# torch first, from its own index, so that the dependencies below find it satisfied.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    case "$TORCH_VARIANT" in \
      cpu)  index="https://download.pytorch.org/whl/cpu" ;; \
      cuda) index="https://download.pytorch.org/whl/${TORCH_CUDA}" ;; \
      *)    echo "TORCH_VARIANT must be cpu or cuda, not '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac \
    && pip install --index-url "$index" "$TORCH_SPEC"

# The dependencies alone (docker/requirements.py reads them from pyproject.toml: the
# library's and the [service] extra's), in a layer that source edits keep: the two files
# are mounted, not copied, so they add no layer (each layer is a full copy on some storage
# drivers, vfs among them).
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    --mount=type=bind,source=pyproject.toml,target=/tmp/deps/pyproject.toml \
    --mount=type=bind,source=docker/requirements.py,target=/tmp/deps/requirements.py \
    python /tmp/deps/requirements.py /tmp/deps/pyproject.toml > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# The package itself (not editable: the image carries no source tree), built from the build
# context mounted at /src (read-write, the build's writes discarded) instead of copied in.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    --mount=type=bind,target=/src,rw \
    pip install --no-deps /src \
    && python -c "import torch, ray, magma, worker, studies, service; print('torch', torch.__version__, 'ray', ray.__version__)"

# --------------------------------------------------------------------------------------
# runtime: the virtual environment on a slim Python, run as an unprivileged user
# --------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG TORCH_VARIANT=cpu
# Chromium for the dashboards' PNG/SVG figure export (kaleido drives it); 0 leaves it out
# (about 250 MB) and the export routes answer 503 while HTML export still works.
ARG WITH_CHROMIUM=1
ARG UID=1000
ARG GID=1000
LABEL org.opencontainers.image.title="magma-bench" \
      org.opencontainers.image.description="Magma optimizer benchmark: API, study driver and Ray nodes" \
      org.magma-bench.torch-variant="${TORCH_VARIANT}"

# /data is the shared volume of docker-compose.yml (Ray Tune storage, token cache): created
# here owned by the user, so that a new named volume mounted on it starts writable.
RUN if [ "${WITH_CHROMIUM}" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends chromium \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN groupadd --gid "${GID}" magma \
    && useradd --uid "${UID}" --gid magma --create-home --home-dir /home/magma \
        --shell /usr/sbin/nologin magma \
    && mkdir -p /data/ray /data/cache/tokens \
    && chown -R magma:magma /data

COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 docker/magma-ray-join /usr/local/bin/magma-ray-join

# Defaults for a single container (e.g. `docker run -v magma-data:/data magma-bench train
# ...`); docker-compose.yml sets its own. Paths are absolute: Ray Tune runs each trial in its
# own working directory, where a relative path would point somewhere else.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAGMA_DATABASE_URL=sqlite:////data/magma-bench.db \
    MAGMA_STORAGE=/data/ray \
    MAGMA_CACHE_DIR=/data/cache/tokens

USER magma
WORKDIR /data
EXPOSE 8000

# No HEALTHCHECK here: the same image runs the API, the driver and Ray nodes, which are
# checked differently; docker-compose.yml defines a check per service.
ENTRYPOINT ["magma-bench"]
CMD ["--help"]

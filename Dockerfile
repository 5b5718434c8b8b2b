# syntax=docker/dockerfile:1
# The Dapr pluggable component `kitex-fast component` with its compiled gRPC server (libnghttp2),
# as a non-root image (UID/GID 65532, as Dapr's own images). docs/dapr-component.md shows it in a pod.
#
#   docker build -t kitex-fast .
#   docker run --rm -v /tmp/dapr-components-sockets:/tmp/dapr-components-sockets kitex-fast
#
# PYTHON_IMAGE may be any Debian-based image with python3 and python3-venv: the official
# python:3.x-slim images, or plain Debian with those two packages (tests/image builds on that).
# Everything is installed into a venv (/opt/kitex-fast), never into the image's system Python.
ARG PYTHON_IMAGE=python:3.13-slim

FROM ${PYTHON_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A compiler and libnghttp2's headers; Python's own headers too where the base's python3 is
# Debian's (the official python images carry theirs).
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends gcc libc6-dev libnghttp2-dev pkg-config binutils \
 && if ! python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
      apt-get install -y -q --no-install-recommends python3-dev; fi \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/kitex-fast
COPY . /src
# Fail here, not at run time, when the compiled server was not built. -g0 and strip: no debug
# info in the shipped modules; nor pip or setuptools (nothing installs at run time). Last, note
# the runtime package holding the libnghttp2.so.N that _h2server links (libnghttp2-14 today),
# for the runtime stage to install.
RUN CFLAGS="-O2 -g0" /opt/kitex-fast/bin/pip install -q "/src[uvloop]" \
 && /opt/kitex-fast/bin/python -c "from kitex_fast.dapr import h2server; import sys; why = h2server.unavailable(); sys.exit(why and 'the compiled component server was not built: %s' % why)" \
 && /opt/kitex-fast/bin/python -m pip uninstall -q -y pip setuptools \
 && find /opt/kitex-fast -name '*.so' -exec strip --strip-unneeded {} + \
 && find /opt/kitex-fast -name '__pycache__' -prune -exec rm -rf {} + \
 && lib=$(ldd /opt/kitex-fast/lib/python3*/site-packages/kitex_fast/dapr/_h2server*.so | awk '/libnghttp2/ {print $3}') \
 && dpkg -S "$(readlink -f "$lib")" | cut -d: -f1 > /opt/kitex-fast/.runtime-packages

FROM ${PYTHON_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /opt/kitex-fast /opt/kitex-fast
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends $(cat /opt/kitex-fast/.runtime-packages) \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot \
 && mkdir -p /tmp/dapr-components-sockets && chown 65532:65532 /tmp/dapr-components-sockets \
 && /opt/kitex-fast/bin/python -c "from kitex_fast.dapr import h2server; assert not h2server.unavailable(), h2server.unavailable()"
# The socket folder: $DAPR_COMPONENTS_SOCKETS_FOLDER, else the injector's
# $DAPR_COMPONENT_SOCKETS_FOLDER, else /tmp/dapr-components-sockets (daprd's default). Not set
# here, so that whatever the pod sets wins.
ENV PATH=/opt/kitex-fast/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["/opt/kitex-fast/bin/kitex-fast", "component"]

#!/usr/bin/env bash
# Build the component's image (the repository's Dockerfile) with podman on this machine; print
# "podman-args<TAB>image" (podman-args: the global options every podman call here needs).
# Exit 2: a tool is missing; 3: podman cannot run here; anything else: the build failed.
#
# No registry image can be pulled here, so the base is plain Debian (python3 + python3-venv, which
# the Dockerfile supports besides python:3.x-slim) made with mmdebstrap and `podman import`ed.
# The base tar is cached under tests/image/.cache/ (gitignored) and both images in podman's own
# store (which outlives a fresh clone on the same machine), keyed by content: the base by its
# recipe, the image by the Dockerfile, the files it copies and the base, so an unchanged tree costs
# nothing on the next run.
#
# podman here: --runtime runc, cgroupfs, no default ulimits (containers.conf below); builds reach
# the package registries over the host's network with its CA certificates and pip.conf mounted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache="$here/.cache"
mkdir -p "$cache"

for tool in podman runc mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "build_image.sh: $tool not found (apt-get install podman runc mmdebstrap)" >&2; exit 2; }
done

conf="$cache/containers.conf"
cat > "$conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF="$conf"
podman=(podman --runtime runc --cgroup-manager cgroupfs)
# exit 3: podman cannot run on this machine at all (the test skips, or fails under CI, with this)
if ! out=$("${podman[@]}" info 2>&1); then
  echo "build_image.sh: podman cannot run here: ${out: -2000}" >&2
  exit 3
fi

# The base: plain Debian with what the Dockerfile needs of it. Its key is this recipe, not this
# script, so that editing the script does not remake a 200 MB base.
suite=bookworm
packages=python3,python3-venv,ca-certificates
base_key=$(printf 'mmdebstrap --variant=minbase --include=%s %s' "$packages" "$suite" | sha256sum | cut -c1-12)
base_tar="$cache/base-$suite-$base_key.tar"
base_image="localhost/kitex-fast-test-base:$suite-$base_key"
if ! "${podman[@]}" image exists "$base_image"; then
  if [ ! -s "$base_tar" ]; then
    echo "build_image.sh: making the $suite base with mmdebstrap (once; cached in $base_tar)" >&2
    rm -rf "$cache"/base-*.tar "$cache/part.tar"
    # (the name must end in .tar: mmdebstrap picks its output format from it)
    mmdebstrap --variant=minbase --include="$packages" "$suite" "$cache/part.tar" >&2
    mv "$cache/part.tar" "$base_tar"
  fi
  "${podman[@]}" import "$base_tar" "$base_image" >&2
fi

# The image's key: the Dockerfile, .dockerignore and every file the build context lets in.
tree_key=$(cd "$root" && {
  sha256sum Dockerfile .dockerignore pyproject.toml setup.py MANIFEST.in README.md LICENSE
  find src -type f \( -name '*.py' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pyi' -o -name '*.proto' -o -name py.typed \) \
    -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)
image="localhost/kitex-fast-test:$tree_key-$base_key"
if ! "${podman[@]}" image exists "$image"; then
  mounts=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
  [ -f /etc/pip.conf ] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
  started=$(date +%s)
  "${podman[@]}" build --network host "${mounts[@]}" --build-arg PYTHON_IMAGE="$base_image" \
    -t "$image" -f "$root/Dockerfile" "$root" >&2
  echo "build_image.sh: built $image in $(( $(date +%s) - started )) s" >&2
  # keep only this image of ours (and the base): old trees' images are dead weight; so are build
  # layers a day old (newer ones are the next build's cache)
  "${podman[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/kitex-fast-test:' \
    | grep -vx "$image" | xargs -r "${podman[@]}" rmi -f >/dev/null 2>&1 || true
  "${podman[@]}" image prune -f --filter until=24h >/dev/null 2>&1 || true
fi
printf '%s\t%s\n' "--runtime runc --cgroup-manager cgroupfs" "$image"

#!/usr/bin/env bash
# The test command (README): on a fresh machine it installs everything the tests need, builds the
# package with its Cython core, builds the Go Kitex peers from the Go module proxy, type-checks,
# and runs the suite: once with the compiled core installed (every behavioural test runs on both
# implementations through the c/py fixture), then again with KITEX_FAST_NO_EXTENSIONS=1 so the
# dispatchers' fallback to the pure-Python twin is exercised as a user without a compiler gets it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

python=${PYTHON:-python3}
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null

echo "== libnghttp2 for the compiled component server (kitex_fast.dapr._h2server)"
have_nghttp2() { pkg-config --exists libnghttp2 2>/dev/null || [ -f /usr/include/nghttp2/nghttp2.h ]; }
if ! have_nghttp2; then
  if [ "${CI:-}" = "true" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libnghttp2-dev pkg-config >/dev/null
  else
    echo "libnghttp2-dev not found: the compiled component server is not built (the grpcio one serves)"
  fi
fi
if have_nghttp2; then export KITEX_FAST_EXPECT_H2SERVER=1; else export KITEX_FAST_EXPECT_H2SERVER=0; fi

echo "== installing kitex_fast with its compiled core, and the test tools"
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .
"$py" -m pip install -q --disable-pip-version-check ".[test]"
"$py" - <<'PY'
import kitex_fast.codec as c, kitex_fast.transport as t, kitex_fast.aio.protocol as p
assert c.USING_EXTENSION and t.USING_EXTENSION and p.USING_EXTENSION, "the compiled core was not built: see the pip output above"
print("compiled core loaded:", c.implementation().__file__)
import os
from kitex_fast.dapr import h2server
why_not = h2server.unavailable()
assert not (why_not and os.environ["KITEX_FAST_EXPECT_H2SERVER"] == "1"), why_not
print("compiled component server:", why_not or "built")
PY

echo "== docs site (mkdocs build --strict)"
# The docs extra (MkDocs Material); strict fails on any warning, and mkdocs.yml's `validation`
# makes broken internal links, missing anchors and pages outside the nav warnings. External links
# are not fetched. The site is built outside the tree and removed. The docs extra's requirements
# are read from the metadata of the kitex_fast just installed (pyproject.toml stays their one
# home): `pip install ".[docs]"` would build and reinstall the package itself a second time (~1 min).
docs_requirements=$("$py" -c '
from importlib.metadata import requires
print(" ".join(r.split(";")[0].replace(" ", "") for r in requires("kitex_fast") or () if "extra == \"docs\"" in r))')
[ -n "$docs_requirements" ] || { echo "the installed kitex_fast has no docs extra" >&2; exit 1; }
# shellcheck disable=SC2086  # one word per requirement
"$py" -m pip install -q --disable-pip-version-check $docs_requirements
docs_site=$(mktemp -d)
# (no --quiet: it hides the warnings from strict's count, and the broken build passes)
if ! NO_MKDOCS_2_WARNING=1 "$venv/bin/mkdocs" build --strict -f mkdocs.yml -d "$docs_site"; then
  rm -rf "$docs_site"
  echo "the docs site does not build (mkdocs build --strict): see the warnings above" >&2
  exit 1
fi
rm -rf "$docs_site"
echo "docs site built"

echo "== type check (mypy --strict), and the compiled modules against their .pyi stubs"
"$py" -m mypy --config-file pyproject.toml
stubs="kitex_fast._codec kitex_fast._transport kitex_fast.aio._protocol"
unused_ok=--ignore-unused-allowlist  # (the allowlist's compiled-server entries, when it is not built)
if [ "$KITEX_FAST_EXPECT_H2SERVER" = 1 ]; then
  stubs="$stubs kitex_fast.dapr._h2server kitex_fast.dapr._invoke kitex_fast.dapr._protobuf"; unused_ok=
fi
"$py" -m mypy.stubtest $stubs --allowlist tests/stubtest-allowlist.txt $unused_ok

echo "== Go Kitex peers (Go module proxy)"
if command -v go >/dev/null 2>&1; then
  "$py" -c "import sys; sys.path.insert(0, 'tests/interop'); import peers; print('built', peers.build_peers())"
elif [ "${CI:-}" = "true" ]; then
  echo "Go is required in CI for the interop tests (install Go >= 1.24.1)" >&2
  exit 1
else
  echo "go not found: interop tests will be skipped (install Go >= 1.24.1 to run them)"
fi

echo "== etcd for the service-discovery tests (Debian's etcd-server; or ETCD=/path/to/etcd)"
if [ -z "${ETCD:-}" ] && ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # (etcd-server 3.4 serves the v3 JSON gateway the resolver speaks; the package's systemd
    # unit does not start in a container, and the tests run their own etcd on random ports)
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >/dev/null \
      || echo "apt-get install etcd-server failed"
  fi
fi
if [ -n "${ETCD:-}" ] || command -v etcd >/dev/null 2>&1; then
  etcd_version=$("${ETCD:-etcd}" --version)  # (not `| head -1`: SIGPIPE fails the pipeline)
  echo "${etcd_version%%$'\n'*}"
elif [ "${CI:-}" = "true" ]; then
  echo "etcd is required in CI for tests/interop/test_registry.py (apt-get install etcd-server)" >&2
  exit 1
else
  echo "etcd not found: the service-discovery tests will be skipped (apt-get install etcd-server, or ETCD=/path/to/etcd)"
fi

echo "== daprd v1.18.0 for the Dapr end-to-end tests (Go module proxy; cached in tests/dapr/.daprd)"
if command -v go >/dev/null 2>&1; then
  bash tests/dapr/build_daprd.sh
elif [ "${CI:-}" = "true" ]; then
  echo "Go is required in CI to build daprd for tests/dapr (install Go >= 1.26)" >&2
  exit 1
else
  echo "go not found: the Dapr end-to-end tests will be skipped (install Go >= 1.26 to run them)"
fi

echo "== h2spec v2.2.1 for the compiled component server's HTTP/2 conformance (Go module proxy; cached)"
if command -v go >/dev/null 2>&1; then
  [ -x tests/dapr/bin/h2spec ] || GOBIN="$root/tests/dapr/bin" go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
elif [ "${CI:-}" = "true" ]; then
  echo "Go is required in CI to build h2spec" >&2
  exit 1
fi

echo "== podman, runc, mmdebstrap for the component's image test (tests/image; Debian packages)"
have_podman() { command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1; }
if ! have_podman && [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap) >/dev/null \
    || echo "apt-get install podman runc mmdebstrap failed"
fi
if have_podman && [ "$(id -u)" = 0 ]; then
  export KITEX_FAST_EXPECT_IMAGE=1  # tests/image/test_image.py fails, not skips, if it cannot run
else
  echo "podman/runc/mmdebstrap (or root) missing: the image test will be skipped"
fi

export KITEX_FAST_EXPECT_EXTENSION=1
echo "== suite: compiled core installed; every behavioural test on c and py"
"$py" -m pytest tests -q -p no:cacheprovider "$@"

echo "== differential fuzz of the codec, compiled core vs twin (bounded: 40 s)"
# atheris ships manylinux wheels; building it from source needs clang with libFuzzer, which CI
# machines need not have, so only a wheel is taken. Without one, run.py's plain mutation engine
# runs over the same targets and seeds, and says so.
if ! "$py" -m pip install -q --disable-pip-version-check --only-binary atheris "atheris>=2.3"; then
  echo "atheris: no wheel for this Python/platform; the fuzz run falls back to plain mutation"
fi
"$py" tests/fuzz/run.py --seconds 40

echo "== suite again with KITEX_FAST_NO_EXTENSIONS=1 (the twin through the dispatchers)"
# (-rfE: the c-parametrised tests skip here by design; list only failures and errors)
KITEX_FAST_EXPECT_EXTENSION=0 KITEX_FAST_EXPECT_H2SERVER=0 KITEX_FAST_NO_EXTENSIONS=1 "$py" -m pytest tests -q -p no:cacheprovider -rfE -m "not slow" "$@"

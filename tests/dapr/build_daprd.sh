#!/usr/bin/env bash
# Build a pluggable-only daprd from the Go module proxy and cache it; print the binary's path.
#
# Why this recipe (each point measured when it was written):
# - `go install github.com/dapr/dapr/cmd/daprd@vX` is refused because dapr's go.mod has `replace`
#   directives (dapr #8872), so we build from a wrapper module that reuses dapr's own go.mod/go.sum
#   (replace lines included) with only the module line renamed.
# - A tagless official daprd panics at start (cmd/daprd/components/zz_notag.go); `stablecomponents`
#   takes ~10 min here. The tests only need pluggable components, so the wrapper's main package is
#   dapr's own cmd/daprd/app/app.go with the import that registers every built-in component removed.
#   That file is derived here from the module cache at build time; dapr's source is never checked in.
#
# The binary is cached under tests/dapr/.daprd/ (gitignored), keyed by a hash of this script, so a
# changed recipe rebuilds and an unchanged one costs nothing.
set -euo pipefail

DAPR_VERSION=v1.18.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
cache="$here/.daprd/$DAPR_VERSION-$key"
if [ -x "$cache/daprd" ]; then
  echo "$cache/daprd"
  exit 0
fi

command -v go >/dev/null || { echo "build_daprd.sh: go not found (Go >= 1.26 builds daprd $DAPR_VERSION)" >&2; exit 2; }
# Never let `go` fetch another toolchain behind our back: fail clearly if this one is too old.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/kitex-fast-daprd.XXXXXX")
trap 'rm -rf "$work"' EXIT

info=$(cd "$work" && go mod download -json "github.com/dapr/dapr@$DAPR_VERSION")
field() { printf '%s' "$info" | sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p"; }
src=$(field Dir)
sum=$(field Sum)
modsum=$(field GoModSum)
[ -f "$src/cmd/daprd/app/app.go" ] || { echo "build_daprd.sh: unexpected module layout in $src" >&2; exit 1; }

mkdir "$work/mod"
cd "$work/mod"
# dapr's own requirements and replace lines, under another module name, plus dapr itself.
sed 's|^module github.com/dapr/dapr$|module kitexfast.test/daprd|' "$src/go.mod" > go.mod
cp "$src/go.sum" go.sum
chmod u+w go.mod go.sum
printf 'github.com/dapr/dapr %s %s\ngithub.com/dapr/dapr %s/go.mod %s\n' \
  "$DAPR_VERSION" "$sum" "$DAPR_VERSION" "$modsum" >> go.sum
go mod edit -require="github.com/dapr/dapr@$DAPR_VERSION"

# main package = dapr's app.go without the built-in component registrations.
grep -q '^\s*_ "github.com/dapr/dapr/cmd/daprd/components"$' "$src/cmd/daprd/app/app.go" || {
  echo "build_daprd.sh: app.go no longer imports cmd/daprd/components as expected; revisit the recipe" >&2
  exit 1
}
sed -e 's|^package app$|package main|' \
    -e '\|^\s*_ "github.com/dapr/dapr/cmd/daprd/components"$|d' \
    "$src/cmd/daprd/app/app.go" > app.go
printf 'package main\n\nfunc main() { Run() }\n' > main.go

v=${DAPR_VERSION#v}
go build -trimpath -o daprd \
  -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$v -X github.com/dapr/dapr/pkg/buildinfo.gitversion=$DAPR_VERSION-pluggable-only" \
  .

mkdir -p "$cache"
mv daprd "$cache/daprd"
echo "built daprd $DAPR_VERSION (pluggable-only) in $(( $(date +%s) - started )) s" >&2
echo "$cache/daprd"

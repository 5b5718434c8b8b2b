#!/usr/bin/env bash
# Build daprd v1.16.0 with Dapr's own Go `bindings.kitex` (and no other built-in component), for
# bench/dapr_bench.py's "the binding we replace" row; print the binary's path.
#
# Same wrapper-module recipe as tests/dapr/build_daprd.sh (dapr's go.mod/go.sum and replace lines
# under another module name; app.go from the module cache without the import that registers every
# built-in component), plus one generated file that registers only the Kitex output binding,
# derived at build time from dapr's own cmd/daprd/components/binding*_kitex.go (build tags dropped).
# 1.16.x is the last line that shipped it (removed in 1.17, dapr #9324). Cached in
# tests/dapr/.daprd/ (gitignored) by a hash of this script. Bench-only: the tests never need it.
set -euo pipefail

DAPR_VERSION=v1.16.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
cache="$root/tests/dapr/.daprd/$DAPR_VERSION-go-kitex-$key"
if [ -x "$cache/daprd" ]; then
  echo "$cache/daprd"
  exit 0
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/kitex-fast-daprd-go.XXXXXX")
trap 'rm -rf "$work"' EXIT

info=$(cd "$work" && go mod download -json "github.com/dapr/dapr@$DAPR_VERSION")
field() { printf '%s' "$info" | sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p"; }
src=$(field Dir)
mkdir "$work/mod" && cd "$work/mod"
sed 's|^module github.com/dapr/dapr$|module kitexfast.bench/daprd|' "$src/go.mod" > go.mod
cp "$src/go.sum" go.sum
chmod u+w go.mod go.sum
printf 'github.com/dapr/dapr %s %s\ngithub.com/dapr/dapr %s/go.mod %s\n' \
  "$DAPR_VERSION" "$(field Sum)" "$DAPR_VERSION" "$(field GoModSum)" >> go.sum
go mod edit -require="github.com/dapr/dapr@$DAPR_VERSION"
# kitex v0.5.0 -> bytedance/gopkg -> choleraehyq/pid v0.0.20, whose amd64 assembly newer Go
# assemblers reject ("expected pseudo-register; found R13"); a later pid release assembles.
go mod edit -require=github.com/choleraehyq/pid@v0.0.23

sed -e 's|^package app$|package main|' \
    -e '\|^\s*_ "github.com/dapr/dapr/cmd/daprd/components"$|d' \
    "$src/cmd/daprd/app/app.go" > app.go
printf 'package main\n\nfunc main() { Run() }\n' > main.go
kitex_src=$(ls "$src"/cmd/daprd/components/binding*_kitex.go | head -1)
grep -v -e '^//go:build' -e '^// +build' "$kitex_src" | sed 's|^package components$|package main|' > kitex.go

go build -trimpath -o daprd -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v}" .
mkdir -p "$cache"
mv daprd "$cache/daprd"
echo "built daprd $DAPR_VERSION with the Go bindings.kitex in $(( $(date +%s) - started )) s" >&2
echo "$cache/daprd"

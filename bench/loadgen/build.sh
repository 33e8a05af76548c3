#!/usr/bin/env bash
# Builds bench/loadgen (main.go beside this script) to OUTPUT with Debian's
# Go toolchain and Debian's etcd client sources, fully offline: GOPATH mode
# over /usr/share/gocode, no module download. Installs golang-go and
# golang-etcd-server-dev with apt-get when they are missing.
#
#   bench/loadgen/build.sh OUTPUT
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 OUTPUT" >&2
  exit 2
fi
out=$(realpath -m "$1")
src=$(cd "$(dirname "$0")" && pwd)
gocode=/usr/share/gocode

missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -d "$gocode/src/go.etcd.io/etcd/clientv3" ] || missing+=(golang-etcd-server-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$(dirname "$out")"
# GO111MODULE=off: resolve imports from GOPATH (Debian's sources) and never
# reach a module proxy; GOFLAGS cleared so an outer -mod=... cannot interfere.
cd "$src"
GO111MODULE=off GOPATH="$gocode" GOFLAGS= GOPROXY=off go build -o "$out" .
echo "built $out"

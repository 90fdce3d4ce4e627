#!/usr/bin/env bash
# Build spanmeter's OpenTelemetry Collector distribution from
# collector/builder-config.yaml, caching it outside the repository.
#
#   bash collector/build.sh CACHE_DIR
#
# Layout under CACHE_DIR:
#   bin/builder-vX.Y.Z          the OpenTelemetry Collector Builder (ocb)
#   <sha256 of manifest>/       one finished build: otelcol-spanmeter plus the
#                               manifest, go.mod and go.sum it was built from
#   current -> <sha256>/        the build for the manifest as it is now
#
# A finished build is reused while the manifest is unchanged: the script then
# prints the binary's path and exits at once. Go's own caches (GOCACHE,
# GOMODCACHE) stay at their defaults, also outside the repository, so a
# rebuild after a small manifest change is much faster than the first one.
# Progress goes to stderr; stdout carries only the binary's path.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 CACHE_DIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/builder-config.yaml"
mkdir -p "$1"
cache="$(cd "$1" && pwd)"
name="otelcol-spanmeter"

hash="$(sha256sum "$manifest" | cut -d' ' -f1)"
dest="$cache/$hash"

publish() {
    # Relative target, so the cache directory can be moved as a whole.
    ln -sfn "$hash" "$cache/current"
    echo "$dest/$name"
}

if [[ -x "$dest/$name" ]]; then
    publish
    exit 0
fi

# The toolchain on PATH, never an automatic download of another one.
export GOTOOLCHAIN=local
# Compiling the collector is memory hungry; two parallel jobs fit small machines.
export GOMAXPROCS="${GOMAXPROCS:-2}"

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: Go is not installed; the collector cannot be built" >&2
    exit 1
fi

# Concurrent callers (make collector and make test, say) wait for one build.
exec 9>"$cache/.lock"
flock 9
if [[ -x "$dest/$name" ]]; then
    publish
    exit 0
fi

# ocb is released in lockstep with the collector core, so it takes the core
# version the manifest pins for the OTLP receiver.
builder_version="$(sed -n 's#^ *- gomod: go.opentelemetry.io/collector/receiver/otlpreceiver \(v[0-9.]*\) *$#\1#p' "$manifest")"
if [[ -z "$builder_version" ]]; then
    echo "build.sh: cannot find the otlpreceiver version in $manifest" >&2
    exit 1
fi
builder="$cache/bin/builder-$builder_version"
if [[ ! -x "$builder" ]]; then
    echo "build.sh: installing ocb $builder_version" >&2
    tmpbin="$(mktemp -d "$cache/.bin.XXXXXX")"
    GOBIN="$tmpbin" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version"
    mkdir -p "$cache/bin"
    mv "$tmpbin/builder" "$builder"
    rmdir "$tmpbin"
fi

# ocb writes sources and binary to the manifest's relative output_path
# (./dist), so run it from a staging directory that is removed afterwards.
stage="$(mktemp -d "$cache/.build-$hash.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
cp "$manifest" "$stage/builder-config.yaml"
echo "build.sh: building $name from $manifest (takes minutes the first time)" >&2
start=$SECONDS
(cd "$stage" && "$builder" --config=builder-config.yaml) >"$stage/build.log" 2>&1 || {
    cat "$stage/build.log" >&2
    echo "build.sh: ocb failed" >&2
    exit 1
}

mkdir -p "$stage/out"
cp "$stage/dist/$name" "$stage/dist/go.mod" "$stage/dist/go.sum" "$stage/builder-config.yaml" "$stage/out/"
# Publish with a rename so no reader ever sees a half-written build.
rm -rf "$dest"
mv "$stage/out" "$dest"
echo "build.sh: built in $((SECONDS - start))s" >&2
publish

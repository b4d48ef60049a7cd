#!/usr/bin/env bash
# Try ecr-mirror without AWS: starts the in-repo fake ECR (token API,
# registry and S3 on free loopback ports, seeded with testdata/sample-image
# as sample/hello:latest) and the mirror in front of it. Ctrl-C stops both;
# the cache stays, so the next run serves from it.
#
#   ./hack/demo.sh            # then use the commands it prints
#
# Environment:
#   DEMO_ADDR       the mirror's address; default 127.0.0.1:5000, or a free
#                   port when 5000 is taken (LISTEN_ADDR works too)
#   DEMO_CACHE_DIR  the cache, kept on exit (CACHE_DIR works too); default
#                   ${XDG_CACHE_HOME:-$HOME/.cache}/ecr-mirror-demo
#   DEMO_BIN_DIR    run ecr-mirror and fakeecr from this directory instead
#                   of building them
# Other mirror settings (CACHE_MAX_SIZE, LOG_LEVEL, ...) pass through.
set -euo pipefail
# Job control puts the fake and the mirror in process groups of their own:
# Ctrl-C reaches only this script, which then stops each of them with one
# SIGTERM (a second signal would end the mirror before it closes its cache).
set -m
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

default_addr=127.0.0.1:5000
addr="${DEMO_ADDR:-${LISTEN_ADDR:-}}"
cache_dir="${DEMO_CACHE_DIR:-${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ecr-mirror-demo}}"
work=$(mktemp -d)
mirror_pid=""
tail_pid=""

# human prints a byte count as 1.2M.
human() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }

# shellcheck disable=SC2317 # (run by the EXIT trap)
cleanup() {
  local pid
  # The mirror and the fake first, so that the log shows the mirror's
  # last lines; then the log's tail.
  for pid in $(jobs -p); do
    [ "$pid" = "$tail_pid" ] || kill "$pid" 2>/dev/null || true
  done
  for pid in $(jobs -p); do
    [ "$pid" = "$tail_pid" ] || wait "$pid" 2>/dev/null || true
  done
  if [ -n "$tail_pid" ]; then
    sleep 0.2
    kill "$tail_pid" 2>/dev/null || true
    wait "$tail_pid" 2>/dev/null || true
  fi
  if [ -d "$cache_dir" ]; then
    echo "Stopped. The cache stays in $cache_dir ($(du -sh "$cache_dir" 2>/dev/null | cut -f1)):" \
      "run ./hack/demo.sh again to serve from it, or rm -rf it to start afresh."
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${DEMO_BIN_DIR:-}" ]; then
  bin="$DEMO_BIN_DIR"
else
  bin="$work"
  echo "Building ecr-mirror and the fake ECR..."
  go build -o "$work/" ./cmd/ecr-mirror ./cmd/fakeecr
fi

# The fake ECR, on free ports: it prints the environment the mirror needs.
"$bin/fakeecr" -addr 127.0.0.1:0 -s3-addr 127.0.0.1:0 -layout testdata/sample-image >"$work/env" 2>"$work/fakeecr.log" &
fake_pid=$!
until grep -q '^export AWS_SECRET_ACCESS_KEY=' "$work/env" 2>/dev/null; do
  if ! kill -0 "$fake_pid" 2>/dev/null; then
    echo "the fake ECR did not start:" >&2; cat "$work/fakeecr.log" >&2; exit 1
  fi
  sleep 0.1
done
# shellcheck disable=SC1091
source "$work/env"
export CACHE_DIR="$cache_dir" CACHE_MAX_SIZE="${CACHE_MAX_SIZE:-1g}"

# start_mirror starts the mirror on $1 and waits until it listens (setting
# mirror_pid and listening) or exits (returning 1, its log in $work/mirror.log).
start_mirror() {
  : >"$work/mirror.log"
  LISTEN_ADDR="$1" "$bin/ecr-mirror" 2>>"$work/mirror.log" &
  mirror_pid=$!
  listening=""
  until [ -n "$listening" ]; do
    if ! kill -0 "$mirror_pid" 2>/dev/null; then
      wait "$mirror_pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.1
    listening=$(sed -n 's/.*msg=listening addr=\([^ ]*\) serves="registry API.*/\1/p' "$work/mirror.log" | head -n1)
  done
}

if [ -n "$addr" ]; then
  start_mirror "$addr" || { cat "$work/mirror.log" >&2; exit 1; }
elif ! start_mirror "$default_addr"; then
  if ! grep -q 'address already in use' "$work/mirror.log"; then
    cat "$work/mirror.log" >&2
    grep -q 'another process using this cache' "$work/mirror.log" &&
      echo "Another demo uses $cache_dir: give this one its own, e.g. DEMO_CACHE_DIR=$cache_dir-2 $0" >&2
    exit 1
  fi
  echo "$default_addr is taken: the mirror listens on a free port instead."
  start_mirror 127.0.0.1:0 || { cat "$work/mirror.log" >&2; exit 1; }
fi
cached=$(sed -n 's/.*msg="ecr-mirror serving".* cache_bytes=\([0-9]*\).*/\1/p' "$work/mirror.log" | head -n1)

cat <<MSG
Fake ECR: $UPSTREAM (S3 $(sed -n 's/.*S3 at \(.*\)\.$/\1/p' "$work/env"))
Mirror:   http://$listening
Cache:    $cache_dir ($(human "${cached:-0}") from earlier runs; kept on exit)
Try, from another shell:
  curl -s http://$listening/v2/sample/hello/manifests/latest
  crane pull --insecure $listening/sample/hello:latest hello.tar
  skopeo copy --src-tls-verify=false docker://$listening/sample/hello:latest oci:hello
  curl -s http://$listening/metrics | grep -E '^ecr_mirror_(downloads_total|served_bytes_total)'
Ctrl-C stops both; run it again and the image comes from the cache.
MSG
# The mirror's log, from its start.
tail -n +1 -f "$work/mirror.log" &
tail_pid=$!
wait -n || true
echo "the fake ECR or the mirror stopped:" >&2
tail -n 5 "$work/fakeecr.log" >&2
exit 1

#!/usr/bin/env bash
# Try ecr-mirror without AWS: starts the in-repo fake ECR (token API,
# registry and S3, seeded with testdata/sample-image as sample/hello:latest)
# and the mirror in front of it on 127.0.0.1:5000. Ctrl-C stops both.
#
#   ./hack/demo.sh            # then, in another shell:
#   curl -s localhost:5000/v2/sample/hello/manifests/latest
#   crane pull --insecure localhost:5000/sample/hello:latest hello.tar
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT INT TERM
go build -o "$work/" ./cmd/ecr-mirror ./cmd/fakeecr

"$work/fakeecr" >"$work/env" 2>"$work/fakeecr.log" &
for _ in $(seq 100); do
  grep -q '^export AWS_SECRET_ACCESS_KEY=' "$work/env" 2>/dev/null && break
  sleep 0.1
done
if ! grep -q '^export UPSTREAM=' "$work/env"; then
  echo "the fake ECR did not start:" >&2; cat "$work/fakeecr.log" >&2; exit 1
fi
# shellcheck disable=SC1091
source "$work/env"
export CACHE_DIR="${CACHE_DIR:-$work/cache}" LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:5000}" CACHE_MAX_SIZE="${CACHE_MAX_SIZE:-1g}"

cat <<MSG
Fake ECR at $UPSTREAM; ecr-mirror on http://$LISTEN_ADDR (cache in $CACHE_DIR).
Try, from another shell:
  curl -s http://$LISTEN_ADDR/v2/sample/hello/manifests/latest
  crane pull --insecure $LISTEN_ADDR/sample/hello:latest hello.tar
  skopeo copy --src-tls-verify=false docker://$LISTEN_ADDR/sample/hello:latest oci:hello
Ctrl-C stops both.
MSG
"$work/ecr-mirror" &
wait -n

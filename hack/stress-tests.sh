#!/usr/bin/env bash
# Runs the README's test command (go test -race -count=1 ./...) STRESS_RUNS
# times (default 5) while two CPU-bound loops compete with it for the CPUs,
# as on a busy CI machine. Prints each run's time and result, and fails if
# any run fails or takes longer than STRESS_BUDGET seconds (default 240, the
# suite's budget on the 2-core CI machine). The budget is a check on the
# suite, not on the mirror: no test asserts on how fast anything runs.
#
#   ./hack/stress-tests.sh
#   STRESS_RUNS=2 ./hack/stress-tests.sh ./cache/ ./proxy/   # some packages
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

runs=${STRESS_RUNS:-5}
budget=${STRESS_BUDGET:-240}
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
case "$runs$budget" in
*[!0-9]*) echo "STRESS_RUNS and STRESS_BUDGET must be whole numbers, got '$runs' and '$budget'" >&2; exit 2 ;;
esac

logs=$(mktemp -d)
hogs=()
cleanup() {
  for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Compile once before the clock starts, so that the first run is timed
# like the others.
go test -race -count=1 -run '^$' "${pkgs[@]}" >/dev/null

for _ in 1 2; do
  sh -c 'while :; do :; done' &
  hogs+=($!)
done
echo "stress: $runs runs of go test -race -count=1 ${pkgs[*]} beside 2 CPU-bound loops ($(nproc) CPUs), ${budget}s budget each"

failed=0
for i in $(seq 1 "$runs"); do
  log="$logs/run$i.log"
  start=$(date +%s)
  result=pass
  go test -race -count=1 "${pkgs[@]}" >"$log" 2>&1 || result=FAIL
  took=$(($(date +%s) - start))
  note=""
  if [ "$took" -gt "$budget" ]; then
    note=" (over the ${budget}s budget)"
    failed=1
  fi
  echo "run $i/$runs: $result in ${took}s$note"
  grep -E '^(ok|FAIL|---)' "$log" | sed 's/^/    /' || true
  if [ "$result" = FAIL ]; then
    failed=1
    echo "    output of the failed tests:"
    grep -E -B2 -A30 '^\s*--- FAIL|^panic:' "$log" | sed 's/^/    | /' || true
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "stress: FAILED"
  exit 1
fi
echo "stress: all $runs runs passed within ${budget}s"

#!/usr/bin/env bash
# Measures a cold pull's wall time through three replicas against one, in
# the same run, with each replica behind a NIC of its own: on loopback all
# replicas share one machine's links, so more replicas only add a peer hop.
#
# The script makes network namespaces (all named ecrmb<pid>-…): a hub
# holding a bridge, one for the services (the fake ECR, versitygw as the
# shared bucket, the clients) and one per replica, each joined to the
# bridge by a veth pair. A replica's veth sends at most RATE (tc tbf): its
# NIC. Nothing else is capped, so ECR, the bucket and the clients are not
# what is measured. It generates a random image (LAYERS layers of
# LAYER_MIB MiB, as an OCI layout) and then runs:
#
#   run 1: one replica; CLIENTS clients (skopeo copy, which checks every
#          digest) pull the cold image through it at once;
#   run 2: REPLICAS replicas, each other's PEERS, the clients spread over
#          them round-robin.
#
# Each run gets a fresh fake ECR, fresh caches and a fresh SHARED_STORE
# bucket (run 1 has one too, so that only the replica count differs). It
# prints each run's wall time and their ratio; the bytes each replica's NIC
# sent, and the time the busiest needs at RATE (a floor on the wall time);
# the blob bytes and GETs ECR's S3 served against the image's (from the
# fake's request log); and where the replicas served bytes from (their
# metrics). Root only; everything it made is removed on exit, Ctrl-C and
# failure included. Not run by CI.
#
#   sudo ./hack/bench-replicas.sh
#   sudo RATE=100mbit CLIENTS=12 ./hack/bench-replicas.sh
#
# Environment (defaults in brackets):
#   RATE [200mbit]      each replica's egress cap, in tc's units
#   CLIENTS [24]        concurrent clients in each run
#   REPLICAS [3]        replicas in run 2 (2-9)
#   LAYERS [4]          the image's layers
#   LAYER_MIB [16]      each layer's size in MiB
#   CLIENT_TIMEOUT [300] seconds a client may take before it counts as failed
#   BENCH_BIN_DIR       run ecr-mirror and fakeecr from here instead of building
#   BENCH_LOGS          keep the runs' logs (fake, replicas, versitygw, clients) here
#   VERSITYGW           versitygw's path (default: on PATH)
set -eEuo pipefail
trap 'echo "bench-replicas.sh: line $LINENO: $BASH_COMMAND failed" >&2' ERR
# Job control gives each background process a process group of its own:
# Ctrl-C reaches only this script, which then stops what it started.
set -m
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-replicas.sh must run as root: it makes network namespaces (ip netns) and caps their links (tc)" >&2
  exit 2
fi

rate=${RATE:-200mbit}
clients=${CLIENTS:-24}
replicas=${REPLICAS:-3}
layers=${LAYERS:-4}
layer_mib=${LAYER_MIB:-16}
client_timeout=${CLIENT_TIMEOUT:-300}
case "$clients$layers$layer_mib$client_timeout" in
*[!0-9]*) echo "CLIENTS, LAYERS, LAYER_MIB and CLIENT_TIMEOUT must be whole numbers, got '$clients', '$layers', '$layer_mib' and '$client_timeout'" >&2; exit 2 ;;
esac
case "$replicas" in
[2-9]) ;;
*) echo "REPLICAS must be 2-9, got '$replicas'" >&2; exit 2 ;;
esac
if [ "$clients" -lt 1 ] || [ "$layers" -lt 1 ] || [ "$layer_mib" -lt 1 ]; then
  echo "CLIENTS, LAYERS and LAYER_MIB must be at least 1" >&2; exit 2
fi
# rate_bytes is RATE in bytes per second (tc's units: bit and bps, bytes
# per second, with k, m or g for powers of 1000).
if [[ "$rate" =~ ^([1-9][0-9]*)([kmg]?)(bit|bps)$ ]]; then
  case "${BASH_REMATCH[2]}" in
  k) rate_bytes=$((BASH_REMATCH[1] * 1000)) ;;
  m) rate_bytes=$((BASH_REMATCH[1] * 1000000)) ;;
  g) rate_bytes=$((BASH_REMATCH[1] * 1000000000)) ;;
  *) rate_bytes=${BASH_REMATCH[1]} ;;
  esac
  [ "${BASH_REMATCH[3]}" = bps ] || rate_bytes=$((rate_bytes / 8))
else
  echo "RATE must be a tc rate such as 200mbit or 25mbps, got '$rate'" >&2; exit 2
fi
versitygw=${VERSITYGW:-$(command -v versitygw || true)}
for tool in ip tc skopeo curl tar sha256sum "$versitygw"; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench-replicas.sh needs ${tool:-versitygw} (not found)" >&2; exit 2
  fi
done

pfx="ecrmb$$"
hub="$pfx-hub"
svc="$pfx-svc"
net=10.231.0
svc_ip=$net.1
s3_access=bench-access
s3_secret=bench-secret-key
peer_secret="bench-peer-secret-$$-$RANDOM$RANDOM"
work=$(mktemp -d /tmp/ecr-mirror-bench.XXXXXX)
namespaces=()
pids=()         # the runs' processes
client_pids=()  # the clients of the run under way (timeout, which passes signals on)
service_pids=() # versitygw, for the script's whole life

# stop ends the processes this script started (SIGTERM, then waits).
stop() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

# shellcheck disable=SC2317 # (run by the EXIT trap)
cleanup() {
  local ns pid
  for pid in "${client_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${client_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop
  for pid in "${service_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${service_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Deleting a namespace deletes the veth ends in it, and so their pairs.
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if mountpoint -q "$work/out"; then umount "$work/out" || umount -l "$work/out"; fi
  if [ -n "${BENCH_LOGS:-}" ]; then
    mkdir -p "$BENCH_LOGS" &&
      (cd "$work" && find . -name '*.log' -exec cp --parents {} "$BENCH_LOGS/" \;) &&
      echo "logs kept in $BENCH_LOGS"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nsrun runs a command in namespace $1.
nsrun() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# replica_ip is the address of replica $1 (1-based).
replica_ip() { echo "$net.$((10 + $1))"; }

# make_network makes the hub with its bridge, the services' namespace and
# one namespace per replica, the replicas' links capped at $rate.
make_network() {
  local i ns
  ip netns add "$hub"; namespaces+=("$hub")
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  attach "$svc" "$svc_ip" "svc"
  for i in $(seq 1 "$replicas"); do
    ns="$pfx-r$i"
    attach "$ns" "$(replica_ip "$i")" "r$i"
    # The NIC: what the replica sends (to clients, peers and the bucket)
    # leaves at $rate at most. What it receives is not capped.
    nsrun "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 128kb latency 100ms
  done
}

# attach makes namespace $1 with eth0 at address $2, joined to the hub's
# bridge by a veth whose hub end is $3.
attach() {
  ip netns add "$1"; namespaces+=("$1")
  ip -n "$hub" link add name "$3" type veth peer name eth0 netns "$1"
  ip -n "$hub" link set "$3" master br0 up
  ip -n "$1" link set lo up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
}

# add_blob stores file $1 in the layout under its digest and prints
# "digest size".
add_blob() {
  local dgst size
  dgst=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$work/layout/blobs/sha256/$dgst"
  echo "sha256:$dgst $size"
}

# make_image writes a random image of $layers layers of $layer_mib MiB as
# an OCI layout in $work/layout and sets image_bytes (its blobs' bytes).
make_image() {
  local i dgst size layer_json="" diff_ids="" config
  mkdir -p "$work/layout/blobs/sha256" "$work/gen"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
  image_bytes=0
  for i in $(seq 1 "$layers"); do
    head -c "$((layer_mib << 20))" /dev/urandom >"$work/gen/data$i"
    tar -cf "$work/gen/layer$i.tar" -C "$work/gen" "data$i"
    rm "$work/gen/data$i"
    read -r dgst size < <(add_blob "$work/gen/layer$i.tar")
    image_bytes=$((image_bytes + size))
    layer_json+="${layer_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$dgst\",\"size\":$size}"
    diff_ids+="${diff_ids:+,}\"$dgst\""
  done
  printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diff_ids" >"$work/gen/config"
  read -r config size < <(add_blob "$work/gen/config")
  image_bytes=$((image_bytes + size))
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
    "$config" "$size" "$layer_json" >"$work/gen/manifest"
  read -r dgst size < <(add_blob "$work/gen/manifest")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s}]}' \
    "$dgst" "$size" >"$work/layout/index.json"
  rm -rf "$work/gen"
}

# wait_until waits until the command after $1-$3 succeeds, while process
# $2 lives and for a minute at most; otherwise it says that $1 did not
# start, shows log $3 and fails.
wait_until() {
  local what=$1 pid=$2 log=$3 tries=0
  shift 3
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null || [ $((tries += 1)) -gt 600 ]; then
      echo "$what did not start; its log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# answers is true when $2 (a URL) answers from namespace $1, whatever the
# status.
answers() { nsrun "$1" curl -s -o /dev/null -m 2 "$2"; }

# start_services starts versitygw over $work/s3 (for the script's whole
# life) in the services' namespace.
start_services() {
  mkdir -p "$work/s3"
  ip netns exec "$svc" "$versitygw" --port "$svc_ip:7070" --access "$s3_access" --secret "$s3_secret" \
    --region us-east-1 --quiet posix "$work/s3" >"$work/versitygw.log" 2>&1 &
  service_pids+=($!)
  wait_until versitygw "$!" "$work/versitygw.log" answers "$svc" "http://$svc_ip:7070/"
}

# start_fake starts a fresh fake ECR serving the layout, logging each
# request to $1/fakeecr.log. It listens before it has loaded the layout,
# and prints the mirror's environment after: that is when it is ready.
start_fake() {
  ip netns exec "$svc" "$bin/fakeecr" -addr "$svc_ip:5100" -s3-addr "$svc_ip:5101" -layout "$work/layout" \
    -repo bench/app -tag v1 -v >"$1/fakeecr.env" 2>"$1/fakeecr.log" &
  pids+=($!)
  wait_until "the fake ECR" "$!" "$1/fakeecr.log" grep -q '^export AWS_SECRET_ACCESS_KEY=' "$1/fakeecr.env"
}

# make_bucket creates bucket $1 in versitygw (a signed PUT).
make_bucket() {
  nsrun "$svc" curl -sf -X PUT -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 "aws:amz:us-east-1:s3" -u "$s3_access:$s3_secret" \
    "http://$svc_ip:7070/$1" >/dev/null ||
    { echo "could not create bucket $1 in versitygw" >&2; exit 1; }
}

# start_replicas starts $2 replicas for run directory $1 over bucket $3,
# each other's PEERS when there are several.
start_replicas() {
  local dir=$1 n=$2 bucket=$3 i ip peers=""
  for i in $(seq 1 "$n"); do peers+="${peers:+,}$(replica_ip "$i"):5001"; done
  for i in $(seq 1 "$n"); do
    ip=$(replica_ip "$i")
    mkdir -p "$dir/r$i"
    (
      export LISTEN_ADDR="$ip:5000" CACHE_DIR="$dir/r$i/cache" CACHE_MAX_SIZE=4g \
        UPSTREAM="http://$svc_ip:5100" AWS_ENDPOINT_URL_ECR="http://$svc_ip:5100" AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID="$s3_access" AWS_SECRET_ACCESS_KEY="$s3_secret" \
        SHARED_STORE="s3://$bucket/mirror" SHARED_STORE_PATH_STYLE=true AWS_ENDPOINT_URL_S3="http://$svc_ip:7070"
      if [ "$n" -gt 1 ]; then
        export PEERS="$peers" PEER_ADDR="$ip:5001" PEER_SECRET="$peer_secret"
      fi
      exec ip netns exec "$pfx-r$i" "$bin/ecr-mirror" serve
    ) >"$dir/r$i/mirror.log" 2>&1 &
    pids+=($!)
    wait_until "replica $i" "$!" "$dir/r$i/mirror.log" answers "$svc" "http://$ip:5000/readyz"
  done
}

# pull_all has $clients clients pull the image at once, client c through
# replica c mod $1 + 1, into run directory $2; it sets took (seconds) and
# fails when a client failed.
pull_all() {
  local n=$1 dir=$2 c start end failed=0
  mkdir -p "$dir/clients"
  client_pids=()
  start=$(date +%s.%N)
  for c in $(seq 0 $((clients - 1))); do
    timeout "$client_timeout" ip netns exec "$svc" skopeo --insecure-policy copy --quiet --retry-times 0 \
      --src-tls-verify=false "docker://$(replica_ip $((c % n + 1))):5000/bench/app:v1" "dir:$work/out/c$c" \
      >"$dir/clients/c$c.log" 2>&1 &
    client_pids+=($!)
  done
  for c in "${!client_pids[@]}"; do
    if ! wait "${client_pids[$c]}"; then
      echo "client $c failed:" >&2; tail -n 5 "$dir/clients/c$c.log" >&2
      failed=1
    fi
  done
  end=$(date +%s.%N)
  client_pids=()
  rm -rf "${work:?}/out/"*
  took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
  [ "$failed" -eq 0 ] || { echo "some clients failed: the run does not count" >&2; exit 1; }
}

# ecr_blob_gets prints the number and the body bytes of the fake's S3 GETs
# (ECR sends blobs from S3) in run directory $1.
ecr_blob_gets() {
  awk '/msg="fakeecr request"/ && / endpoint=s3 / && / method=GET / { n++
    for (i = 1; i <= NF; i++) if ($i ~ /^bytes=/) { sub(/^bytes=/, "", $i); s += $i } }
    END { printf "%d %d\n", n, s }' "$1/fakeecr.log"
}

# served_bytes prints "source bytes" lines: ecr_mirror_served_bytes_total
# summed over the $1 replicas.
served_bytes() {
  local i
  for i in $(seq 1 "$1"); do
    nsrun "$svc" curl -sf "http://$(replica_ip "$i"):5000/metrics"
  done | awk -F'[{}" ]+' '/^ecr_mirror_served_bytes_total\{/ { s[$3] += $NF }
    END { for (k in s) printf "%s %d\n", k, s[k] }' | sort
}

# tx_bytes prints the bytes each of the first $1 replicas' NICs sent so
# far, one line each.
tx_bytes() {
  local i
  for i in $(seq 1 "$1"); do nsrun "$pfx-r$i" cat /sys/class/net/eth0/statistics/tx_bytes; done
}

# run measures one run with $1 replicas, named $2, and fills the table's
# row for $1.
run() {
  local n=$1 name=$2 dir="$work/$2" before after gets bytes
  mkdir -p "$dir"
  make_bucket "$name"
  start_fake "$dir"
  start_replicas "$dir" "$n" "$name"
  before=$(tx_bytes "$n")
  pull_all "$n" "$dir"
  after=$(tx_bytes "$n")
  # What each NIC sent during the run (headers included), and the time
  # the busiest one needs at RATE: no run can be faster.
  sent[$n]=$(paste <(echo "$before") <(echo "$after") | awk '{ printf "%s%.0f", (NR > 1 ? " " : ""), ($2 - $1) / 1048576 }')
  bound[$n]=$(paste <(echo "$before") <(echo "$after") |
    awk -v r="$rate_bytes" '{ if ($2 - $1 > m) m = $2 - $1 } END { printf "%.1f", m / r }')
  read -r gets bytes < <(ecr_blob_gets "$dir")
  ecr_gets[$n]=$gets ecr_bytes[$n]=$bytes
  served[$n]=$(served_bytes "$n" | awk '$2 > 0 { m = $2 / 1048576; printf "%s%s %s", (n++ ? ", " : ""), $1, (m < 1 ? "<1" : sprintf("%.0f", m)) }')
  wall[$n]=$took
  printf '%s: %d replica(s), %d clients: %.2f s\n' "$name" "$n" "$clients" "$took"
  stop
}

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  bin=$BENCH_BIN_DIR
  for b in ecr-mirror fakeecr; do
    [ -x "$bin/$b" ] || { echo "BENCH_BIN_DIR $bin has no $b (go build -o $bin/ ./cmd/ecr-mirror ./cmd/fakeecr)" >&2; exit 2; }
  done
else
  bin="$work/bin"
  echo "Building ecr-mirror and the fake ECR..."
  go build -o "$bin/" ./cmd/ecr-mirror ./cmd/fakeecr
fi
make_network
make_image
# The clients' copies go to memory, deleted after each run, so that no
# disk stands between the replicas and their clients.
mkdir -p "$work/out"
mount -t tmpfs -o size=$(((clients * (layers * layer_mib + 1)) + 64))m ecrmb-out "$work/out"
start_services
echo "Image: $layers layers of $layer_mib MiB ($image_bytes blob bytes); each replica sends at most $rate; $clients clients."

declare -A ecr_gets ecr_bytes served wall sent bound
run 1 run1
run "$replicas" run2

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
printf '%-8s %8s %12s  %-16s %-16s  %s\n' replicas "wall (s)" "at RATE (s)" "NIC sent (MiB)" "ECR/image" "served to clients from (MiB)"
for n in 1 "$replicas"; do
  printf '%-8s %8.2f %12s  %-16s %-16s  %s\n' "$n" "${wall[$n]}" "${bound[$n]}" "${sent[$n]}" \
    "$(ratio "${ecr_bytes[$n]}" "$image_bytes") (${ecr_gets[$n]} GETs)" "${served[$n]}"
done
echo "wall time, 1 replica / $replicas replicas: $(ratio "${wall[1]}" "${wall[$replicas]}")"
echo "(at RATE: the busiest NIC's bytes at RATE, a floor on the wall time; ECR/image: blob bytes ECR's S3 sent"
echo " over the image's $((layers + 1)) blobs', and its blob GETs)"

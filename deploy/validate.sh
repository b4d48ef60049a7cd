#!/usr/bin/env bash
# Validates everything under deploy/, offline once the Go modules it needs are
# in the module cache (the first run fetches them from the Go module proxy):
#
#  1. Kubernetes manifests: kubeconform -strict against JSON schemas generated
#     here from the Kubernetes API's own OpenAPI v3 documents, which the
#     k8s.io/kubernetes module ships (api/openapi-spec/v3). Checked: every
#     file in deploy/kubernetes (secrets-example.yaml included) and what
#     `kustomize build deploy/kubernetes` renders, for each Kubernetes
#     version in KUBERNETES_VERSIONS. Strict: unknown fields, wrong types,
#     missing required fields and unknown kinds/apiVersions all fail.
#     The replicated overlay deploy/kubernetes-replicated: its files and
#     what `kustomize build` renders, the same way; the forward-proxy
#     component deploy/kubernetes-forward-proxy built onto each of the two.
#     The Helm chart (deploy/helm/ecr-mirror): helm lint --strict, and
#     kubeconform of `helm template` with the default values and each value
#     set in its ci/ directory; bad values (misspelt, of the wrong form, a
#     cache budget over the volume, a grace past SIGKILL, replicas without
#     a bucket or a peer secret, a replicated forward proxy without a CA
#     Secret) must be refused. ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1)
#     are CRDs no Kubernetes document holds: deploy/validate writes minimal
#     strict schemas for them (monitoring.go), which also check
#     deploy/monitoring/alerts.yaml.
#  2. Cross-object checks no schema can make (deploy/validate, `lint`), on
#     the kustomize manifests, the replicated overlay's render, the
#     forward-proxy component's renders and each chart render: labels,
#     namespaces, the kustomization's resource list, selectors and ports,
#     SHUTDOWN_GRACE vs terminationGracePeriodSeconds, CACHE_MAX_SIZE vs
#     the cache volume, TLS/htpasswd mounts and probe schemes, the
#     replicas' bucket, headless Service, peer port and secret, the
#     forward proxy's port, Service, NetworkPolicy and shared CA, read
#     from the config file (CONFIG_FILE) as the mirror reads it; and
#     `ecr-mirror config check` on each render's config file.
#     deploy/monitoring/alerts.yaml (and the chart's PrometheusRule): every
#     expr parses as PromQL (Prometheus' parser, a small build; promtool
#     itself is a large one), every alert has for:, a severity and its
#     annotations (deploy/validate, `rules`); every query of
#     deploy/monitoring/grafana-dashboard.json parses, every panel is placed
#     (`dashboard`).
#  3. deploy/aws (deploy/validate's tests): the IAM policy allows every AWS
#     call in the mirror's code (found in its source) and the registry API
#     calls, on the bucket's prefix and ECR repositories only; the bucket
#     lifecycle aborts incomplete multipart uploads and expires nothing.
#  4. systemd unit: systemd-analyze verify and security (when available).
#
# Exits non-zero on the first failing check. Usage: deploy/validate.sh
# (DEPLOY_TOOLS_ONLY=1: build the tools, check nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

KUBECONFORM_VERSION=v0.8.0 # go list -m -versions github.com/yannh/kubeconform
KUSTOMIZE_VERSION=v5.8.2   # v5.8.3 needs Go 1.27
HELM_VERSION=v4.3.2        # the first build takes minutes
# The API versions the manifests must fit: an old one still in service and the
# newest release (go list -m -versions k8s.io/kubernetes).
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-1.32.13 1.37.2}
MANIFESTS=deploy/kubernetes
# The replicated variant: an overlay of $MANIFESTS (beside it, since a
# kustomize base may not contain its overlay).
REPLICATED=deploy/kubernetes-replicated
# The forward-proxy component, built onto each of the two.
FORWARD_PROXY=deploy/kubernetes-forward-proxy
CHART=deploy/helm/ecr-mirror
UNIT=deploy/systemd/ecr-mirror.service

started=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s (at %ss)\n' "$*" "$((SECONDS - started))"; }
die() {
  echo "validate.sh: $*" >&2
  exit 1
}

# Tools, built from the module proxy once per version and kept beside the
# module cache (not in GOPATH/bin, so no other copy is replaced).
tools=${DEPLOY_TOOLS_DIR:-$(go env GOPATH)/pkg/ecr-mirror-deploy-tools}
tool() { # name package version -> path of the binary
  local dir="$tools/$1@$3"
  if [ ! -x "$dir/$1" ]; then
    echo "installing $2@$3 into $dir" >&2
    GOBIN="$dir" go install "$2@$3" >&2
  fi
  echo "$dir/$1"
}

step "tools"
kubeconform=$(tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")
kustomize=$(tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION")
helm=$(tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION")
if [ -n "${DEPLOY_TOOLS_ONLY:-}" ]; then
  # .ci/run builds the tools early, beside its other setup.
  echo "tools built in $((SECONDS - started))s"
  exit 0
fi
(cd deploy/validate && go build -o "$work/validate" . && go vet . && go test -count=1 .)
echo "kubeconform $KUBECONFORM_VERSION, kustomize $KUSTOMIZE_VERSION, helm $HELM_VERSION, deploy/validate"

step "kustomize build $MANIFESTS"
"$kustomize" build "$MANIFESTS" >"$work/rendered.yaml"
grep -E '^kind: ' "$work/rendered.yaml" | sed 's/^kind: /  /'
step "kustomize build $REPLICATED"
"$kustomize" build "$REPLICATED" >"$work/replicated.yaml"
grep -E '^kind: ' "$work/replicated.yaml" | sed 's/^kind: /  /' | sort | uniq -c
# A component builds only inside a kustomization: one in the work dir per
# base, naming both by relative paths (kustomize refuses absolute ones):
# up to / from there, then down to this checkout.
for base in "$MANIFESTS" "$REPLICATED"; do
  name=forward-proxy-$(basename "$base")
  step "kustomize build $base with the component $FORWARD_PROXY"
  mkdir "$work/$name"
  up=$(sed 's|/[^/]*|../|g' <<<"$work/$name")${PWD#/}
  printf 'resources:\n  - %s\ncomponents:\n  - %s\n' "$up/$base" "$up/$FORWARD_PROXY" \
    >"$work/$name/kustomization.yaml"
  "$kustomize" build "$work/$name" >"$work/$name.yaml"
  grep -qx '  FORWARD_PROXY_ADDR: :3128' "$work/$name.yaml" || die "$name: the component set no FORWARD_PROXY_ADDR"
done

# Helm keeps no state of ours: its cache and config go to the work dir.
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"
mkdir -p "$work/charts"
for values in default "$CHART"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  args=()
  [ "$values" = default ] || args=(-f "$values")
  step "helm lint and template $CHART ($name)"
  "$helm" lint --strict "$CHART" "${args[@]}" | grep -v '^$'
  "$helm" template ecr-mirror "$CHART" --namespace ecr-mirror "${args[@]}" >"$work/charts/$name.yaml"
  grep -E '^kind: ' "$work/charts/$name.yaml" | sed 's/^kind: /  /' | sort | uniq -c
done
# Bad values must fail `helm template`, each with its own message (the
# schema's, or the chart's own checks).
refuse() { # message helm-args...
  local want=$1 out
  shift
  if out=$("$helm" template ecr-mirror "$CHART" "$@" 2>&1); then
    die "helm template $* was accepted: values.schema.json or the chart's checks are too lax"
  fi
  grep -qF -- "$want" <<<"$out" || die "helm template $*: failed, but not with \"$want\": $out"
  echo "refused, as it must be: $*"
}
step "bad values refused by $CHART"
refuse "additional properties 'sise' not allowed" --set persistence.sise=1Gi
refuse "/config/listen_addr" --set config.listen_addr=:80
refuse "/config/cache_max_size" --set config.cache_max_size=lots
refuse "/serviceAccount/irsaRoleArn" --set serviceAccount.irsaRoleArn=role/ecr-mirror
refuse "/tls/certificate" --set tls.enabled=true
refuse "leaves under 5% of persistence.size" --set config.cache_max_size=98g
refuse "must be above config.shutdown_grace" --set config.shutdown_grace=60s
# Replicas: a bucket and a peer secret are required, the secret never in
# config, and a budget that would block every node drain is refused.
refuse "at '/sharedStore/url': minLength" --set replicas=3 --set peers.existingSecret=peers
refuse "at '/peers/existingSecret': minLength" --set replicas=3 --set sharedStore.url=s3://bucket/prefix
refuse "at '/peers/secret': minLength: got 5, want 16" --set peers.secret=short
refuse "at '/sharedStore/url': 'https://bucket' does not match" --set sharedStore.url=https://bucket
refuse "at '/sharedStore/endpoint'" --set sharedStore.endpoint=minio:9000
refuse "at '/sharedStore/url': minLength: got 0, want 1" --set sharedStore.maxSize=2t
refuse "/config/peer_secret" --set config.peer_secret=0123456789abcdef0123
refuse "/config/shared_store" --set config.shared_store=s3://bucket
refuse "at '/env/0': 'not' failed" --set 'env[0].name=PEER_SECRET' --set 'env[0].value=0123456789abcdef0123'
refuse "minAvailable 3 with 3 replicas blocks every voluntary eviction" --set replicas=3 \
  --set sharedStore.url=s3://bucket --set peers.existingSecret=peers --set podDisruptionBudget.minAvailable=3
# Forward proxy: every replica must present the same CA (a Secret), the
# other hosts are denied or tunnelled, and the chart owns its settings.
refuse "forwardProxy.ca.existingSecret (or forwardProxy.ca.create) is required" --set replicas=2 \
  --set sharedStore.url=s3://bucket --set peers.existingSecret=peers --set forwardProxy.enabled=true
refuse "at '/forwardProxy/others'" --set forwardProxy.enabled=true --set forwardProxy.others=allow
refuse "/config/forward_proxy_addr" --set config.forward_proxy_addr=:3128
refuse "at '/forwardProxy/registries/0'" --set forwardProxy.enabled=true --set 'forwardProxy.registries[0]=https://docker.io'

for version in $KUBERNETES_VERSIONS; do
  step "Kubernetes $version: schemas"
  # The module is only read for its OpenAPI documents, never built.
  if ! (cd "$work" && go mod download -json "k8s.io/kubernetes@v$version" >"$work/module.json"); then
    cat "$work/module.json" >&2
    die "cannot download k8s.io/kubernetes@v$version"
  fi
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$work/module.json")
  [ -d "$dir/api/openapi-spec/v3" ] || die "k8s.io/kubernetes@v$version has no api/openapi-spec/v3"
  "$work/validate" schemas -spec "$dir/api/openapi-spec/v3" \
    -out "$work/schemas/v$version-standalone-strict"

  # Local schemas only: kubeconform's default location is on the network.
  # A kind or apiVersion without a schema is an error, not a skip.
  kc=("$kubeconform" -strict -summary -n 1 -kubernetes-version "$version"
    -schema-location "$work/schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json")
  # Canary: a misspelt field must be refused, or the schemas are not strict.
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: canary\ndta: {}\n' >"$work/canary.yaml"
  if "${kc[@]}" "$work/canary.yaml" >/dev/null 2>&1; then
    die "kubeconform accepted a ConfigMap with an unknown field: the schemas are not strict"
  fi
  echo "canary with an unknown field: refused, as it must be"
  printf 'apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: canary\nspec:\n  groups:\n    - name: g\n      rules:\n        - alert: A\n          expr: up == 0\n          fore: 5m\n' >"$work/canary-rule.yaml"
  if "${kc[@]}" "$work/canary-rule.yaml" >/dev/null 2>&1; then
    die "kubeconform accepted a PrometheusRule with an unknown field: its schema is not strict"
  fi
  echo "canary PrometheusRule with an unknown field: refused, as it must be"
  step "Kubernetes $version: every file in $MANIFESTS"
  "${kc[@]}" -verbose -skip Kustomization "$MANIFESTS" "$REPLICATED"
  step "Kubernetes $version: kustomize build output"
  "${kc[@]}" "$work/rendered.yaml" "$work/replicated.yaml" "$work"/forward-proxy-*.yaml
  step "Kubernetes $version: $CHART renders and deploy/monitoring/alerts.yaml"
  "${kc[@]}" -verbose "$work/charts" deploy/monitoring/alerts.yaml
done

step "the chart's config files, as the mirror reads them (ecr-mirror config check)"
go build -o "$work/ecr-mirror" ./cmd/ecr-mirror
if "$work/ecr-mirror" config check --help >/dev/null 2>&1; then
  for rendered in "$work"/charts/*.yaml; do
    # The config.yaml key of the chart's ConfigMap, unindented.
    awk '/^  config.yaml: \|$/ {on = 1; next} on && !/^    / {on = 0} on' "$rendered" |
      sed 's/^    //' >"$work/config.yaml"
    [ -s "$work/config.yaml" ] || die "$rendered: no config.yaml in the ConfigMap"
    # Only the file counts: no variable of this shell may fill a gap.
    if ! out=$(env -i "$work/ecr-mirror" config check "$work/config.yaml" 2>&1); then
      echo "$out" >&2
      die "$(basename "$rendered"): the chart's config.yaml is refused"
    fi
    echo "$(basename "$rendered"): config.yaml accepted"
  done
else
  echo "this ecr-mirror has no 'config check' yet: skipped"
fi

step "alerting rules and dashboard: PromQL, for, severity, annotations, panels"
"$work/validate" rules deploy/monitoring/alerts.yaml "$work/charts/monitoring-values.yaml"
"$work/validate" dashboard deploy/monitoring/grafana-dashboard.json

step "cross-object checks"
"$work/validate" lint -dir "$MANIFESTS"
"$work/validate" lint -rendered "$work/replicated.yaml"
for rendered in "$work"/forward-proxy-*.yaml; do
  "$work/validate" lint -rendered "$rendered"
done
for rendered in "$work"/charts/*.yaml; do
  "$work/validate" lint -rendered "$rendered"
done

step "settings named in the examples are the mirror's (README.md, Settings)"
# Each VARIABLE set or shown commented out in the ConfigMap and the env file,
# and each key of the chart's config file, must be a row of README.md's
# settings table (AWS_* belong to the AWS SDK).
names=$({
  sed -n 's/^#\{0,1\}\([A-Z][A-Z0-9_]*\)=.*/\1/p' deploy/systemd/ecr-mirror.env.example
  sed -n 's/^  #\{0,1\} \{0,1\}\([A-Z][A-Z0-9_]*\): .*/\1/p' "$MANIFESTS/configmap.yaml"
  sed -n 's/^ *\(FORWARD_PROXY_[A-Z0-9_]*\): .*/\1/p' "$FORWARD_PROXY/kustomization.yaml"
  # The chart's config keys (lower case) in its renders and in values.yaml,
  # commented-out examples included.
  for rendered in "$work"/charts/*.yaml; do
    awk '/^  config.yaml: \|$/ {on = 1; next} on && !/^    / {on = 0} on' "$rendered" |
      sed -n 's/^    \([a-z][a-z0-9_]*\):.*/\1/p'
  done | tr a-z A-Z
  awk '/^config:/ {on = 1; next} on && /^[^ #]/ {on = 0} on' "$CHART/values.yaml" |
    sed -n 's/^  \(# \)\{0,1\}\([a-z][a-z0-9_]*\):.*/\2/p' | tr a-z A-Z
} | grep -v '^AWS_' | sort -u)
[ -n "$names" ] || die "found no settings in the examples"
for name in $names; do
  grep -qE '^\| ([^|]*, )?`'"$name"'`' README.md || die "$name is not a setting in README.md"
done
echo "$(wc -w <<<"$names") settings, all in README.md: $(tr '\n' ' ' <<<"$names")"

step "systemd unit $UNIT"
if command -v systemd-analyze >/dev/null; then
  # verify insists that ExecStart's binary exists: check a copy that runs a
  # stub instead of /usr/local/bin/ecr-mirror, which is not installed here.
  grep -qx 'ExecStart=/usr/local/bin/ecr-mirror' "$UNIT" ||
    die "$UNIT: ExecStart is not /usr/local/bin/ecr-mirror"
  mkdir "$work/systemd"
  printf '#!/bin/sh\nexit 0\n' >"$work/systemd/ecr-mirror"
  chmod +x "$work/systemd/ecr-mirror"
  sed "s|^ExecStart=/usr/local/bin/ecr-mirror\$|ExecStart=$work/systemd/ecr-mirror|" \
    "$UNIT" >"$work/systemd/ecr-mirror.service"
  # verify reports unknown keys and bad values as warnings with exit 0:
  # any line about this unit fails the check (lines about the host's own
  # units are not this repository's business).
  if ! out=$(systemd-analyze verify "$work/systemd/ecr-mirror.service" 2>&1); then
    echo "$out"
    die "systemd-analyze verify failed"
  fi
  if grep -F 'ecr-mirror' <<<"$out"; then
    die "systemd-analyze verify: $UNIT has problems (above)"
  fi
  echo "systemd-analyze verify: no problems"
  if systemd-analyze --help 2>/dev/null | grep -q -- '--offline'; then
    if ! out=$(systemd-analyze security --offline=true --threshold=25 --no-pager \
      "$work/systemd/ecr-mirror.service" 2>&1); then
      echo "$out"
      die "systemd-analyze security: exposure above 2.5"
    fi
    grep -F 'Overall exposure level' <<<"$out" | sed 's/^→ //'
  fi
else
  echo "systemd-analyze not found: skipping the unit check"
fi

printf '\ndeploy/validate.sh: all checks passed in %ss\n' "$((SECONDS - started))"

{{/* The chart's name, at most 63 characters. */}}
{{- define "ecr-mirror.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: the release's, with the chart's name unless the
release's already holds it. */}}
{{- define "ecr-mirror.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ecr-mirror.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ecr-mirror.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "ecr-mirror.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecr-mirror.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ecr-mirror.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ecr-mirror.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: an existing ServiceAccount, since serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ecr-mirror.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "ecr-mirror.tlsSecret" -}}
{{- default (printf "%s-tls" (include "ecr-mirror.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{- define "ecr-mirror.htpasswdSecret" -}}
{{- default (printf "%s-htpasswd" (include "ecr-mirror.fullname" .)) .Values.htpasswd.existingSecret }}
{{- end }}

{{/* "true" when the replicas ask each other (peers): more than one, and
peers.enabled. */}}
{{- define "ecr-mirror.peers" -}}
{{- if and (gt (int .Values.replicas) 1) .Values.peers.enabled }}true{{ end }}
{{- end }}

{{/* The headless Service the replicas find each other by (PEERS): the
full name cut to leave room for -peers within a DNS label's 63
characters. */}}
{{- define "ecr-mirror.peersService" -}}
{{- printf "%s-peers" (include "ecr-mirror.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "ecr-mirror.peersSecret" -}}
{{- default (printf "%s-peers" (include "ecr-mirror.fullname" .)) .Values.peers.existingSecret }}
{{- end }}

{{/* The Secret of the forward proxy's CA: the existing one, or the one the
chart creates; "" when each pod generates its own. */}}
{{- define "ecr-mirror.forwardProxyCASecret" -}}
{{- if .Values.forwardProxy.enabled }}
{{- if .Values.forwardProxy.ca.existingSecret }}{{ .Values.forwardProxy.ca.existingSecret }}
{{- else if .Values.forwardProxy.ca.create }}{{ printf "%s-forward-proxy-ca" (include "ecr-mirror.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the chart mounts what it configures. */}}
{{- define "ecr-mirror.cacheDir" -}}/var/lib/ecr-mirror{{- end }}
{{- define "ecr-mirror.configDir" -}}/etc/ecr-mirror/config{{- end }}
{{- define "ecr-mirror.tlsDir" -}}/etc/ecr-mirror/tls{{- end }}
{{- define "ecr-mirror.authDir" -}}/etc/ecr-mirror/auth{{- end }}
{{- define "ecr-mirror.forwardProxyCADir" -}}/etc/ecr-mirror/forward-proxy-ca{{- end }}

{{/* config.yaml: .Values.config with the settings the chart owns. */}}
{{- define "ecr-mirror.configFile" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "listen_addr" (printf ":%d" (int .Values.registryPort)) }}
{{- $_ = set $cfg "cache_dir" (include "ecr-mirror.cacheDir" .) }}
{{- if .Values.metrics.port }}
{{- $_ = set $cfg "metrics_addr" (printf ":%d" (int .Values.metrics.port)) }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ = set $cfg "tls_certificate" (printf "%s/tls.crt" (include "ecr-mirror.tlsDir" .)) }}
{{- $_ = set $cfg "tls_private_key" (printf "%s/tls.key" (include "ecr-mirror.tlsDir" .)) }}
{{- end }}
{{- with .Values.sharedStore.url }}
{{- $_ = set $cfg "shared_store" . }}
{{- if $.Values.sharedStore.pathStyle }}
{{- $_ = set $cfg "shared_store_path_style" true }}
{{- end }}
{{- with $.Values.sharedStore.region }}
{{- $_ = set $cfg "shared_store_region" . }}
{{- end }}
{{- end }}
{{- if .Values.forwardProxy.enabled }}
{{- $_ = set $cfg "forward_proxy_addr" (printf ":%d" (int .Values.forwardProxy.port)) }}
{{- $_ = set $cfg "forward_proxy_others" .Values.forwardProxy.others }}
{{- with .Values.forwardProxy.registries }}
{{- $_ = set $cfg "forward_proxy_registries" . }}
{{- end }}
{{- if include "ecr-mirror.forwardProxyCASecret" . }}
{{- $_ = set $cfg "forward_proxy_ca_dir" (include "ecr-mirror.forwardProxyCADir" .) }}
{{- end }}
{{- end }}
{{- if .Values.htpasswd.enabled }}
{{- $_ = set $cfg "htpasswd_file" (printf "%s/htpasswd" (include "ecr-mirror.authDir" .)) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* seconds of a Go duration written as whole seconds, minutes or hours
(30s, 2m, 1h); -1 for anything else. */}}
{{- define "ecr-mirror.seconds" -}}
{{- $d := toString . }}
{{- if regexMatch "^[0-9]+s$" $d }}{{ trimSuffix "s" $d }}
{{- else if regexMatch "^[0-9]+m$" $d }}{{ mul (trimSuffix "m" $d | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $d }}{{ mul (trimSuffix "h" $d | atoi) 3600 }}
{{- else }}-1{{ end }}
{{- end }}

{{/* The probes' port and scheme: METRICS_ADDR's port over HTTP when set,
else the registry port, over HTTPS when TLS is on. */}}
{{- define "ecr-mirror.probe" -}}
httpGet:
  path: {{ .path }}
  {{- if .root.Values.metrics.port }}
  port: metrics
  scheme: HTTP
  {{- else }}
  port: registry
  scheme: {{ ternary "HTTPS" "HTTP" .root.Values.tls.enabled }}
  {{- end }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/* bytes of a size: .size written as CACHE_MAX_SIZE (k/m/g/t, KiB..TiB:
powers of 1024) or, with .quantity, as a Kubernetes quantity (Ki..Pi
binary, k..P decimal); -1 when it is neither. */}}
{{- define "ecr-mirror.bytes" -}}
{{- $s := toString .size }}
{{- $units := dict "" 1.0 "k" 1024.0 "m" 1048576.0 "g" 1073741824.0 "t" 1099511627776.0 "KiB" 1024.0 "MiB" 1048576.0 "GiB" 1073741824.0 "TiB" 1099511627776.0 }}
{{- if .quantity }}
{{- $units = dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 }}
{{- end }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $s }}
{{- $unit := trimPrefix $num $s }}
{{- if and $num (hasKey $units $unit) }}{{ mulf (float64 $num) (get $units $unit) }}{{ else }}-1{{ end }}
{{- end }}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// renderedChart is a small chart render: what `helm template` gives with
// TLS on and the probes on the metrics port.
const renderedChart = `
apiVersion: v1
kind: ConfigMap
metadata:
  name: m
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
data:
  config.yaml: |
    upstream: [https://1.dkr.ecr.eu-west-1.amazonaws.com]
    cache_max_size: 90g
    listen_addr: :5000
    metrics_addr: :9090
    shutdown_grace: 30s
    tls_certificate: /etc/ecr-mirror/tls/tls.crt
    tls_private_key: /etc/ecr-mirror/tls/tls.key
---
apiVersion: v1
kind: Service
metadata:
  name: m
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
spec:
  selector: {app.kubernetes.io/name: ecr-mirror}
  ports:
    - {name: registry, port: 5000, targetPort: registry}
    - {name: metrics, port: 9090, targetPort: metrics}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: m
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: ecr-mirror}
  template:
    metadata:
      labels: {app.kubernetes.io/name: ecr-mirror}
    spec:
      terminationGracePeriodSeconds: 45
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: ecr-mirror
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          env:
            - {name: CONFIG_FILE, value: /etc/ecr-mirror/config/config.yaml}
          ports:
            - {name: registry, containerPort: 5000}
            - {name: metrics, containerPort: 9090}
          startupProbe: {httpGet: {path: /healthz, port: metrics, scheme: HTTP}}
          readinessProbe: {httpGet: {path: /readyz, port: metrics, scheme: HTTP}}
          livenessProbe: {httpGet: {path: /healthz, port: metrics, scheme: HTTP}}
          lifecycle: {preStop: {sleep: {seconds: 5}}}
          volumeMounts:
            - {name: cache, mountPath: /var/lib/ecr-mirror}
            - {name: config, mountPath: /etc/ecr-mirror/config}
            - {name: tls, mountPath: /etc/ecr-mirror/tls}
      volumes:
        - {name: config, configMap: {name: m}}
        - {name: tls, secret: {secretName: existing-tls}}
  volumeClaimTemplates:
    - metadata:
        name: cache
        labels: {app.kubernetes.io/name: ecr-mirror}
      spec:
        resources: {requests: {storage: 100Gi}}
`

// The lint reads a chart's settings from its config file and finds what
// disagrees with them.
func TestLintRendered(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		old, new string // a change to renderedChart
		want     string // in a problem; "" for none
	}{
		{name: "as rendered"},
		{name: "cache budget over 95% of the volume", old: "cache_max_size: 90g", new: "cache_max_size: 98g", want: "leaves under 5%"},
		{name: "env overrides the file", old: "- {name: CONFIG_FILE", new: "- {name: CACHE_MAX_SIZE, value: 99g}\n            - {name: CONFIG_FILE", want: "CACHE_MAX_SIZE 99g"},
		{name: "grace past SIGKILL", old: "shutdown_grace: 30s", new: "shutdown_grace: 40s", want: "terminationGracePeriodSeconds 45"},
		{name: "HTTPS probe on the metrics port", old: "readinessProbe: {httpGet: {path: /readyz, port: metrics, scheme: HTTP}}", new: "readinessProbe: {httpGet: {path: /readyz, port: metrics, scheme: HTTPS}}", want: "readinessProbe scheme is HTTPS, want HTTP"},
		{name: "HTTP probe on the TLS registry port", old: "livenessProbe: {httpGet: {path: /healthz, port: metrics, scheme: HTTP}}", new: "livenessProbe: {httpGet: {path: /healthz, port: registry, scheme: HTTP}}", want: "livenessProbe scheme is HTTP, want HTTPS"},
		{name: "metrics port without METRICS_ADDR", old: "    metrics_addr: :9090\n", new: "", want: "METRICS_ADDR is not set"},
		{name: "listen address off the container port", old: "listen_addr: :5000", new: "listen_addr: :5001", want: "LISTEN_ADDR=:5001"},
		{name: "config file not mounted", old: "value: /etc/ecr-mirror/config/config.yaml", new: "value: /etc/elsewhere/config.yaml", want: "CONFIG_FILE=/etc/elsewhere/config.yaml is on no volume mount"},
		{name: "config file key missing", old: "value: /etc/ecr-mirror/config/config.yaml", new: "value: /etc/ecr-mirror/config/mirror.yaml", want: "no key mirror.yaml"},
		{name: "TLS key off the Secret volume", old: "tls_private_key: /etc/ecr-mirror/tls/tls.key", new: "tls_private_key: /etc/ecr-mirror/config/tls.key", want: "not a Secret volume"},
		{name: "writable root filesystem", old: "readOnlyRootFilesystem: true", new: "readOnlyRootFilesystem: false", want: "readOnlyRootFilesystem: true"},
		{name: "capabilities kept", old: "capabilities: {drop: [ALL]}", new: "capabilities: {drop: [NET_RAW]}", want: "drop: [ALL]"},
		{name: "no seccomp profile", old: "seccompProfile: {type: RuntimeDefault}", new: "runAsGroup: 65532", want: "seccompProfile RuntimeDefault"},
		{name: "two namespaces", old: "  name: m\n  namespace: ns\n  labels: {app.kubernetes.io/name: ecr-mirror}\nspec:\n  selector: {app", new: "  name: m\n  namespace: other\n  labels: {app.kubernetes.io/name: ecr-mirror}\nspec:\n  selector: {app", want: `namespace is "other", want "ns"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := renderedChart
			if tt.old != "" {
				if !strings.Contains(doc, tt.old) {
					t.Fatalf("the render has no %q to change", tt.old)
				}
				doc = strings.Replace(doc, tt.old, tt.new, 1)
			}
			got := lintRendered(t, doc)
			switch {
			case tt.want == "" && got != "":
				t.Fatalf("problems in a good render:\n%s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Fatalf("problems:\n%s\nwant one with %q", got, tt.want)
			}
		})
	}
}

// The rules command refuses alerts that could not work or page blindly.
func TestRules(t *testing.T) {
	t.Parallel()
	const good = `
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: r}
spec:
  groups:
    - name: g
      rules:
        - alert: Down
          expr: ecr_mirror_upstream_reachable == 0
          for: 5m
          labels: {severity: critical}
          annotations:
            summary: "{{ $labels.instance }} is down"
            description: "for {{ $value | humanizeDuration }}"
`
	tests := []struct {
		name, old, new, want string
	}{
		{name: "good"},
		{name: "bad PromQL", old: "== 0", new: "=== 0", want: "expr: "},
		{name: "no for", old: "          for: 5m\n", new: "", want: "no for:"},
		{name: "unknown severity", old: "severity: critical", new: "severity: page", want: `severity label "page"`},
		{name: "no description", old: `            description: "for {{ $value | humanizeDuration }}"` + "\n", new: "", want: "no description annotation"},
		{name: "broken template", old: "{{ $labels.instance }}", new: "{{ $labels.instance }", want: "summary annotation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := strings.Replace(good, tt.old, tt.new, 1)
			if tt.old != "" && doc == good {
				t.Fatalf("the rule has no %q to change", tt.old)
			}
			objs, err := readObjectsFrom(t, doc)
			if err != nil {
				t.Fatal(err)
			}
			l := &linter{}
			if n := l.ruleGroups("r.yaml", objs[0]); n != 1 {
				t.Errorf("%d alerts, want 1", n)
			}
			got := strings.Join(l.problems, "\n")
			switch {
			case tt.want == "" && got != "":
				t.Fatalf("problems in a good rule:\n%s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Fatalf("problems:\n%s\nwant one with %q", got, tt.want)
			}
		})
	}
}

// readObjectsFrom reads the objects of doc through a file, as the
// commands do.
func readObjectsFrom(t *testing.T, doc string) ([]map[string]any, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return readObjects(file)
}

// The dashboard command finds queries that do not parse and panels off
// the grid or the data source variable.
func TestDashboard(t *testing.T) {
	t.Parallel()
	good := func() dashboard {
		var d dashboard
		d.UID = "u"
		d.Panels = make([]panel, 1)
		p := &d.Panels[0]
		p.Title = "hits"
		p.GridPos.W, p.GridPos.H = 12, 8
		p.Targets = make([]target, 1)
		p.Targets[0].Expr = `sum(rate(ecr_mirror_cache_requests_total{job=~"$job"}[$__rate_interval]))`
		p.Targets[0].Datasource.UID = "${datasource}"
		return d
	}
	tests := []struct {
		name   string
		change func(*dashboard)
		want   string
	}{
		{name: "good", change: func(*dashboard) {}},
		{name: "bad PromQL", change: func(d *dashboard) { d.Panels[0].Targets[0].Expr = "sum(rate(x[5m])" }, want: "query 1:"},
		{name: "off the grid", change: func(d *dashboard) { d.Panels[0].GridPos.X = 20 }, want: "off the 24-column grid"},
		{name: "fixed data source", change: func(d *dashboard) { d.Panels[0].Targets[0].Datasource.UID = "prom-1" }, want: `data source "prom-1"`},
		{name: "no uid", change: func(d *dashboard) { d.UID = "" }, want: "no uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := good()
			tt.change(&d)
			l := &linter{}
			l.dashboard("d.json", d)
			got := strings.Join(l.problems, "\n")
			switch {
			case tt.want == "" && got != "":
				t.Fatalf("problems in a good dashboard:\n%s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Fatalf("problems:\n%s\nwant one with %q", got, tt.want)
			}
		})
	}
}

// lintRendered lints doc as a chart render and returns its problems, one
// a line.
func lintRendered(t *testing.T, doc string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "render.yaml")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, _, err := lintInput("", file)
	if err != nil {
		t.Fatal(err)
	}
	l := &linter{}
	l.labelsAndNamespaces(objs, false)
	l.workload(objs, false)
	return strings.Join(l.problems, "\n")
}

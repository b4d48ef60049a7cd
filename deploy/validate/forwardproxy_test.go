package main

import (
	"strings"
	"testing"
)

// edit is one change to a render: old replaced by new, once.
type edit struct{ old, new string }

// applyEdits makes each edit to doc, failing the test when one has
// nothing to change.
func applyEdits(t *testing.T, doc string, edits ...edit) string {
	t.Helper()
	for _, e := range edits {
		if !strings.Contains(doc, e.old) {
			t.Fatalf("the render has no %q to change", e.old)
		}
		doc = strings.Replace(doc, e.old, e.new, 1)
	}
	return doc
}

// forwardProxyChart is replicatedChart with the forward proxy on port
// 3128: the container port, a Service port, a NetworkPolicy rule, and
// the CA from a Secret (cert-manager's keys) mounted read-only as
// FORWARD_PROXY_CA_DIR.
func forwardProxyChart(t *testing.T) string {
	t.Helper()
	doc := applyEdits(t, replicatedChart(t),
		edit{"    shutdown_grace: 30s\n", "    shutdown_grace: 30s\n    forward_proxy_addr: :3128\n    forward_proxy_ca_dir: /etc/ecr-mirror/forward-proxy-ca\n"},
		edit{"            - {name: peer, containerPort: 5001}\n", "            - {name: peer, containerPort: 5001}\n            - {name: forward-proxy, containerPort: 3128}\n"},
		edit{"    - {name: metrics, port: 9090, targetPort: metrics}\n", "    - {name: metrics, port: 9090, targetPort: metrics}\n    - {name: forward-proxy, port: 3128, targetPort: forward-proxy}\n"},
		edit{"            - {name: tls, mountPath: /etc/ecr-mirror/tls}\n", "            - {name: tls, mountPath: /etc/ecr-mirror/tls}\n            - {name: forward-proxy-ca, mountPath: /etc/ecr-mirror/forward-proxy-ca, readOnly: true}\n"},
		edit{"        - {name: tls, secret: {secretName: existing-tls}}\n", "        - {name: tls, secret: {secretName: existing-tls}}\n" +
			"        - {name: forward-proxy-ca, secret: {secretName: m-ca, items: [{key: tls.crt, path: ca.crt}, {key: tls.key, path: ca.key}]}}\n"},
		edit{"    - ports: [{port: registry}]\n", "    - ports: [{port: registry}]\n    - ports: [{port: forward-proxy}]\n"},
	)
	return doc + `---
apiVersion: v1
kind: Secret
metadata:
  name: m-ca
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
data:
  tls.crt: Tk9UIEEgQ0VSVElGSUNBVEU=
  tls.key: Tk9UIEEgS0VZ
`
}

// The lint finds a forward proxy nodes could not reach, replicas that
// would each present a CA of their own, and a proxy port nothing
// listens on.
func TestLintForwardProxy(t *testing.T) {
	t.Parallel()
	noCADir := edit{"    forward_proxy_ca_dir: /etc/ecr-mirror/forward-proxy-ca\n", ""}
	tests := []struct {
		name  string
		edits []edit // changes to forwardProxyChart
		want  string // in a problem; "" for none
	}{
		{name: "as rendered"},
		{name: "one replica generates its own CA", edits: []edit{{"  replicas: 3\n", "  replicas: 1\n"}, noCADir}},
		{name: "Secret keys ca.crt and ca.key without items", edits: []edit{
			{", items: [{key: tls.crt, path: ca.crt}, {key: tls.key, path: ca.key}]", ""},
			{"  tls.crt: Tk9U", "  ca.crt: Tk9U"}, {"  tls.key: Tk9U", "  ca.key: Tk9U"}}},
		{name: "policy rule by port number", edits: []edit{{"    - ports: [{port: forward-proxy}]\n", "    - ports: [{port: 3128}]\n      from: [{ipBlock: {cidr: 10.0.0.0/8}}]\n"}}},
		{name: "Service targets the port number", edits: []edit{{"port: 3128, targetPort: forward-proxy}", "port: 3128, targetPort: 3128}"}}},
		{name: "no container port", edits: []edit{{"            - {name: forward-proxy, containerPort: 3128}\n", ""}}, want: `FORWARD_PROXY_ADDR=:3128 but there is no container port "forward-proxy"`},
		{name: "address off the container port", edits: []edit{{"forward_proxy_addr: :3128", "forward_proxy_addr: :3129"}}, want: `FORWARD_PROXY_ADDR=:3129 but container port "forward-proxy" is 3128`},
		{name: "no Service routes it", edits: []edit{{"    - {name: forward-proxy, port: 3128, targetPort: forward-proxy}\n", ""}}, want: "no Service routes a port to container port"},
		{name: "only the headless Service routes it", edits: []edit{
			{"    - {name: forward-proxy, port: 3128, targetPort: forward-proxy}\n", ""},
			{"    - {name: peer, port: 5001, targetPort: peer}\n", "    - {name: peer, port: 5001, targetPort: peer}\n    - {name: forward-proxy, port: 3128, targetPort: forward-proxy}\n"}},
			want: "no Service routes a port to container port"},
		{name: "NetworkPolicy closes it", edits: []edit{{"    - ports: [{port: forward-proxy}]\n", ""}}, want: "no ingress rule admits the forward proxy's port"},
		{name: "replicas without a shared CA", edits: []edit{noCADir}, want: "3 replicas with the forward proxy but no FORWARD_PROXY_CA_DIR"},
		{name: "CA dir on no mount", edits: []edit{{"forward_proxy_ca_dir: /etc/ecr-mirror/forward-proxy-ca", "forward_proxy_ca_dir: /etc/ecr-mirror/ca"}}, want: "FORWARD_PROXY_CA_DIR=/etc/ecr-mirror/ca is not a volume mount of its own"},
		{name: "CA dir not a Secret", edits: []edit{{"{name: forward-proxy-ca, secret: {secretName: m-ca, items: [{key: tls.crt, path: ca.crt}, {key: tls.key, path: ca.key}]}}", "{name: forward-proxy-ca, emptyDir: {}}"}}, want: "not a Secret volume"},
		{name: "CA mounted writable", edits: []edit{{"mountPath: /etc/ecr-mirror/forward-proxy-ca, readOnly: true", "mountPath: /etc/ecr-mirror/forward-proxy-ca"}}, want: "is mounted writable"},
		{name: "no key file", edits: []edit{{", {key: tls.key, path: ca.key}", ""}}, want: "has no file ca.key"},
		{name: "Secret lacks the key", edits: []edit{{"  tls.key: Tk9U", "  key.pem: Tk9U"}}, want: `no key "tls.key", which the forward proxy reads as ca.key`},
		{name: "proxy port without the setting", edits: []edit{{"    forward_proxy_addr: :3128\n", ""}}, want: `container port "forward-proxy" but FORWARD_PROXY_ADDR is not set`},
		{name: "Service port without the setting", edits: []edit{{"    forward_proxy_addr: :3128\n", ""}, {"            - {name: forward-proxy, containerPort: 3128}\n", ""}}, want: `exposes port "forward-proxy" but FORWARD_PROXY_ADDR is not set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := lintRendered(t, applyEdits(t, forwardProxyChart(t), tt.edits...))
			switch {
			case tt.want == "" && got != "":
				t.Fatalf("problems in a good render:\n%s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Fatalf("problems:\n%s\nwant one with %q", got, tt.want)
			}
		})
	}
}

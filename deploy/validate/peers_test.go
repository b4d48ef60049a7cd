package main

import (
	"strings"
	"testing"
)

// replicatedChart is renderedChart with three replicas: a bucket, the
// headless Service PEERS names, the peer port, the secret from a Secret,
// a PodDisruptionBudget and a NetworkPolicy.
func replicatedChart(t *testing.T) string {
	t.Helper()
	doc := renderedChart
	for _, c := range []struct{ old, new string }{
		{"    shutdown_grace: 30s\n", "    shutdown_grace: 30s\n    shared_store: s3://bucket/prefix\n"},
		{"spec:\n  selector:\n    matchLabels", "spec:\n  replicas: 3\n  selector:\n    matchLabels"},
		{"            - {name: CONFIG_FILE, value: /etc/ecr-mirror/config/config.yaml}\n",
			"            - {name: CONFIG_FILE, value: /etc/ecr-mirror/config/config.yaml}\n" +
				"            - {name: PEERS, value: \"dns:m-peers.ns.svc.cluster.local:5001\"}\n" +
				"            - {name: PEER_ADDR, value: \":5001\"}\n" +
				"            - {name: PEER_SECRET, valueFrom: {secretKeyRef: {name: m-peers, key: peer-secret}}}\n"},
		{"            - {name: metrics, containerPort: 9090}\n", "            - {name: metrics, containerPort: 9090}\n            - {name: peer, containerPort: 5001}\n"},
	} {
		if !strings.Contains(doc, c.old) {
			t.Fatalf("the render has no %q to change", c.old)
		}
		doc = strings.Replace(doc, c.old, c.new, 1)
	}
	return doc + `---
apiVersion: v1
kind: Service
metadata:
  name: m-peers
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
spec:
  clusterIP: None
  selector: {app.kubernetes.io/name: ecr-mirror}
  ports:
    - {name: peer, port: 5001, targetPort: peer}
---
apiVersion: v1
kind: Secret
metadata:
  name: m-peers
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
data:
  peer-secret: bm90LWEtcmVhbC1zZWNyZXQ=
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: m
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app.kubernetes.io/name: ecr-mirror}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: m
  namespace: ns
  labels: {app.kubernetes.io/name: ecr-mirror}
spec:
  podSelector:
    matchLabels: {app.kubernetes.io/name: ecr-mirror}
  policyTypes: [Ingress]
  ingress:
    - ports: [{port: registry}]
    - ports: [{port: peer}]
      from:
        - podSelector:
            matchLabels: {app.kubernetes.io/name: ecr-mirror}
`
}

// The lint finds replicas without a bucket or a sensible disruption
// budget, replicas that could not find, trust or reach each other, and
// a peer secret that would leak into a ConfigMap.
func TestLintPeers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		old, new string // a change to replicatedChart
		want     string // in a problem; "" for none
	}{
		{name: "as rendered"},
		{name: "static peer list", old: `dns:m-peers.ns.svc.cluster.local:5001`, new: `m-0:5001,m-1:5001`},
		{name: "no bucket", old: "    shared_store: s3://bucket/prefix\n", new: "", want: "3 replicas but no SHARED_STORE"},
		{name: "no budget", old: "kind: PodDisruptionBudget", new: "kind: ResourceQuota", want: "3 replicas and no PodDisruptionBudget"},
		{name: "budget of other pods", old: "  maxUnavailable: 1\n  selector:\n    matchLabels: {app.kubernetes.io/name: ecr-mirror}", new: "  maxUnavailable: 1\n  selector:\n    matchLabels: {app.kubernetes.io/name: other}", want: "does not select the pods"},
		{name: "budget blocks every eviction", old: "  maxUnavailable: 1\n", new: "  maxUnavailable: 0\n", want: "maxUnavailable 0 blocks every voluntary eviction"},
		{name: "budget blocks every eviction by percent", old: "  maxUnavailable: 1\n", new: "  maxUnavailable: 0%\n", want: "maxUnavailable 0% blocks"},
		{name: "budget keeps all three", old: "  maxUnavailable: 1\n", new: "  minAvailable: 3\n", want: "minAvailable 3 with 3 replicas"},
		{name: "budget keeps two of three", old: "  maxUnavailable: 1\n", new: "  minAvailable: 2\n"},
		{name: "PEERS names another Service", old: "dns:m-peers.ns", new: "dns:m.ns", want: "not headless"},
		{name: "PEERS names no Service", old: "dns:m-peers.ns", new: "dns:gone.ns", want: "names Service gone, which is not among the objects"},
		{name: "PEERS in another namespace", old: "dns:m-peers.ns", new: "dns:m-peers.other", want: "in namespace other, the pods are in ns"},
		{name: "PEERS on another port", old: "cluster.local:5001", new: "cluster.local:5002", want: "no port 5002"},
		{name: "headless Service selects other pods", old: "  clusterIP: None\n  selector: {app.kubernetes.io/name: ecr-mirror}", new: "  clusterIP: None\n  selector: {app.kubernetes.io/name: other}", want: "does not select the pods"},
		{name: "headless Service targets another port", old: "{name: peer, port: 5001, targetPort: peer}", new: "{name: peer, port: 5001, targetPort: registry}", want: "not the container port \"peer\""},
		{name: "PEER_ADDR off the container port", old: `{name: PEER_ADDR, value: ":5001"}`, new: `{name: PEER_ADDR, value: ":6001"}`, want: "PEER_ADDR=:6001"},
		{name: "no peer container port", old: "            - {name: peer, containerPort: 5001}\n", new: "", want: "no container port \"peer\""},
		{name: "secret written in the pod spec", old: "valueFrom: {secretKeyRef: {name: m-peers, key: peer-secret}}", new: "value: 0123456789abcdef0123", want: "PEER_SECRET is written in the pod spec"},
		{name: "secret in the config file", old: "    shared_store: s3://bucket/prefix\n", new: "    shared_store: s3://bucket/prefix\n    peer_secret: 0123456789abcdef0123\n", want: "PEER_SECRET is in a ConfigMap"},
		{name: "secret key missing", old: "  peer-secret: bm90", new: "  other-key: bm90", want: "no key \"peer-secret\""},
		{name: "peer port open to all", old: "      from:\n        - podSelector:\n            matchLabels: {app.kubernetes.io/name: ecr-mirror}\n", new: "", want: "peer port is open to everyone"},
		{name: "peer port open to a namespace", old: "        - podSelector:\n            matchLabels: {app.kubernetes.io/name: ecr-mirror}\n", new: "        - namespaceSelector: {}\n", want: "peer port is open to"},
		{name: "peer port closed", old: "    - ports: [{port: peer}]", new: "    - ports: [{port: metrics}]", want: "cannot reach each other's peer port"},
		{name: "peer port without PEERS", old: "            - {name: PEERS, value: \"dns:m-peers.ns.svc.cluster.local:5001\"}\n", new: "", want: "container port \"peer\" but PEERS is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := replicatedChart(t)
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

package main

import (
	"fmt"
	"strconv"
	"strings"
)

// defaultPeerAddr is PEER_ADDR's default when PEERS is set.
const defaultPeerAddr = ":5001"

// peerPort is the container port name of the peer listener.
const peerPort = "peer"

// peers checks how the replicas find and trust each other: PEERS names
// a headless Service that selects the pods and exposes the peer port,
// which is PEER_ADDR's; PEER_SECRET comes from a Secret, never a
// ConfigMap or a literal; a NetworkPolicy opens the peer port to the
// pods themselves only. secretsShown: the Secret must be among the
// objects.
func (l *linter) peers(w *workload, secretsShown bool) {
	peers := w.settings["PEERS"]
	if peers == "" {
		l.unusedPort(w, peerPort, "PEERS")
		return
	}
	port, ok := l.peerListener(w)
	if !ok {
		return
	}
	l.peerSecret(w, secretsShown)
	if host, ok := strings.CutPrefix(peers, "dns:"); ok {
		l.peersService(w, host, port)
	}
	l.peerNetworkPolicies(w, port)
}

// unusedPort checks that no container or Service port is named port
// when setting, which would use it, is not set.
func (l *linter) unusedPort(w *workload, port, setting string) {
	if _, ok := w.containerPorts()[port]; ok {
		l.fail("%s: container port %q but %s is not set", w.sts, port, setting)
	}
	for _, svc := range w.byKind["Service"] {
		for _, p := range list(svc.m, "spec", "ports") {
			if str(p, "name") == port {
				l.fail("%s: exposes port %q but %s is not set", svc, port, setting)
			}
		}
	}
}

// peerListener checks that PEER_ADDR's port is the container port
// "peer", and returns it.
func (l *linter) peerListener(w *workload) (float64, bool) {
	addr, ok := w.settings["PEER_ADDR"]
	if !ok || addr == "" {
		addr = defaultPeerAddr
	}
	declared, ok := w.containerPorts()[peerPort]
	if !ok {
		l.fail("%s: PEERS is set but there is no container port %q (PEER_ADDR=%s)", w.sts, peerPort, addr)
		return 0, false
	}
	_, p, _ := strings.Cut(addr, ":")
	if n, err := strconv.Atoi(p); err != nil || float64(n) != declared {
		l.fail("%s: PEER_ADDR=%s but container port %q is %v", w.sts, addr, peerPort, declared)
		return 0, false
	}
	return declared, true
}

// peerSecret checks that PEER_SECRET reaches the container from a
// Secret's key, and that the Secret has that key when it is shown.
func (l *linter) peerSecret(w *workload, secretsShown bool) {
	if w.inConfigMaps["PEER_SECRET"] {
		l.fail("%s: PEER_SECRET is in a ConfigMap or the config file: it belongs in a Secret (env valueFrom.secretKeyRef)", w.sts)
	}
	var entry map[string]any
	for _, e := range list(w.ctr, "env") {
		if str(e, "name") == "PEER_SECRET" {
			entry = e
		}
	}
	if entry == nil {
		if !w.inConfigMaps["PEER_SECRET"] {
			l.fail("%s: PEERS is set but PEER_SECRET is not", w.sts)
		}
		return
	}
	if _, literal := entry["value"]; literal {
		l.fail("%s: PEER_SECRET is written in the pod spec: take it from a Secret (valueFrom.secretKeyRef)", w.sts)
		return
	}
	name, key := str(entry, "valueFrom", "secretKeyRef", "name"), str(entry, "valueFrom", "secretKeyRef", "key")
	if name == "" || key == "" {
		l.fail("%s: PEER_SECRET is not from a Secret's key (valueFrom.secretKeyRef name and key)", w.sts)
		return
	}
	for _, s := range w.byKind["Secret"] {
		if s.name() == name {
			if get(s.m, "data", key) == nil && get(s.m, "stringData", key) == nil {
				l.fail("%s: no key %q, which PEER_SECRET reads", s, key)
			}
			return
		}
	}
	if secretsShown {
		l.fail("%s: PEER_SECRET reads Secret %s, which is not among the objects", w.sts, name)
	}
}

// peersService checks that host (HOST:PORT of PEERS=dns:HOST:PORT)
// names a headless Service of the pods' namespace that selects them and
// exposes port as PORT.
func (l *linter) peersService(w *workload, host string, port float64) {
	name, p, ok := strings.Cut(host, ":")
	svcName, rest, _ := strings.Cut(name, ".")
	ns, _, _ := strings.Cut(rest, ".")
	wantPort, err := strconv.Atoi(p)
	if !ok || err != nil || svcName == "" {
		l.fail("%s: PEERS=dns:%s is not dns:HOST:PORT", w.sts, host)
		return
	}
	if stsNS := str(w.sts.m, "metadata", "namespace"); ns != "" && stsNS != "" && ns != stsNS {
		l.fail("%s: PEERS names %s in namespace %s, the pods are in %s", w.sts, svcName, ns, stsNS)
	}
	var svc *object
	for i, s := range w.byKind["Service"] {
		if s.name() == svcName {
			svc = &w.byKind["Service"][i]
		}
	}
	if svc == nil {
		l.fail("%s: PEERS=dns:%s names Service %s, which is not among the objects", w.sts, host, svcName)
		return
	}
	if str(svc.m, "spec", "clusterIP") != "None" {
		l.fail("%s: PEERS resolves it to know the replicas, but it is not headless (clusterIP: None)", svc)
	}
	for _, sp := range list(svc.m, "spec", "ports") {
		if n, _ := get(sp, "port").(float64); int(n) == wantPort {
			if t := get(sp, "targetPort"); t != peerPort && t != port {
				l.fail("%s: port %d targets %v, not the container port %q", svc, wantPort, t, peerPort)
			}
			return
		}
	}
	l.fail("%s: no port %d, which PEERS=dns:%s names", svc, wantPort, host)
}

// peerNetworkPolicies checks every NetworkPolicy that selects the pods
// for ingress: the peer port is open, and only to the pods themselves.
func (l *linter) peerNetworkPolicies(w *workload, port float64) {
	for _, np := range w.byKind["NetworkPolicy"] {
		sel, _ := get(np.m, "spec", "podSelector", "matchLabels").(map[string]any)
		if !subset(sel, w.podLabels) || !strings.Contains(fmt.Sprint(get(np.m, "spec", "policyTypes")), "Ingress") {
			continue
		}
		open := false
		for _, rule := range list(np.m, "spec", "ingress") {
			if !rulePorts(rule, port) {
				continue
			}
			open = true
			from := list(rule, "from")
			if len(from) == 0 {
				l.fail("%s: the peer port is open to everyone: allow it from the pods only", np)
			}
			for _, f := range from {
				ps, _ := get(f, "podSelector", "matchLabels").(map[string]any)
				if len(f) != 1 || len(ps) == 0 || !subset(ps, w.podLabels) {
					l.fail("%s: the peer port is open to %v: allow it from the pods only (podSelector %v)", np, f, w.podLabels)
				}
			}
		}
		if !open {
			l.fail("%s: the replicas cannot reach each other's peer port %v", np, port)
		}
	}
}

// rulePorts reports whether an ingress rule admits the peer port (by
// name or number; a rule without ports admits every port).
func rulePorts(rule map[string]any, port float64) bool {
	return admits(rule, peerPort, port)
}

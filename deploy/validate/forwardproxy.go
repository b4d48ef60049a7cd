package main

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// forwardProxyPort is the container port name of the forward proxy.
const forwardProxyPort = "forward-proxy"

// forwardProxy checks the forward-proxy mode: FORWARD_PROXY_ADDR's port
// is the container port "forward-proxy", a Service routes it, every
// NetworkPolicy over the pods admits it, and with several replicas
// FORWARD_PROXY_CA_DIR is one Secret's ca.crt and ca.key, so that every
// replica presents the same CA. No proxy port without the setting.
func (l *linter) forwardProxy(w *workload) {
	addr := w.settings["FORWARD_PROXY_ADDR"]
	if addr == "" {
		l.unusedPort(w, forwardProxyPort, "FORWARD_PROXY_ADDR")
		return
	}
	declared, ok := w.containerPorts()[forwardProxyPort]
	if !ok {
		l.fail("%s: FORWARD_PROXY_ADDR=%s but there is no container port %q", w.sts, addr, forwardProxyPort)
		return
	}
	_, p, _ := strings.Cut(addr, ":")
	if n, err := strconv.Atoi(p); err != nil || float64(n) != declared {
		l.fail("%s: FORWARD_PROXY_ADDR=%s but container port %q is %v", w.sts, addr, forwardProxyPort, declared)
		return
	}
	l.forwardProxyService(w, declared)
	l.forwardProxyNetworkPolicies(w, declared)
	l.forwardProxyCA(w)
}

// forwardProxyService checks that a Service that is not headless routes
// a port to the proxy's container port, by name or number.
func (l *linter) forwardProxyService(w *workload, port float64) {
	for _, svc := range w.byKind["Service"] {
		if str(svc.m, "spec", "clusterIP") == "None" {
			continue
		}
		for _, p := range list(svc.m, "spec", "ports") {
			if t := get(p, "targetPort"); t == forwardProxyPort || t == port {
				return
			}
		}
	}
	l.fail("%s: FORWARD_PROXY_ADDR is set but no Service routes a port to container port %q (%v)", w.sts, forwardProxyPort, port)
}

// forwardProxyNetworkPolicies checks that every NetworkPolicy selecting
// the pods for ingress admits the proxy port.
func (l *linter) forwardProxyNetworkPolicies(w *workload, port float64) {
	for _, np := range w.byKind["NetworkPolicy"] {
		sel, _ := get(np.m, "spec", "podSelector", "matchLabels").(map[string]any)
		if !subset(sel, w.podLabels) || !strings.Contains(fmt.Sprint(get(np.m, "spec", "policyTypes")), "Ingress") {
			continue
		}
		open := false
		for _, rule := range list(np.m, "spec", "ingress") {
			open = open || admits(rule, forwardProxyPort, port)
		}
		if !open {
			l.fail("%s: no ingress rule admits the forward proxy's port %q (%v): nodes could not reach it", np, forwardProxyPort, port)
		}
	}
}

// admits reports whether an ingress rule admits the port called name,
// numbered port (a rule without ports admits every port).
func admits(rule map[string]any, name string, port float64) bool {
	ports := list(rule, "ports")
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if v := get(p, "port"); v == name || v == port {
			return true
		}
	}
	return false
}

// forwardProxyCA checks where the CA comes from: with FORWARD_PROXY_CA_DIR
// set, a Secret volume mounted read-only whose files include ca.crt and
// ca.key; with several replicas it must be set, else each pod generates
// its own CA on its volume and nodes would have to trust them all.
func (l *linter) forwardProxyCA(w *workload) {
	dir := w.settings["FORWARD_PROXY_CA_DIR"]
	if dir == "" {
		if n, _ := get(w.sts.m, "spec", "replicas").(float64); n > 1 {
			l.fail("%s: %v replicas with the forward proxy but no FORWARD_PROXY_CA_DIR: each would generate its own CA; mount one Secret's ca.crt and ca.key in every pod", w.sts, n)
		}
		return
	}
	m, ok := w.mountOf(dir)
	if !ok || path.Clean(str(m, "mountPath")) != path.Clean(dir) {
		l.fail("%s: FORWARD_PROXY_CA_DIR=%s is not a volume mount of its own", w.sts, dir)
		return
	}
	v := w.volumes[str(m, "name")]
	secret, _ := get(v, "secret").(map[string]any)
	if secret == nil {
		l.fail("%s: FORWARD_PROXY_CA_DIR=%s is on volume %s, not a Secret volume", w.sts, dir, str(m, "name"))
		return
	}
	if get(m, "readOnly") != true {
		l.fail("%s: FORWARD_PROXY_CA_DIR=%s is mounted writable: mount the CA read-only", w.sts, dir)
	}
	l.forwardProxyCAFiles(w, secret)
}

// forwardProxyCAFiles checks that the Secret volume gives ca.crt and
// ca.key: by its items when it lists them, else by the Secret's keys when
// the Secret is among the objects.
func (l *linter) forwardProxyCAFiles(w *workload, secret map[string]any) {
	name := str(secret, "secretName")
	files := map[string]string{} // file -> the Secret's key
	if items := list(secret, "items"); len(items) > 0 {
		for _, it := range items {
			files[str(it, "path")] = str(it, "key")
		}
	} else {
		files = map[string]string{"ca.crt": "ca.crt", "ca.key": "ca.key"}
	}
	for _, f := range []string{"ca.crt", "ca.key"} {
		key, ok := files[f]
		if !ok {
			l.fail("%s: the forward proxy's CA volume (Secret %s) has no file %s", w.sts, name, f)
			continue
		}
		for _, s := range w.byKind["Secret"] {
			if s.name() == name && get(s.m, "data", key) == nil && get(s.m, "stringData", key) == nil {
				l.fail("%s: no key %q, which the forward proxy reads as %s", s, key, f)
			}
		}
	}
}

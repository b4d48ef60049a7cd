package registry

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// dockerHub is how Docker Hub is named in image references and in
// containerd's ns parameter.
const dockerHub = "docker.io"

// Namespaces maps upstream registries (docker.io, ghcr.io, ...) to the
// ECR pull-through-cache prefixes that hold their images, so that one
// mirror serves them all: containerd asks for
// /v2/library/nginx/manifests/latest?ns=docker.io, which is the ECR
// repository docker-hub/library/nginx.
type Namespaces struct {
	prefixes map[string]string // registry host → ECR repository prefix
	ecrHost  string            // the ECR registry itself: names pass unchanged
}

// NewNamespaces returns the mapping of registry hosts to ECR prefixes.
// ecrHost is the ECR registry's own host, whose names need no mapping.
func NewNamespaces(prefixes map[string]string, ecrHost string) (*Namespaces, error) {
	n := &Namespaces{prefixes: map[string]string{}, ecrHost: strings.ToLower(ecrHost)}
	for host, prefix := range prefixes {
		h := CanonicalRegistry(host)
		if h == "" || strings.ContainsAny(h, "/ =,") {
			return nil, fmt.Errorf("invalid registry host %q", host)
		}
		if err := ValidateName(prefix); err != nil {
			return nil, fmt.Errorf("invalid ECR prefix %q for %s: %v", prefix, host, err)
		}
		if _, dup := n.prefixes[h]; dup {
			return nil, fmt.Errorf("registry %s is mapped twice", h)
		}
		n.prefixes[h] = prefix
	}
	return n, nil
}

// Has reports whether host is mapped (or is the ECR registry).
func (n *Namespaces) Has(host string) bool {
	if n == nil {
		return false
	}
	h := CanonicalRegistry(host)
	_, ok := n.prefixes[h]
	return ok || h == n.ecrHost
}

// Hosts lists the mapped registries, sorted.
func (n *Namespaces) Hosts() []string {
	if n == nil {
		return nil
	}
	hosts := make([]string, 0, len(n.prefixes))
	for h := range n.prefixes {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	return hosts
}

// Upstream returns the ECR repository that holds name from registry ns
// ("" for names of the ECR registry itself).
func (n *Namespaces) Upstream(name, ns string) (string, error) {
	if ns == "" {
		return name, nil
	}
	h := CanonicalRegistry(ns)
	if n != nil && h == n.ecrHost {
		return name, nil
	}
	var prefix string
	var ok bool
	if n != nil {
		prefix, ok = n.prefixes[h]
	}
	if !ok {
		configured := "none"
		if hosts := n.Hosts(); len(hosts) > 0 {
			configured = strings.Join(hosts, ", ")
		}
		return "", &Error{Status: http.StatusNotFound, Code: CodeNameUnknown,
			Message: fmt.Sprintf("namespace %q is not configured on this mirror (PULL_THROUGHS maps: %s)", truncate(ns), configured)}
	}
	if h == dockerHub && !strings.Contains(name, "/") {
		name = "library/" + name // Docker Hub's official images
	}
	full := prefix + "/" + name
	if err := ValidateName(full); err != nil {
		return "", err
	}
	return full, nil
}

// CanonicalRegistry names a registry host the way image references do:
// lowercase, and Docker Hub's API hosts as docker.io.
func CanonicalRegistry(host string) string {
	h := strings.ToLower(strings.TrimSpace(host))
	switch h {
	case "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com":
		return dockerHub
	}
	return h
}

// dropParam removes every key=value pair with key from a raw query,
// leaving the others exactly as sent.
func dropParam(rawQuery, key string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	kept := parts[:0]
	for _, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if k != key && p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "&")
}

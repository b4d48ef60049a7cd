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

// Namespaces says which upstream serves the registries clients name
// (containerd's ?ns=, a listener's registry): the default upstream (an
// ECR registry) for its own host and for the registries its
// pull-through-cache prefixes hold (docker.io, ghcr.io, ...), and each
// other upstream for its own host. containerd asks for
// /v2/library/nginx/manifests/latest?ns=docker.io, which is the ECR
// repository docker-hub/library/nginx when PULL_THROUGHS maps docker.io,
// or library/nginx on the upstream docker.io when that is one.
type Namespaces struct {
	prefixes  map[string]string // registry host → ECR repository prefix
	ecrHost   string            // the default upstream itself: names pass unchanged
	upstreams map[string]bool   // the other upstreams' hosts
}

// Target is where a request's repository lives upstream.
type Target struct {
	// Registry is the host of the upstream that holds it, as
	// CanonicalRegistry names it; "" for the default upstream.
	Registry string
	// Name is the repository's name there.
	Name string
}

// NewNamespaces returns the mapping of registry hosts to ECR prefixes of
// the default upstream, whose own host is ecrHost; upstreams are the
// hosts of the other upstreams, whose names need no mapping either.
func NewNamespaces(prefixes map[string]string, ecrHost string, upstreams ...string) (*Namespaces, error) {
	n := &Namespaces{prefixes: map[string]string{}, ecrHost: CanonicalRegistry(ecrHost), upstreams: map[string]bool{}}
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
	for _, host := range upstreams {
		h := CanonicalRegistry(host)
		if _, mapped := n.prefixes[h]; mapped || h == n.ecrHost || n.upstreams[h] || h == "" {
			return nil, fmt.Errorf("upstream registry %q is empty, or named twice", host)
		}
		n.upstreams[h] = true
	}
	return n, nil
}

// Has reports whether host is mapped, or is an upstream.
func (n *Namespaces) Has(host string) bool {
	if n == nil {
		return false
	}
	h := CanonicalRegistry(host)
	_, ok := n.prefixes[h]
	return ok || h == n.ecrHost || n.upstreams[h]
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

// Upstream returns the repository of the default upstream that holds
// name from registry ns ("" for names of the default upstream itself),
// or name itself when ns is another upstream.
func (n *Namespaces) Upstream(name, ns string) (string, error) {
	t, err := n.Resolve(name, ns)
	return t.Name, err
}

// Resolve returns the upstream and repository that hold name from
// registry ns; ns "" is the default upstream. A registry neither mapped
// nor an upstream is 404 NAME_UNKNOWN.
func (n *Namespaces) Resolve(name, ns string) (Target, error) {
	if ns == "" {
		return Target{Name: name}, nil
	}
	h := CanonicalRegistry(ns)
	if n != nil && h == n.ecrHost {
		return Target{Name: name}, nil
	}
	if n != nil && n.upstreams[h] {
		return Target{Registry: h, Name: dockerHubName(h, name)}, nil
	}
	var prefix string
	var ok bool
	if n != nil {
		prefix, ok = n.prefixes[h]
	}
	if !ok {
		return Target{}, &Error{Status: http.StatusNotFound, Code: CodeNameUnknown,
			Message: fmt.Sprintf("namespace %q is not configured on this mirror (%s)", truncate(ns), n.configured())}
	}
	return UnderPrefix(prefix, dockerHubName(h, name))
}

// UnderPrefix is the repository of the default upstream that holds name
// under an ECR pull-through-cache prefix: prefix/name.
func UnderPrefix(prefix, name string) (Target, error) {
	full := prefix + "/" + name
	if err := ValidateName(full); err != nil {
		return Target{}, err
	}
	return Target{Name: full}, nil
}

// configured names the registries the mirror serves, for an error.
func (n *Namespaces) configured() string {
	mapped := "none"
	if hosts := n.Hosts(); len(hosts) > 0 {
		mapped = strings.Join(hosts, ", ")
	}
	if n == nil || len(n.upstreams) == 0 {
		return "PULL_THROUGHS maps: " + mapped
	}
	ups := make([]string, 0, len(n.upstreams))
	for h := range n.upstreams {
		ups = append(ups, h)
	}
	slices.Sort(ups)
	return fmt.Sprintf("upstreams: %s, %s; PULL_THROUGHS maps: %s", n.ecrHost, strings.Join(ups, ", "), mapped)
}

// dockerHubName adds Docker Hub's implicit library/ to a one-word name
// of registry host (its official images).
func dockerHubName(host, name string) string {
	if host == dockerHub && !strings.Contains(name, "/") {
		return "library/" + name
	}
	return name
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

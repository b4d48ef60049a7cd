package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/ecr-mirror/ecr-mirror/internal/forwardproxy"
	"github.com/ecr-mirror/ecr-mirror/internal/servergroup"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// loadForwardProxyCA reads or generates FORWARD_PROXY_CA_DIR's CA when
// FORWARD_PROXY_ADDR is set, and logs where its certificate is.
func (h *handlers) loadForwardProxyCA() error {
	fp := h.cfg.ForwardProxy
	if fp.Addr == "" {
		return nil
	}
	ca, created, err := forwardproxy.LoadCA(fp.CADir, nil)
	if err != nil {
		return fmt.Errorf("FORWARD_PROXY_CA_DIR %s: %w", fp.CADir, err)
	}
	h.ca = ca
	attrs := []any{"certificate", ca.CertPath(), "sha256_fingerprint", ca.Fingerprint(), "expires", ca.Certificate().NotAfter}
	if !created {
		h.log.Info("forward proxy: CA loaded", attrs...)
		return nil
	}
	// A new CA's certificate (public) is printed whole, so that whoever
	// reads the first start's log can hand it to the nodes.
	attrs = append(attrs, "certificate_pem", string(ca.CertPEM()))
	h.log.Info("forward proxy: CA generated; have the nodes trust its certificate (also served at /ca.crt)", attrs...)
	return nil
}

// forwardProxyListener is FORWARD_PROXY_ADDR's listener: every UPSTREAM
// host and FORWARD_PROXY_REGISTRIES' served as a registry listener for
// that host would serve it (front with it as default namespace). With
// the registry listeners' TLS (tlsConfig non-nil) it is served over
// TLS too, HTTP/1.1 only, so that proxy logins never cross in the clear.
func (h *handlers) forwardProxyListener(probe http.Handler, tlsConfig *tls.Config) (servergroup.Listener, error) {
	fp := h.cfg.ForwardProxy
	regs := map[string]forwardproxy.Registry{}
	for _, u := range h.cfg.Upstreams {
		regs[registry.CanonicalRegistry(u.URL.Hostname())] = forwardproxy.Registry{Port: u.URL.Port(), Handler: h.front(u.Host, probe, nil)}
	}
	for _, host := range fp.Registries {
		if _, dup := regs[host]; !dup {
			regs[host] = forwardproxy.Registry{Handler: h.front(host, probe, nil)}
		}
	}
	px, err := forwardproxy.New(forwardproxy.Options{
		Registries: regs,
		Canonical:  registry.CanonicalRegistry,
		CA:         h.ca,
		Others:     forwardproxy.Others(fp.Others),
		Gate:       forwardproxy.GateOf(h.policy.Wrap),
		Dial:       h.cfg.UpstreamDial,
		WrapTunnel: h.clients.Handler,
		Observe:    h.up.Metrics.ObserveForwardProxy,
		Logger:     h.log.With("component", "forward-proxy"),
	})
	if err != nil {
		return servergroup.Listener{}, fmt.Errorf("FORWARD_PROXY_ADDR: %w", err)
	}
	h.fwd = px
	hosts := slices.Sorted(maps.Keys(regs))
	return servergroup.Listener{Setting: "FORWARD_PROXY_ADDR", Addr: fp.Addr, Handler: px,
		What: fmt.Sprintf("forward proxy: registries %v from the cache, other hosts: %s", hosts, fp.Others), Limited: true,
		TLS: http1Only(tlsConfig), HTTP1Only: true}, nil
}

// http1Only is tlsConfig offering HTTP/1.1 alone; nil stays nil.
func http1Only(tlsConfig *tls.Config) *tls.Config {
	if tlsConfig == nil {
		return nil
	}
	c := tlsConfig.Clone()
	c.NextProtos = []string{"http/1.1"}
	return c
}

// shutdownForwardProxy has the forward proxy's intercepted connections
// and tunnels end with its server (listeners[i] is servers[i]'s): the
// server's Shutdown does not see connections it handed over. What is
// still open when run returns is closed then.
func (h *handlers) shutdownForwardProxy(listeners []servergroup.Listener, servers []servergroup.Server) (closeRest func()) {
	if h.fwd == nil {
		return func() {}
	}
	for i, l := range listeners {
		if l.Setting == "FORWARD_PROXY_ADDR" {
			servers[i].HTTP.RegisterOnShutdown(func() {
				ctx, cancel := context.WithTimeout(context.Background(), h.cfg.ShutdownGrace)
				defer cancel()
				h.fwd.Shutdown(ctx)
			})
		}
	}
	return func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		h.fwd.Shutdown(ctx)
	}
}

// withCACert serves the forward proxy's CA certificate at /ca.crt
// beside next, when there is one.
func (h *handlers) withCACert(next http.Handler) http.Handler {
	if h.ca == nil {
		return next
	}
	cert := forwardproxy.ServeCACert(h.ca)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ca.crt" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			cert.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

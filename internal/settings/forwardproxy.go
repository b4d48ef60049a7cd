package settings

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// ForwardProxy is the forward-proxy mode's settings (FORWARD_PROXY_*).
type ForwardProxy struct {
	Addr string // FORWARD_PROXY_ADDR; "": off
	// Registries are FORWARD_PROXY_REGISTRIES' hosts, canonical
	// (docker.io for Docker Hub's API hosts); every UPSTREAM host is
	// intercepted besides them.
	Registries []string
	CADir      string // FORWARD_PROXY_CA_DIR; default CACHE_DIR/forward-proxy-ca
	Others     string // FORWARD_PROXY_OTHERS: deny or tunnel
}

// forwardProxySettings are the settings of the forward-proxy mode. They
// come after CACHE_DIR, UPSTREAM and PULL_THROUGHS, which they read.
func forwardProxySettings(c *Config) []*setting {
	return []*setting{
		{env: "FORWARD_PROXY_ADDR", arg: "ADDR",
			help:       "address of the forward proxy clients use as HTTPS_PROXY/HTTP_PROXY: it serves the registry hosts from the cache (default: off)",
			docDefault: "(none: off)", doc: "where the forward proxy listens (`CONNECT`; over TLS with the registry listeners' certificate when `TLS_CERTIFICATE` is set, plain HTTP otherwise): clients set it as `HTTPS_PROXY`/`HTTP_PROXY` and pull by the registries' own names; every `UPSTREAM` host and `FORWARD_PROXY_REGISTRIES` is served from the cache (see \"Forward-proxy mode\")",
			parse: c.parseForwardProxyAddr},
		{env: "FORWARD_PROXY_REGISTRIES", arg: "HOST,...", shape: list,
			help:       "more registry hosts the forward proxy serves from the cache, each mapped in PULL_THROUGHS or an UPSTREAM, e.g. docker.io,ghcr.io",
			docDefault: "(none: the `UPSTREAM` hosts only)", doc: "registry hosts the forward proxy serves from the cache besides every `UPSTREAM` host, each mapped in `PULL_THROUGHS` (or an `UPSTREAM`), e.g. `docker.io,ghcr.io`; `docker.io` covers `registry-1.docker.io`",
			parse: c.parseForwardProxyRegistries},
		{env: "FORWARD_PROXY_CA_DIR", arg: "DIR",
			help:       "directory of the forward proxy's CA (ca.crt, ca.key); generated there on first start when absent (default: CACHE_DIR/forward-proxy-ca)",
			docDefault: "`<CACHE_DIR>/forward-proxy-ca`", doc: "the CA the forward proxy issues registry hosts' certificates from: `ca.crt` and `ca.key` (PEM), or neither and one is generated (ECDSA P-256, key `0600`, directory `0700`); the key never leaves it",
			parse: c.parseForwardProxyCADir},
		{env: "FORWARD_PROXY_OTHERS", arg: "deny|tunnel", def: "deny",
			help:  "what the forward proxy does with hosts that are not registries it serves: deny (403) or tunnel (pass through untouched)",
			doc:   "hosts that are not registries the mirror serves: `deny` answers 403 naming the host; `tunnel` passes `CONNECT` through untouched and forwards `http://` requests (never to loopback, link-local or the mirror's own addresses)",
			parse: c.parseForwardProxyOthers},
	}
}

// parseForwardProxyAddr binds FORWARD_PROXY_ADDR. The proxy intercepts
// registries by host, whatever the port: two UPSTREAM entries on one
// host would leave it one of them to serve for both.
func (c *Config) parseForwardProxyAddr(v string) error {
	if err := bindAddr(&c.ForwardProxy.Addr, false)(v); err != nil || v == "" {
		return err
	}
	byHost := map[string]string{}
	var errs []error
	for _, u := range c.Upstreams {
		host := registry.CanonicalRegistry(u.URL.Hostname())
		if other, dup := byHost[host]; dup {
			errs = append(errs, fmt.Errorf("UPSTREAM %s and %s share host %s, and the forward proxy intercepts a host whatever the port: serve one of them through it", other, u.Host, host))
		}
		byHost[host] = u.Host
	}
	return errors.Join(errs...)
}

// parseForwardProxyRegistries binds FORWARD_PROXY_REGISTRIES: hosts
// PULL_THROUGHS maps, or UPSTREAM entries, named without a port (the
// proxy intercepts them on 443 and 80).
func (c *Config) parseForwardProxyRegistries(v string) error {
	var errs []error
	for _, item := range SplitList(v) {
		host := registry.CanonicalRegistry(item)
		if _, port, err := net.SplitHostPort(host); err == nil {
			errs = append(errs, fmt.Errorf("%s names a port (%s): the forward proxy intercepts a host on 443 (CONNECT) and 80 (http://), so name the host alone", host, port))
			continue
		}
		if err := c.mapped(host); err != nil {
			errs = append(errs, err)
			continue
		}
		c.ForwardProxy.Registries = append(c.ForwardProxy.Registries, host)
	}
	if len(errs) == 0 && len(c.ForwardProxy.Registries) > 0 && c.ForwardProxy.Addr == "" {
		return errors.New("needs FORWARD_PROXY_ADDR: set it for the forward proxy, or unset this")
	}
	return errors.Join(errs...)
}

// parseForwardProxyCADir binds FORWARD_PROXY_CA_DIR, CACHE_DIR's
// forward-proxy-ca by default.
func (c *Config) parseForwardProxyCADir(v string) error {
	if v == "" {
		v = filepath.Join(c.CacheDir, "forward-proxy-ca")
	}
	c.ForwardProxy.CADir = v
	return nil
}

// parseForwardProxyOthers binds FORWARD_PROXY_OTHERS: deny or tunnel.
func (c *Config) parseForwardProxyOthers(v string) error {
	switch v {
	case "deny", "tunnel":
		c.ForwardProxy.Others = v
		return nil
	}
	return fmt.Errorf("%q is neither deny nor tunnel", v)
}

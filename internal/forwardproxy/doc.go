// Package forwardproxy is the mirror's forward-proxy mode
// (FORWARD_PROXY_ADDR): a listener that clients (the Docker daemon,
// containerd, podman, skopeo, curl) use as their HTTPS_PROXY/HTTP_PROXY,
// so that they pull by the registries' own names while the mirror
// serves the registries it knows from its cache.
//
// The concerns, one type each:
//
//   - ca.go: the CA (LoadCA), read from FORWARD_PROXY_CA_DIR (ca.crt and
//     ca.key) or generated there on first start (ECDSA P-256, key 0600,
//     directory 0700). It issues a leaf certificate per intercepted host
//     (SAN = the host only, one day long, kept in memory and issued again
//     when less than an hour is left). The key is never written anywhere
//     else, never logged and never served; the certificate is served at
//     /ca.crt (ServeCACert) for nodes to trust.
//   - proxy.go: the Proxy handler. A CONNECT to an intercepted registry
//     host on port 443 is answered 200, the connection taken over and TLS
//     terminated with the host's leaf; the HTTP/1.1 requests inside are
//     served by that registry's handler (the mirror gives it the front
//     handler a NAMESPACE_LISTENERS listener for the host would have: same
//     cache, links, access rules, upstream credentials). A plain http://
//     absolute-form request for such a host goes to the same handler.
//     Either way the handler sees origin-form requests without the
//     client's Authorization (meant for the real registry, never passed
//     on); the proxy login, when there is one, takes its place, so the
//     access policy knows the client by it. Hosts are compared by their
//     canonical names (Docker Hub's API hosts as docker.io).
//   - tunnel.go: hosts that are not intercepted. FORWARD_PROXY_OTHERS=deny
//     (the default) answers 403 naming the host and the setting; tunnel
//     copies a CONNECT's bytes both ways untouched (once one end has
//     closed, the other's silence of two minutes closes the tunnel, so
//     a client that never hangs up holds nothing) and forwards http://
//     requests (hop-by-hop headers, Proxy-Authorization among them,
//     dropped; their connections kept idle 90 s at most). Neither ever
//     connects to a loopback, link-local or fd00:ec2::/32 (the cloud
//     metadata service), unspecified or multicast address, nor to one of
//     this host's own (the mirror's listeners would take the proxy's
//     address for the client's).
//
// The Proxy is a plain http.Handler: the mirror serves it over TLS when
// it has TLS (HTTP/1.1 only), so that clients speak TLS to the proxy and
// CONNECT inside it; a hijacked connection is then a *tls.Conn, and the
// intercepted host's TLS runs inside it (a tunnel's half-close is its
// close_notify).
//
// Clients are admitted by a Gate before anything else: the mirror's is
// GateOf(access.Policy.Wrap), which asks the access policy about a /v2/
// login probe from the client's address with its Proxy-Authorization.
// A login it asks for becomes 407 with Proxy-Authenticate: Basic; a
// CONNECT's login holds for every request inside its tunnel.
//
// Bad input gets a plain-text 4xx naming what is wrong: a CONNECT
// authority that is not host:port or names no valid host, a port other
// than 443 (CONNECT) or 80 (http) for an intercepted host (or the port
// of its UPSTREAM URL), an absolute-form request without a host or for
// https://, headers over 64 KiB (431, on the tunnel's server too).
//
// Shutdown lets the intercepted connections finish their requests and
// closes every tunnel: the server that handed them over no longer
// tracks them.
package forwardproxy

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// maxRedirects is how many redirects one upstream request may follow. ECR
// needs one (registry to S3); the rest is room for a proxy in front.
const maxRedirects = 5

// RedirectPolicy decides which upstream redirects the mirror follows, and
// guards the connections it makes for them. ECR answers blob GETs with a
// 307 to a presigned S3 URL, so the mirror must follow redirects; a
// hostile or misrouted upstream must not make it fetch, and relay to a
// client, anything on the mirror's own host or network.
//
// A redirect is followed when all of these hold:
//   - it is one of the first maxRedirects (5) of the request;
//   - its scheme is https, or http when the upstream itself is http://;
//   - its host is an address, or a name resolving to addresses, that is
//     public, or in the upstream's own class: loopback when the upstream
//     is a loopback address or "localhost", private (RFC 1918, fc00::/7)
//     when it is a private address. A name as upstream is public.
//     Link-local (169.254.169.254, the cloud metadata service),
//     unspecified, multicast and broadcast addresses are never dialled.
//
// Addresses are checked twice: in CheckRedirect for IP literals, and at
// dial time for the addresses a name resolved to (so a name pointing at
// 127.0.0.1 is refused too), before any connection is attempted. Dials to
// the upstream's own host:port, and to the proxy the transport chose for
// the request (HTTPS_PROXY), are the operator's choice and never refused;
// through a proxy, the proxy resolves names.
//
// No request upstream carries a Referer: net/http sets one on redirects,
// which would hand one hop's URL (a presigned URL, with its credentials)
// to the next host.
type RedirectPolicy struct {
	upstreamAddr string    // host:port dialled for the upstream
	allowHTTP    bool      // the upstream itself is plain http
	own          addrClass // the upstream's class
	// lookup resolves a redirect target's name (tests replace it).
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// NewRedirectPolicy returns the redirect policy for requests to upstream,
// the registry's base URL.
func NewRedirectPolicy(upstream *url.URL) *RedirectPolicy {
	return &RedirectPolicy{
		upstreamAddr: canonicalAddr(upstream),
		allowHTTP:    strings.EqualFold(upstream.Scheme, "http"),
		own:          hostClass(upstream.Hostname()),
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
	}
}

// Client returns an http.Client for upstream requests that applies the
// policy: base (cloned, not changed) dials through the policy's guard,
// wrap (e.g. auth.Source.Transport; nil: none) decorates it, and the
// client strips Referer and checks every redirect.
func (p *RedirectPolicy) Client(base *http.Transport, wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	tr := base.Clone()
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = p.dialContext(dial)
	var rt http.RoundTripper = tr
	if wrap != nil {
		rt = wrap(rt)
	}
	return &http.Client{Transport: noReferer{next: rt, proxy: tr.Proxy}, CheckRedirect: p.CheckRedirect}
}

// CheckRedirect is an http.Client CheckRedirect: it refuses a redirect
// the policy does not allow, with an error naming the target's scheme and
// host (never its path or query), and drops the Referer net/http adds.
func (p *RedirectPolicy) CheckRedirect(req *http.Request, via []*http.Request) error {
	req.Header.Del("Referer")
	if len(via) > maxRedirects {
		return &redirectError{target: req.URL, reason: fmt.Sprintf("more than %d redirects", maxRedirects)}
	}
	u := req.URL
	switch s := strings.ToLower(u.Scheme); {
	case s == "https":
	case s == "http" && p.allowHTTP:
	default:
		return &redirectError{target: u, reason: fmt.Sprintf("scheme %q is not followed from this upstream", u.Scheme)}
	}
	host := u.Hostname()
	if host == "" {
		return &redirectError{target: u, reason: "no host"}
	}
	if c := hostClass(host); !p.allows(c) {
		return &redirectError{target: u, reason: c.String() + " address"}
	}
	return nil
}

// allows reports whether a redirect target of class c may be dialled.
func (p *RedirectPolicy) allows(c addrClass) bool {
	return c == classPublic || c == p.own && (c == classLoopback || c == classPrivate)
}

// dialFunc is the signature of http.Transport.DialContext.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// dialContext guards dial: a connection for a redirect target is made
// only to addresses the policy allows, resolved here and dialled as IP
// literals, so the address checked is the address connected to.
func (p *RedirectPolicy) dialContext(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		proxy, _ := ctx.Value(proxyAddrKey{}).(string)
		if strings.EqualFold(addr, p.upstreamAddr) || proxy != "" && strings.EqualFold(addr, proxy) {
			return dial(ctx, network, addr) // the upstream, or the request's proxy
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		addrs, err := p.resolve(ctx, host)
		if err != nil {
			return nil, err
		}
		var allowed []netip.Addr
		for _, a := range addrs {
			if networkAccepts(network, a) && p.allows(classOf(a)) {
				allowed = append(allowed, a)
			}
		}
		if len(allowed) == 0 {
			reason := "no usable address"
			if len(addrs) > 0 {
				reason = "resolves to a " + classOf(addrs[0]).String() + " address"
			}
			return nil, &redirectError{target: &url.URL{Host: addr}, reason: reason}
		}
		var errs []error
		for _, a := range allowed {
			conn, err := dial(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return conn, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

// resolve returns host's addresses: itself when it is an IP literal.
func (p *RedirectPolicy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	return p.lookup(ctx, host)
}

func networkAccepts(network string, a netip.Addr) bool {
	switch network {
	case "tcp4":
		return a.Unmap().Is4()
	case "tcp6":
		return a.Is6() && !a.Is4In6()
	}
	return true
}

// redirectError is a redirect, or a connection for one, the policy
// refused. Its text names the target's scheme and host, for the logs.
type redirectError struct {
	target *url.URL
	reason string
}

func (e *redirectError) Error() string {
	where := e.target.Host
	if e.target.Scheme != "" {
		where = e.target.Scheme + "://" + where
	}
	return "redirect to " + where + " refused: " + e.reason
}

// proxyAddrKey keys the host:port of the HTTP proxy a request goes
// through, if any, in the context its connections are dialled with.
type proxyAddrKey struct{}

// noReferer is an http.RoundTripper that sends no Referer and tells the
// dialer which proxy, if any, a request goes through (proxy is the
// transport's own choice, nil: none).
type noReferer struct {
	next  http.RoundTripper
	proxy func(*http.Request) (*url.URL, error)
}

// RoundTrip implements http.RoundTripper.
func (t noReferer) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req
	if t.proxy != nil {
		if u, err := t.proxy(req); err == nil && u != nil {
			r = req.WithContext(context.WithValue(req.Context(), proxyAddrKey{}, canonicalAddr(u)))
		}
	}
	if _, ok := req.Header["Referer"]; ok {
		if r == req {
			r = req.WithContext(req.Context())
		}
		r.Header = req.Header.Clone()
		r.Header.Del("Referer")
	}
	return t.next.RoundTrip(r)
}

// CloseIdleConnections passes through, so that
// http.Client.CloseIdleConnections keeps working.
func (t noReferer) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// canonicalAddr is the host:port net/http dials for u (a URL it
// fetches, or a proxy's). When it differs from net/http's (a non-ASCII
// host), the dial is checked as a redirect target's: the safe side.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// addrClass sorts addresses by where they lead.
type addrClass uint8

const (
	classPublic      addrClass = iota
	classLoopback              // 127.0.0.0/8, ::1
	classPrivate               // RFC 1918, fc00::/7
	classLinkLocal             // 169.254.0.0/16, fe80::/10
	classUnspecified           // 0.0.0.0/8, ::
	classMulticast             // multicast and 255.255.255.255
)

func (c addrClass) String() string {
	switch c {
	case classLoopback:
		return "loopback"
	case classPrivate:
		return "private"
	case classLinkLocal:
		return "link-local"
	case classUnspecified:
		return "unspecified"
	case classMulticast:
		return "multicast"
	}
	return "public"
}

// nat64 is the well-known NAT64 prefix: its addresses lead to the IPv4
// address in their last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// classOf returns a's class.
func classOf(a netip.Addr) addrClass {
	a = a.Unmap()
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case a.IsLoopback():
		return classLoopback
	case a.IsPrivate():
		return classPrivate
	case a.IsLinkLocalUnicast():
		return classLinkLocal
	case a.IsUnspecified(), a.Is4() && a.As4()[0] == 0:
		return classUnspecified
	case a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return classMulticast
	}
	return classPublic
}

// hostClass is the class of a URL's host: an IP literal's own,
// loopback for "localhost", else public (a name is checked again when
// its addresses are dialled).
func hostClass(host string) addrClass {
	if a, err := netip.ParseAddr(host); err == nil {
		return classOf(a)
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return classLoopback
	}
	return classPublic
}

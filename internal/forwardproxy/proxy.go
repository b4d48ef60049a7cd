package forwardproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Others says what the proxy does with a host it does not intercept.
type Others string

// The values of FORWARD_PROXY_OTHERS.
const (
	OthersDeny   Others = "deny"   // 403 naming the host and the setting
	OthersTunnel Others = "tunnel" // CONNECT tunnelled, http forwarded, untouched
)

// Registry is one intercepted registry host and the handler that serves
// its API: the same the mirror's registry listener for it would serve.
type Registry struct {
	// Port is the one port, besides 443 (CONNECT) and 80 (http), that
	// clients may name for it: its UPSTREAM URL's, if any.
	Port    string
	Handler http.Handler
}

// Gate admits or refuses the client of a request to the proxy by its
// address and its Proxy-Authorization header (the credentials it would
// send the registry listener). It returns 200 to admit it; 401 asks for
// a login (the proxy answers 407), 403 refuses its network, 429 its
// login storm (header then holds Retry-After).
type Gate func(r *http.Request) (status int, header http.Header)

// GateOf is the Gate of a registry listener's access middleware (such
// as access.Policy.Wrap): the client is admitted when the middleware
// lets its login probe through, a GET /v2/ from the client's address
// with the proxy login as its Authorization.
func GateOf(middleware func(http.Handler) http.Handler) Gate {
	admitted := middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	return func(r *http.Request) (int, http.Header) {
		probe := (&http.Request{
			Method:     http.MethodGet,
			URL:        &url.URL{Path: "/v2/"},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     http.Header{},
			Host:       r.Host,
			RemoteAddr: r.RemoteAddr,
			RequestURI: "/v2/",
		}).WithContext(r.Context())
		if auth := r.Header.Get("Proxy-Authorization"); auth != "" {
			probe.Header.Set("Authorization", auth)
		}
		rec := &statusRecorder{header: http.Header{}}
		admitted.ServeHTTP(rec, probe)
		if rec.status == 0 {
			rec.status = http.StatusOK // as net/http answers a handler that wrote nothing
		}
		return rec.status, rec.header
	}
}

// statusRecorder keeps a response's status and header, and drops its
// body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(p), nil
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// Options configure a Proxy.
type Options struct {
	// Registries are the intercepted hosts, by canonical name.
	Registries map[string]Registry
	// Canonical names a host the way Registries' keys do (Docker Hub's
	// API hosts as docker.io); nil: lower case.
	Canonical func(host string) string
	CA        *CA
	Others    Others
	// Gate admits clients; nil admits every one.
	Gate Gate
	// Dial makes the connections of tunnels and forwarded requests; nil:
	// a dialer that refuses loopback, link-local, unspecified and
	// multicast destinations (see guardedDial).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// WrapTunnel wraps the handler of each intercepted tunnel (the
	// client watchdog); nil: none.
	WrapTunnel func(http.Handler) http.Handler
	// Observe counts each request to the proxy by its outcome (one of
	// Outcomes); nil: none.
	Observe func(outcome string)
	Logger  *slog.Logger

	// halfClosedIdle is how long a tunnel one end has closed waits for
	// the other end's next bytes; 0: halfClosedIdle (tests shorten it).
	halfClosedIdle time.Duration
	// forwardIdle is how long a forwarded request's connection is kept
	// idle for the next; 0: forwardIdle (tests shorten it).
	forwardIdle time.Duration
}

// Outcomes of requests to the proxy, for Options.Observe.
const (
	OutcomeIntercepted = "intercepted" // CONNECT to a registry host, served by the mirror
	OutcomeHTTP        = "http"        // http:// request for a registry host, served by the mirror
	OutcomeTunnelled   = "tunnelled"   // CONNECT to another host, passed through
	OutcomeForwarded   = "forwarded"   // http:// request for another host, passed on
	OutcomeDenied      = "denied"      // another host, FORWARD_PROXY_OTHERS=deny
	OutcomeRefused     = "refused"     // the client: no login, a wrong one, or its network
	OutcomeInvalid     = "invalid"     // a malformed request
	OutcomeFailed      = "failed"      // another host that could not, or may not, be reached
)

// Outcomes lists every outcome.
var Outcomes = []string{OutcomeIntercepted, OutcomeHTTP, OutcomeTunnelled, OutcomeForwarded,
	OutcomeDenied, OutcomeRefused, OutcomeInvalid, OutcomeFailed}

// Proxy is the forward proxy's handler: CONNECT and absolute-form
// requests, see the package documentation.
type Proxy struct {
	opts    Options
	forward http.Handler // absolute-form requests to other hosts
	tunnels tracker
}

// New returns a Proxy; opts.CA is required when Registries is not empty.
func New(opts Options) (*Proxy, error) {
	if len(opts.Registries) > 0 && opts.CA == nil {
		return nil, errors.New("forward proxy: intercepting registries needs a CA")
	}
	if opts.Others != OthersDeny && opts.Others != OthersTunnel {
		return nil, fmt.Errorf("forward proxy: others %q is neither %q nor %q", opts.Others, OthersDeny, OthersTunnel)
	}
	if opts.Canonical == nil {
		opts.Canonical = strings.ToLower
	}
	if opts.Dial == nil {
		opts.Dial = guardedDial(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second})
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observe == nil {
		opts.Observe = func(string) {}
	}
	if opts.halfClosedIdle <= 0 {
		opts.halfClosedIdle = halfClosedIdle
	}
	if opts.forwardIdle <= 0 {
		opts.forwardIdle = forwardIdle
	}
	p := &Proxy{opts: opts}
	p.forward = newForwarder(opts.Dial, opts.forwardIdle, opts.Logger)
	return p, nil
}

// ServeHTTP serves one request to the proxy.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect && r.URL.Scheme == "" && r.URL.Host == "" {
		p.serveOwn(w, r)
		return
	}
	if !p.admit(w, r) {
		return
	}
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r)
		return
	}
	p.serveAbsolute(w, r)
}

// serveOwn answers requests for the proxy itself (origin-form): its CA
// certificate at /ca.crt, a 400 for anything else.
func (p *Proxy) serveOwn(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ca.crt" && p.opts.CA != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		ServeCACert(p.opts.CA).ServeHTTP(w, r)
		return
	}
	refuse(w, http.StatusBadRequest, "this is ecr-mirror's forward proxy (FORWARD_PROXY_ADDR): use it as HTTPS_PROXY/HTTP_PROXY, or fetch its CA certificate at /ca.crt")
}

// ServeCACert serves the CA certificate (PEM), for nodes to trust.
func ServeCACert(ca *CA) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Header().Set("Content-Length", strconv.Itoa(len(ca.CertPEM())))
		if r.Method != http.MethodHead {
			_, _ = w.Write(ca.CertPEM())
		}
	})
}

// admit asks the gate about r's client; when it is refused, admit has
// answered.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request) bool {
	if p.opts.Gate == nil {
		return true
	}
	status, header := p.opts.Gate(r)
	if status == http.StatusOK {
		return true
	}
	for k, vs := range header {
		if k == "Retry-After" {
			w.Header()[k] = vs
		}
	}
	msg := "the proxy refused this client"
	switch status {
	case http.StatusUnauthorized:
		status = http.StatusProxyAuthRequired
		w.Header().Set("Proxy-Authenticate", `Basic realm="ecr-mirror"`)
		msg = "proxy authentication required: send Proxy-Authorization with a user of the mirror's htpasswd file (HTPASSWD_FILE)"
		if r.Header.Get("Proxy-Authorization") != "" {
			msg = "proxy authentication failed: wrong user name or password"
		}
	case http.StatusForbidden:
		msg = "access denied: the mirror does not serve this client's network"
	case http.StatusTooManyRequests:
		msg = "too many failed logins from this address: retry later"
	default:
		if status < 400 || status > 599 {
			status = http.StatusForbidden
		}
	}
	p.opts.Observe(OutcomeRefused)
	p.opts.Logger.Debug("forward proxy: client refused", "client", r.RemoteAddr, "status", status)
	refuse(w, status, msg)
	return false
}

// serveConnect intercepts a CONNECT to a registry host, and tunnels or
// refuses one to any other host.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request) {
	host, port, err := splitAuthority(r.Host)
	if err != nil {
		p.opts.Observe(OutcomeInvalid)
		refuse(w, http.StatusBadRequest, fmt.Sprintf("CONNECT %q: %v", truncate(r.Host), err))
		return
	}
	if reg, ok := p.registry(host); ok {
		if port != "443" && port != reg.Port {
			p.opts.Observe(OutcomeInvalid)
			refuse(w, http.StatusBadRequest, fmt.Sprintf("CONNECT %s: registry host %s is intercepted on port 443 only", truncate(r.Host), host))
			return
		}
		p.intercept(w, r, host, reg)
		return
	}
	if p.opts.Others != OthersTunnel {
		p.refuseOther(w, r, host)
		return
	}
	p.tunnel(w, r, net.JoinHostPort(host, port))
}

// serveAbsolute serves an absolute-form (plain http://) request: a
// registry host's from the mirror, any other's forwarded or refused.
func (p *Proxy) serveAbsolute(w http.ResponseWriter, r *http.Request) {
	if r.URL.Host == "" {
		p.opts.Observe(OutcomeInvalid)
		refuse(w, http.StatusBadRequest, fmt.Sprintf("request for %q names no host", truncate(r.URL.String())))
		return
	}
	if !strings.EqualFold(r.URL.Scheme, "http") {
		p.opts.Observe(OutcomeInvalid)
		refuse(w, http.StatusBadRequest, fmt.Sprintf("scheme %q: the proxy forwards http:// requests; use CONNECT for https", truncate(r.URL.Scheme)))
		return
	}
	host, port := r.URL.Hostname(), r.URL.Port()
	if err := checkHost(host); err != nil {
		p.opts.Observe(OutcomeInvalid)
		refuse(w, http.StatusBadRequest, fmt.Sprintf("request for %q: %v", truncate(r.URL.Host), err))
		return
	}
	if reg, ok := p.registry(host); ok {
		if port != "" && port != "80" && port != reg.Port {
			p.opts.Observe(OutcomeInvalid)
			refuse(w, http.StatusBadRequest, fmt.Sprintf("http://%s: registry host %s is intercepted on port 80 only", truncate(r.URL.Host), host))
			return
		}
		p.opts.Logger.Debug("forward proxy: serving", "host", host, "client", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		p.opts.Observe(OutcomeHTTP)
		reg.Handler.ServeHTTP(w, forRegistry(r, r.Header.Get("Proxy-Authorization")))
		return
	}
	if p.opts.Others != OthersTunnel {
		p.refuseOther(w, r, host)
		return
	}
	p.opts.Observe(OutcomeForwarded)
	p.forward.ServeHTTP(w, r)
}

// registry returns the intercepted registry named host, if any.
func (p *Proxy) registry(host string) (Registry, bool) {
	reg, ok := p.opts.Registries[p.opts.Canonical(host)]
	return reg, ok
}

// refuseOther answers a request for a host not intercepted, with
// FORWARD_PROXY_OTHERS=deny.
func (p *Proxy) refuseOther(w http.ResponseWriter, r *http.Request, host string) {
	p.opts.Observe(OutcomeDenied)
	p.opts.Logger.Info("forward proxy: refused a host that is not a registry", "host", truncate(host), "client", r.RemoteAddr)
	refuse(w, http.StatusForbidden, fmt.Sprintf("%s is not a registry this mirror serves, and FORWARD_PROXY_OTHERS=deny refuses every other host; add it to NO_PROXY, or set FORWARD_PROXY_OTHERS=tunnel", truncate(host)))
}

// forRegistry is r as the registry handler takes it: origin-form, the
// client's Authorization (meant for the real registry) dropped, and the
// proxy login, if any, in its place, so that the access policy knows
// the client by it.
func forRegistry(r *http.Request, proxyAuth string) *http.Request {
	r2 := r.Clone(r.Context())
	for _, h := range []string{"Authorization", "Proxy-Authorization", "Proxy-Connection"} {
		r2.Header.Del(h)
	}
	if proxyAuth != "" {
		r2.Header.Set("Authorization", proxyAuth)
	}
	r2.URL.Scheme, r2.URL.Host = "", ""
	r2.RequestURI = r2.URL.RequestURI()
	return r2
}

// intercept answers a CONNECT to a registry host: it terminates TLS on
// the client's connection with a certificate for host from the CA and
// serves the requests inside with the registry's handler, as the client
// the CONNECT's login names.
func (p *Proxy) intercept(w http.ResponseWriter, r *http.Request, host string, reg Registry) {
	cert, err := p.opts.CA.Leaf(host)
	if err != nil {
		p.opts.Logger.Error("forward proxy: cannot issue a certificate", "host", host, "error", err)
		refuse(w, http.StatusInternalServerError, "the proxy cannot issue a certificate for "+host)
		return
	}
	conn, err := hijack(w)
	if err != nil {
		p.opts.Logger.Warn("forward proxy: cannot take over the connection", "client", r.RemoteAddr, "error", err)
		return
	}
	p.opts.Observe(OutcomeIntercepted)
	p.opts.Logger.Debug("forward proxy: intercepting", "host", host, "client", r.RemoteAddr)
	proxyAuth := r.Header.Get("Proxy-Authorization")
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reg.Handler.ServeHTTP(w, forRegistry(r, proxyAuth))
	})
	if p.opts.WrapTunnel != nil {
		h = p.opts.WrapTunnel(h)
	}
	tlsConn := tls.Server(conn, &tls.Config{
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	p.serveTunnel(tlsConn, h)
}

// serveTunnel serves HTTP on one intercepted connection until it closes
// or the proxy shuts down.
func (p *Proxy) serveTunnel(conn net.Conn, h http.Handler) {
	ln := newOneConnListener(conn)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(p.opts.Logger.Handler(), slog.LevelWarn), // TLS handshakes a client refused: its node does not trust the CA
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				ln.Close()
			}
		},
	}
	if !p.tunnels.addServer(srv) {
		conn.Close()
		return
	}
	defer p.tunnels.removeServer(srv)
	_ = srv.Serve(ln) // returns once the connection is closed
}

// Shutdown lets the intercepted connections finish the requests they
// are serving, until ctx ends, then closes them and every tunnel.
func (p *Proxy) Shutdown(ctx context.Context) {
	p.tunnels.shutdown(ctx)
}

// refuse answers status with a plain-text message.
func refuse(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Connection", "close")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}

// truncate keeps client-chosen text in messages and logs short.
func truncate(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}

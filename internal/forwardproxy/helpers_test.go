package forwardproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// regHost is the registry host the tests intercept.
const regHost = "registry.example.test"

// seen records the requests a registry handler got.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	io.WriteString(w, "registry: "+r.URL.RequestURI())
}

func (s *seen) all() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

// env is a Proxy served by an httptest server, intercepting regHost.
type env struct {
	px   *Proxy
	srv  *httptest.Server
	ca   *CA
	reg  *seen
	addr string // the proxy's host:port
	// proxyRoots trust the proxy's own certificate when it is served
	// over TLS (newTLSEnv); nil: plain HTTP.
	proxyRoots *x509.CertPool
}

// newEnv starts a proxy with a fresh CA; edit may change its options.
func newEnv(t *testing.T, edit func(*Options)) *env {
	t.Helper()
	return startEnv(t, edit, false)
}

// newTLSEnv is newEnv with the proxy served over TLS, HTTP/1.1 only:
// its clients speak TLS to it, then CONNECT inside.
func newTLSEnv(t *testing.T, edit func(*Options)) *env {
	t.Helper()
	return startEnv(t, edit, true)
}

func startEnv(t *testing.T, edit func(*Options), overTLS bool) *env {
	t.Helper()
	ca, _, err := LoadCA(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := &seen{}
	opts := Options{Registries: map[string]Registry{regHost: {Handler: reg}}, CA: ca, Others: OthersDeny}
	if edit != nil {
		edit(&opts)
	}
	px, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(px)
	srv.Config.MaxHeaderBytes = 64 << 10
	e := &env{px: px, srv: srv, ca: ca, reg: reg}
	if overTLS {
		srv.EnableHTTP2 = false
		srv.StartTLS()
		e.proxyRoots = x509.NewCertPool()
		e.proxyRoots.AddCert(srv.Certificate())
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	t.Cleanup(func() { px.Shutdown(closedContext()) })
	e.addr = srv.Listener.Addr().String()
	return e
}

// raw sends text to the proxy on a new connection and reads one answer
// (to a CONNECT when connect is set).
func (e *env) raw(t *testing.T, text string, connect bool) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if e.proxyRoots != nil {
		c = tls.Client(c, &tls.Config{ServerName: "example.com", RootCAs: e.proxyRoots})
	}
	if _, err := io.WriteString(c, text); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	req := &http.Request{Method: http.MethodGet}
	if connect {
		req.Method = http.MethodConnect
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", firstLine(text), err)
	}
	return c, br, resp
}

// tlsInto completes a TLS handshake for regHost over an established
// CONNECT, trusting only e's CA.
func (e *env) tlsInto(t *testing.T, c net.Conn) *tls.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.Certificate())
	tc := tls.Client(c, &tls.Config{ServerName: regHost, RootCAs: pool})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS with the intercepted host: %v", err)
	}
	return tc
}

// body reads a response's body as text.
func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// fixedClock is a clock tests move by hand.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fixedClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// closedContext is a context already done: Shutdown closes at once.
func closedContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// open counts the tunnels' connections still tracked.
func (t *tracker) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// envStarter starts a proxy env: newEnv or newTLSEnv.
type envStarter func(*testing.T, func(*Options)) *env

// overPlainAndTLS runs test, in parallel subtests, against a proxy that
// clients speak plain HTTP to and one they speak TLS to.
func overPlainAndTLS(t *testing.T, test func(*testing.T, envStarter)) {
	t.Helper()
	for _, c := range []struct {
		name  string
		start envStarter
	}{{"plain proxy", newEnv}, {"TLS proxy", newTLSEnv}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			test(t, c.start)
		})
	}
}

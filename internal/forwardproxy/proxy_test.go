package forwardproxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// basic is a Proxy-Authorization (or Authorization) header value.
func basic(user, pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
}

// Malformed or misdirected requests get a clear 4xx naming what is wrong,
// never a panic or a hang.
func TestBadRequestsGetClearErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tests := []struct {
		name     string
		text     string
		connect  bool
		status   int
		wantBody string
	}{
		{name: "CONNECT without a port", text: "CONNECT registry.example.test HTTP/1.1\r\nHost: registry.example.test\r\n\r\n", connect: true,
			status: 400, wantBody: "is not host:port"},
		{name: "CONNECT to a malformed host", text: "CONNECT bad_host!:443 HTTP/1.1\r\nHost: bad_host!:443\r\n\r\n", connect: true,
			status: 400, wantBody: "is not a DNS name or IP address"},
		{name: "CONNECT to port 0", text: "CONNECT registry.example.test:0 HTTP/1.1\r\nHost: registry.example.test:0\r\n\r\n", connect: true,
			status: 400, wantBody: "is not a number from 1 to 65535"},
		{name: "CONNECT to another port of a registry", text: "CONNECT registry.example.test:8443 HTTP/1.1\r\nHost: registry.example.test:8443\r\n\r\n", connect: true,
			status: 400, wantBody: "intercepted on port 443 only"},
		{name: "http to another port of a registry", text: "GET http://registry.example.test:8080/v2/ HTTP/1.1\r\nHost: registry.example.test:8080\r\n\r\n",
			status: 400, wantBody: "intercepted on port 80 only"},
		{name: "absolute https", text: "GET https://registry.example.test/v2/ HTTP/1.1\r\nHost: registry.example.test\r\n\r\n",
			status: 400, wantBody: "use CONNECT for https"},
		{name: "absolute-form without a host", text: "GET http:///v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
			status: 400, wantBody: "names no host"},
		{name: "origin-form", text: "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
			status: 400, wantBody: "use it as HTTPS_PROXY"},
		{name: "huge headers", text: "CONNECT registry.example.test:443 HTTP/1.1\r\nHost: registry.example.test\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", connect: true,
			status: 431},
		{name: "other host, deny", text: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", connect: true,
			status: 403, wantBody: "example.com is not a registry this mirror serves, and FORWARD_PROXY_OTHERS=deny"},
		{name: "other http host, deny", text: "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
			status: 403, wantBody: "FORWARD_PROXY_OTHERS=deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, resp := e.raw(t, tt.text, tt.connect)
			got := body(t, resp)
			if resp.StatusCode != tt.status || !strings.Contains(got, tt.wantBody) {
				t.Errorf("%s %q, want %d saying %q", resp.Status, got, tt.status, tt.wantBody)
			}
		})
	}
	if n := len(e.reg.all()); n != 0 {
		t.Errorf("the registry handler got %d requests", n)
	}
}

// Inside an intercepted tunnel every request reaches the registry's
// handler in origin-form, as the CONNECT's login: the client's own
// Authorization (meant for the real registry) never passes, the proxy
// login stands in its place on each request of the connection, whether
// the client speaks plain HTTP or TLS to the proxy (the intercepted TLS
// then runs inside the proxy's).
func TestTunnelRequestsCarryTheConnectLogin(t *testing.T) {
	t.Parallel()
	overPlainAndTLS(t, func(t *testing.T, start envStarter) { interceptCarriesTheConnectLogin(t, start(t, nil)) })
}

// interceptCarriesTheConnectLogin is TestTunnelRequestsCarryTheConnectLogin
// on e: CONNECT, then TLS with the intercepted host inside.
func interceptCarriesTheConnectLogin(t *testing.T, e *env) {
	c, _, resp := e.raw(t, "CONNECT registry.example.test:443 HTTP/1.1\r\nHost: registry.example.test:443\r\nProxy-Authorization: "+basic("alice", "pw")+"\r\n\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	tc := e.tlsInto(t, c)
	br := bufio.NewReader(tc)
	for _, path := range []string{"/v2/", "/v2/team/app/manifests/v1"} {
		io.WriteString(tc, "GET "+path+" HTTP/1.1\r\nHost: registry.example.test\r\nAuthorization: Bearer real-registry-token\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := body(t, resp); got != "registry: "+path {
			t.Errorf("GET %s: %q", path, got)
		}
	}
	reqs := e.reg.all()
	if len(reqs) != 2 {
		t.Fatalf("the registry got %d requests, want 2", len(reqs))
	}
	for _, r := range reqs {
		if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != basic("alice", "pw") {
			t.Errorf("%s: Authorization %q, want only the proxy login", r.URL, got)
		}
		if r.TLS == nil || r.TLS.ServerName != regHost {
			t.Errorf("%s: not served over TLS for %s", r.URL, regHost)
		}
	}

	// Without a proxy login, the client's Authorization is dropped all
	// the same.
	c, _, resp = e.raw(t, "CONNECT registry.example.test:443 HTTP/1.1\r\nHost: registry.example.test:443\r\n\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	tc = e.tlsInto(t, c)
	io.WriteString(tc, "GET /v2/ HTTP/1.1\r\nHost: registry.example.test\r\nAuthorization: Basic QVdTOnRva2Vu\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(tc), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ without a proxy login: %v", err)
	}
	reqs = e.reg.all()
	if got := reqs[len(reqs)-1].Header.Get("Authorization"); got != "" {
		t.Errorf("the client's own Authorization %q reached the registry", got)
	}
}

// A plain http:// request for a registry host is served by its handler
// in origin-form, its Authorization dropped; Docker Hub's API host
// reaches docker.io's handler through the canonical name.
func TestAbsoluteFormIsServedByTheRegistry(t *testing.T) {
	t.Parallel()
	hub := &seen{}
	e := newEnv(t, func(o *Options) {
		o.Registries["docker.io"] = Registry{Handler: hub}
		o.Canonical = func(h string) string {
			if h == "registry-1.docker.io" {
				return "docker.io"
			}
			return strings.ToLower(h)
		}
	})
	_, _, resp := e.raw(t, "GET http://registry-1.docker.io/v2/library/alpine/manifests/3?x=1 HTTP/1.1\r\nHost: registry-1.docker.io\r\nAuthorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\r\n", false)
	if got := body(t, resp); resp.StatusCode != http.StatusOK || got != "registry: /v2/library/alpine/manifests/3?x=1" {
		t.Errorf("%s %q", resp.Status, got)
	}
	reqs := hub.all()
	if len(reqs) != 1 {
		t.Fatalf("docker.io's handler got %d requests", len(reqs))
	}
	r := reqs[0]
	if r.URL.Host != "" || r.URL.Scheme != "" || r.Header.Get("Authorization") != "" || r.Header.Get("Proxy-Connection") != "" {
		t.Errorf("the registry got URL %q with Authorization %q, Proxy-Connection %q", r.URL, r.Header.Get("Authorization"), r.Header.Get("Proxy-Connection"))
	}
}

// The gate decides for every kind of request: a login it asks for is a
// 407 with a Basic Proxy-Authenticate, a network it refuses a 403, and
// an admitted client goes on.
func TestGateRefusesWithProxyStatuses(t *testing.T) {
	t.Parallel()
	gate := GateOf(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.HasPrefix(r.RemoteAddr, "192.0.2."):
				w.WriteHeader(http.StatusForbidden)
			case r.Header.Get("Authorization") != basic("alice", "pw"):
				w.Header().Set("Www-Authenticate", `Basic realm="x"`)
				w.WriteHeader(http.StatusUnauthorized)
			default:
				next.ServeHTTP(w, r)
			}
		})
	})
	e := newEnv(t, func(o *Options) { o.Gate = gate })
	connect := "CONNECT registry.example.test:443 HTTP/1.1\r\nHost: registry.example.test:443\r\n"
	_, _, resp := e.raw(t, connect+"\r\n", true)
	if resp.StatusCode != http.StatusProxyAuthRequired || resp.Header.Get("Proxy-Authenticate") != `Basic realm="ecr-mirror"` {
		t.Errorf("no login: %s, Proxy-Authenticate %q", resp.Status, resp.Header.Get("Proxy-Authenticate"))
	}
	_, _, resp = e.raw(t, connect+"Proxy-Authorization: "+basic("alice", "nope")+"\r\n\r\n", true)
	if got := body(t, resp); resp.StatusCode != http.StatusProxyAuthRequired || !strings.Contains(got, "wrong user name or password") {
		t.Errorf("wrong login: %s %q", resp.Status, got)
	}
	_, _, resp = e.raw(t, "GET http://registry.example.test/v2/ HTTP/1.1\r\nHost: registry.example.test\r\n\r\n", false)
	if resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("absolute-form without a login: %s", resp.Status)
	}
	_, _, resp = e.raw(t, connect+"Proxy-Authorization: "+basic("alice", "pw")+"\r\n\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("right login: %s", resp.Status)
	}
	status, _ := gate(&http.Request{RemoteAddr: "192.0.2.7:1234", Header: http.Header{"Proxy-Authorization": {basic("alice", "pw")}}})
	if status != http.StatusForbidden {
		t.Errorf("a refused network: %d, want 403", status)
	}
}

// With FORWARD_PROXY_OTHERS=tunnel, other hosts are reached untouched,
// but never the mirror's own host or the cloud metadata service.
func TestTunnelGuardsLocalDestinations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *Options) { o.Others = OthersTunnel })
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "local") }))
	t.Cleanup(target.Close)
	for _, addr := range []string{target.Listener.Addr().String(), "169.254.169.254:80", "[fd00:ec2::254]:80", "[::1]:443", "0.0.0.0:80"} {
		_, _, resp := e.raw(t, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n", true)
		if got := body(t, resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(got, "refused") {
			t.Errorf("CONNECT %s: %s %q, want 403 refused", addr, resp.Status, got)
		}
	}
	_, _, resp := e.raw(t, "GET http://"+target.Listener.Addr().String()+"/ HTTP/1.1\r\nHost: "+target.Listener.Addr().String()+"\r\n\r\n", false)
	if got := body(t, resp); resp.StatusCode != http.StatusForbidden || strings.Contains(got, "local") {
		t.Errorf("http to a loopback host: %s %q, want 403", resp.Status, got)
	}
}

// Tunnels and forwarded requests reach other hosts through Options.Dial,
// bytes untouched both ways; Shutdown closes tunnels still open.
func TestTunnelPassesBytesAndShutdownClosesIt(t *testing.T) {
	t.Parallel()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	e := newEnv(t, func(o *Options) {
		o.Others = OthersTunnel
		o.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, echo.Addr().String())
		}
	})
	c, br, resp := e.raw(t, "CONNECT echo.example.test:7 HTTP/1.1\r\nHost: echo.example.test:7\r\n\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	msg := "\x16\x03\x01 any bytes at all\r\n\r\n"
	io.WriteString(c, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the tunnel: %q, %v", got, err)
	}
	e.px.Shutdown(closedContext())
	if _, err := br.ReadByte(); err == nil {
		t.Error("the tunnel is still open after Shutdown")
	}
}

// Inside an intercepted tunnel too, headers past the cap get 431, and
// the registry never sees the request.
func TestTunnelCapsHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, _, resp := e.raw(t, "CONNECT registry.example.test:443 HTTP/1.1\r\nHost: registry.example.test:443\r\n\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	tc := e.tlsInto(t, c)
	go io.WriteString(tc, "GET /v2/ HTTP/1.1\r\nHost: registry.example.test\r\nX-Big: "+strings.Repeat("a", 100<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("huge headers in the tunnel: %s, want 431", resp.Status)
	}
	if n := len(e.reg.all()); n != 0 {
		t.Errorf("the registry handler got %d requests", n)
	}
}

// A tunnel whose server has closed ends even when its client keeps its
// own end open: once one way is done, the other way's reads wait no
// longer than the tunnel's idle limit, and both connections are closed;
// over a TLS proxy connection too (its half-close is TLS's close_notify).
func TestHalfClosedTunnelEnds(t *testing.T) {
	t.Parallel()
	overPlainAndTLS(t, halfClosedTunnelEnds)
}

// halfClosedTunnelEnds is TestHalfClosedTunnelEnds on a proxy start
// serves.
func halfClosedTunnelEnds(t *testing.T, start envStarter) {
	server, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	go func() {
		c, err := server.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "bye")
		c.Close()
	}()
	e := start(t, func(o *Options) {
		o.Others = OthersTunnel
		o.halfClosedIdle = time.Millisecond // the client below never sends again
		o.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server.Addr().String())
		}
	})
	_, br, resp := e.raw(t, "CONNECT closing.example.test:443 HTTP/1.1\r\nHost: closing.example.test:443\r\n\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	if got, err := io.ReadAll(br); string(got) != "bye" || err != nil {
		t.Fatalf("through the tunnel: %q, %v; want bye, then EOF", got, err)
	}
	testwait.Until(t, "the half-closed tunnel to close both its connections", func() bool { return e.px.tunnels.open() == 0 })
}

// The connections of forwarded http:// requests are not kept idle for
// ever: a farm that reaches many hosts must not pile them up.
func TestForwardedConnectionsDoNotStayIdle(t *testing.T) {
	t.Parallel()
	var closed atomic.Int32
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "page") }))
	target.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	target.Start()
	t.Cleanup(target.Close)
	e := newEnv(t, func(o *Options) {
		o.Others = OthersTunnel
		o.forwardIdle = time.Millisecond
		o.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, target.Listener.Addr().String())
		}
	})
	_, _, resp := e.raw(t, "GET http://plain.example.test/ HTTP/1.1\r\nHost: plain.example.test\r\n\r\n", false)
	if got := body(t, resp); resp.StatusCode != http.StatusOK || got != "page" {
		t.Fatalf("forwarded request: %s %q", resp.Status, got)
	}
	testwait.Until(t, "the forwarded request's idle connection to be closed", func() bool { return closed.Load() > 0 })
}

// An intercepted connection whose server is shut down before it took it
// (Shutdown racing the CONNECT) is closed, not left open untracked.
func TestUnacceptedInterceptedConnectionIsClosed(t *testing.T) {
	t.Parallel()
	client, conn := net.Pipe()
	t.Cleanup(func() { client.Close() })
	srv := &http.Server{Handler: http.NotFoundHandler()}
	if err := srv.Shutdown(closedContext()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(newOneConnListener(conn)); err != http.ErrServerClosed {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := client.Read(make([]byte, 1))
		read <- err
	}()
	var err error
	testwait.Until(t, "the connection to be closed", func() bool {
		select {
		case err = <-read:
			return true
		default:
			return false
		}
	})
	if err != io.EOF {
		t.Errorf("client read: %v, want EOF", err)
	}
}

// A tunnel never reaches the mirror's own ports by one of its
// non-loopback addresses either: there the mirror's listeners would
// take the proxy's own address for the client's, and grant what its
// network rules grant that address.
func TestTunnelRefusesTheMirrorsOwnAddresses(t *testing.T) {
	t.Parallel()
	own := ownNonLoopbackAddr(t)
	target, err := net.Listen("tcp", net.JoinHostPort(own, "0"))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", own, err)
	}
	t.Cleanup(func() { target.Close() })
	e := newEnv(t, func(o *Options) { o.Others = OthersTunnel })
	addr := target.Addr().String()
	_, _, resp := e.raw(t, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n", true)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT %s (the mirror's own address): %s, want 403", addr, resp.Status)
	}
	if got := body(t, resp); !strings.Contains(got, "this host's own") {
		t.Errorf("CONNECT %s (the mirror's own address): %s %q, want 403 naming it", addr, resp.Status, got)
	}
}

// ownNonLoopbackAddr is an address of one of this host's interfaces
// that is neither loopback nor link-local; the test is skipped without.
func ownNonLoopbackAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok && !p.IP.IsLoopback() && !p.IP.IsLinkLocalUnicast() {
			return p.IP.String()
		}
	}
	t.Skip("this host has no non-loopback address")
	return ""
}

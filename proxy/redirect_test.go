package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// publicUpstream is the name a test gives the fake when the upstream must
// be of the public class; the dial hook takes it to the fake's loopback
// address, so nothing but loopback is ever dialled.
const publicUpstream = "registry.test"

// dialLog is the dial hook under a RedirectPolicy: it records every
// address the policy lets through and connects only to loopback.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
	alias map[string]string // name:port to dial instead as loopback
}

func (d *dialLog) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	to, ok := d.alias[addr]
	d.mu.Unlock()
	if ok {
		addr = to
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
		return nil, fmt.Errorf("test dialer: %s is not a loopback address; refusing to dial it", addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// dialled reports whether any dial went to an address containing s.
func (d *dialLog) dialled(s string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.addrs {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

// testLookup resolves the names the tests use: internal.test to loopback,
// metadata.test to the cloud metadata address, private.test to 10.0.0.7.
func testLookup(_ context.Context, host string) ([]netip.Addr, error) {
	switch host {
	case "internal.test", "xn--internl-hwa.test":
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
	case "metadata.test":
		return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
	case "private.test":
		return []netip.Addr{netip.MustParseAddr("10.0.0.7")}, nil
	case "public.test":
		return []netip.Addr{netip.MustParseAddr("203.0.113.9")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// newRedirectEnv is newEnv with the policy's dial and lookup hooked: the
// mirror's upstream is the fake by its loopback address, or, with public
// set, by the name publicUpstream.
func newRedirectEnv(t *testing.T, public bool) (*testEnv, *dialLog) {
	t.Helper()
	dl := &dialLog{alias: map[string]string{}}
	o := envOptions{handlerLog: true, dial: dl.dial, lookup: testLookup}
	if public {
		o.upstream = func(u *url.URL) {
			named := publicUpstream + ":" + u.Port()
			dl.alias[named] = u.Host
			u.Host = named
		}
	}
	return newEnv(t, o), dl
}

// sawServer is an HTTP server on loopback that records what it is asked:
// the target of a redirect that must never be followed, or the hops of a
// chain. /hop/<n> redirects to /hop/<n-1>; /hop/0 redirects to final.
type sawServer struct {
	*httptest.Server
	final string // where /hop/0 redirects; "" answers 200 "internal"

	mu       sync.Mutex
	paths    []string
	referers []string
}

func newSawServer(t *testing.T) *sawServer {
	t.Helper()
	s := &sawServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.Path)
		s.referers = append(s.referers, r.Header.Get("Referer"))
		final := s.final
		s.mu.Unlock()
		if n, ok := strings.CutPrefix(r.URL.Path, "/hop/"); ok {
			i, _ := strconv.Atoi(n)
			to := fmt.Sprintf("/hop/%d", i-1)
			if i == 0 {
				to = final
			}
			http.Redirect(w, r, to, http.StatusTemporaryRedirect)
			return
		}
		_, _ = w.Write([]byte("internal secrets"))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sawServer) requests() (paths, referers []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...), append([]string(nil), s.referers...)
}

// wantRefused checks a client's answer to a blob GET whose upstream
// redirect was refused: 502 with an OCI error body that names none of
// leaks.
func wantRefused(t *testing.T, resp *http.Response, body []byte, leaks ...string) {
	t.Helper()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502; body %s", resp.StatusCode, body)
	}
	var eb struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0].Code != string(registry.CodeUnavailable) {
		t.Errorf("body %s is not one OCI UNAVAILABLE error (%v)", body, err)
	}
	for _, l := range leaks {
		if l != "" && strings.Contains(string(body), l) {
			t.Errorf("client-facing body %s names %q", body, l)
		}
	}
}

func TestRefusedRedirectsAreNeitherFollowedNorShown(t *testing.T) {
	t.Parallel()
	const secret = "X-Amz-Signature=sekrit"
	tests := []struct {
		name   string
		public bool // upstream of the public class (by name)
		// location builds the redirect target from the internal
		// server's host:port.
		location func(internal string) string
		never    string // the dial hook must never see this
	}{
		{name: "loopback literal from a public upstream", public: true,
			location: func(in string) string { return "http://" + in + "/internal?" + secret }},
		{name: "name resolving to loopback from a public upstream", public: true,
			location: func(in string) string {
				_, port, _ := net.SplitHostPort(in)
				return "http://internal.test:" + port + "/internal?" + secret
			}},
		{name: "localhost from a public upstream", public: true,
			location: func(in string) string {
				_, port, _ := net.SplitHostPort(in)
				return "http://localhost:" + port + "/internal?" + secret
			}},
		{name: "file", location: func(string) string { return "file:///etc/passwd" }, never: "passwd"},
		{name: "ftp", location: func(in string) string { return "ftp://" + in + "/internal?" + secret }},
		{name: "cloud metadata literal", location: func(string) string { return "http://169.254.169.254/latest/meta-data/?" + secret }, never: "169.254"},
		{name: "cloud metadata by name", location: func(string) string { return "http://metadata.test/latest/meta-data/?" + secret }, never: "169.254"},
		{name: "private literal from a loopback upstream", location: func(string) string { return "http://10.1.2.3:8080/internal?" + secret }, never: "10.1.2.3"},
		{name: "name resolving to private from a loopback upstream", location: func(string) string { return "http://private.test/internal?" + secret }, never: "10.0.0.7"},
		{name: "chain of six redirects", location: func(in string) string { return "http://" + in + "/hop/3" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, dl := newRedirectEnv(t, tt.public)
			internal := newSawServer(t)
			internalAddr := strings.TrimPrefix(internal.URL, "http://")
			_, internalPort, _ := net.SplitHostPort(internalAddr)
			data := testkit.RandomBytes(7, 4096)
			dgst := e.fake.PutBlob("team/app", data)
			loc := tt.location(internalAddr)
			// The chain: registry → hop/3 → 2 → 1 → 0 → registry → S3,
			// six redirects; the last one, to S3, must be refused.
			internal.final = e.fake.URL() + "/v2/team/app/blobs/" + dgst.String()
			e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultRedirect, Location: loc, Times: 1})

			resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil)
			target, _ := url.Parse(loc)
			wantRefused(t, resp, body, target.Host, target.Hostname(), target.Path, target.RawQuery,
				"sekrit", "X-Amz", "passwd", "/internal", "/hop", internalPort, string(data[:16]))
			if strings.Contains(string(body), "internal secrets") {
				t.Errorf("the target's answer reached the client: %s", body)
			}
			paths, _ := internal.requests()
			if strings.Contains(tt.name, "chain") {
				if len(paths) != 4 {
					t.Errorf("hop server saw %v, want the four hops", paths)
				}
				if n := e.fake.Counters().S3Get[dgst]; n != 0 {
					t.Errorf("S3 served the blob %d times past the sixth redirect", n)
				}
			} else if len(paths) != 0 {
				t.Errorf("the redirect target was asked for %v", paths)
			}
			if tt.never != "" && dl.dialled(tt.never) {
				t.Errorf("the policy let a dial to %s through", tt.never)
			}
			if !strings.Contains(tt.name, "chain") && dl.dialled(internalPort) {
				t.Errorf("the policy let a dial to the internal server's port %s through", internalPort)
			}
			e.assertNotStored(t, dgst)
			if logs := e.logs.String(); strings.Contains(logs, "sekrit") {
				t.Errorf("the log holds the target's query:\n%s", logs)
			}
		})
	}
}

func TestRedirectChainOfFiveFollowedWithoutReferer(t *testing.T) {
	t.Parallel()
	e, _ := newRedirectEnv(t, false)
	hops := newSawServer(t)
	data := testkit.RandomBytes(8, 4096)
	dgst := e.fake.PutBlob("team/app", data)
	// registry → hop/2 → 1 → 0 → registry → S3: five redirects.
	hops.final = e.fake.URL() + "/v2/team/app/blobs/" + dgst.String()
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultRedirect, Location: hops.URL + "/hop/2", Times: 1})

	resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil)
	if resp.StatusCode != http.StatusOK || string(body) != string(data) {
		t.Fatalf("got %d with %d bytes, want 200 with the blob; body %.200s", resp.StatusCode, len(body), body)
	}
	_, refs := hops.requests()
	for _, r := range e.fake.Counters().Requests {
		refs = append(refs, r.Referer)
	}
	for _, r := range refs {
		if r != "" {
			t.Errorf("an upstream request carried Referer %q", r)
		}
	}
}

func TestS3RedirectCarriesNoReferer(t *testing.T) {
	t.Parallel()
	e, _ := newRedirectEnv(t, false)
	data := testkit.RandomBytes(9, 4096)
	dgst := e.fake.PutBlob("team/app", data)
	// S3 sends the mirror on to where the same bytes are; net/http would
	// tell that host the presigned URL in Referer.
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ref := r.Header.Get("Referer"); ref != "" {
			t.Errorf("the host after S3 got Referer %q", ref)
		}
		_, _ = w.Write(data)
	}))
	t.Cleanup(next.Close)
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultRedirect, Endpoint: fakeecr.EndpointS3, Location: next.URL + "/blob"})

	resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil)
	if resp.StatusCode != http.StatusOK || string(body) != string(data) {
		t.Fatalf("got %d with %d bytes, want 200 with the blob", resp.StatusCode, len(body))
	}
	for _, r := range e.fake.Counters().Requests {
		if r.Referer != "" {
			t.Errorf("%s %s carried Referer %q", r.Endpoint, r.Path, r.Referer)
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	t.Parallel()
	via := func(n int) []*http.Request { return make([]*http.Request, n) }
	tests := []struct {
		name, upstream, target string
		via                    int // requests made before this redirect
		ok                     bool
	}{
		{name: "https to S3", upstream: "https://1.dkr.ecr.eu-west-1.amazonaws.com", target: "https://bucket.s3.eu-west-1.amazonaws.com/x?X-Amz-Signature=s", via: 1, ok: true},
		{name: "fifth redirect", upstream: "https://r.example", target: "https://s3.example/x", via: 5, ok: true},
		{name: "sixth redirect", upstream: "https://r.example", target: "https://s3.example/x", via: 6},
		{name: "http from https", upstream: "https://r.example", target: "http://s3.example/x", via: 1},
		{name: "http from http", upstream: "http://127.0.0.1:5000", target: "http://127.0.0.1:5001/x", via: 1, ok: true},
		{name: "file", upstream: "http://127.0.0.1:5000", target: "file:///etc/passwd", via: 1},
		{name: "ftp", upstream: "http://127.0.0.1:5000", target: "ftp://127.0.0.1/x", via: 1},
		{name: "gopher", upstream: "https://r.example", target: "gopher://s3.example/x", via: 1},
		{name: "no host", upstream: "https://r.example", target: "https:///x", via: 1},
		{name: "loopback from public", upstream: "https://r.example", target: "https://127.0.0.1/x", via: 1},
		{name: "localhost from public", upstream: "https://r.example", target: "https://localhost/x", via: 1},
		{name: "loopback v6 from public", upstream: "https://r.example", target: "https://[::1]/x", via: 1},
		{name: "mapped loopback from public", upstream: "https://r.example", target: "https://[::ffff:127.0.0.1]/x", via: 1},
		{name: "nat64 loopback from public", upstream: "https://r.example", target: "https://[64:ff9b::7f00:1]/x", via: 1},
		{name: "loopback from loopback", upstream: "http://127.0.0.1:5000", target: "http://127.0.0.2:9/x", via: 1, ok: true},
		{name: "loopback from localhost", upstream: "http://localhost:5000", target: "http://[::1]:9/x", via: 1, ok: true},
		{name: "private from loopback", upstream: "http://127.0.0.1:5000", target: "http://10.1.2.3/x", via: 1},
		{name: "private from public", upstream: "https://r.example", target: "https://192.168.1.1/x", via: 1},
		{name: "ula from public", upstream: "https://r.example", target: "https://[fd00::1]/x", via: 1},
		{name: "private from private", upstream: "https://10.0.0.5", target: "https://10.9.9.9/x", via: 1, ok: true},
		{name: "loopback from private", upstream: "https://10.0.0.5", target: "https://127.0.0.1/x", via: 1},
		{name: "metadata from loopback", upstream: "http://127.0.0.1:5000", target: "http://169.254.169.254/latest/meta-data/", via: 1},
		{name: "metadata from link-local", upstream: "http://169.254.1.1", target: "http://169.254.169.254/", via: 1},
		{name: "link-local v6", upstream: "https://r.example", target: "https://[fe80::1]/x", via: 1},
		{name: "unspecified", upstream: "http://127.0.0.1:5000", target: "http://0.0.0.0:5000/x", via: 1},
		{name: "this network", upstream: "http://127.0.0.1:5000", target: "http://0.1.2.3/x", via: 1},
		{name: "multicast", upstream: "https://r.example", target: "https://224.0.0.1/x", via: 1},
		{name: "broadcast", upstream: "https://r.example", target: "https://255.255.255.255/x", via: 1},
		{name: "public literal", upstream: "https://r.example", target: "https://203.0.113.9/x", via: 1, ok: true},
		{name: "name (checked when dialled)", upstream: "https://r.example", target: "https://internal.test/x", via: 1, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up, err := url.Parse(tt.upstream)
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodGet, tt.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Referer", "https://bucket.s3.example/x?X-Amz-Signature=s")
			err = NewRedirectPolicy(up).CheckRedirect(req, via(tt.via))
			if (err == nil) != tt.ok {
				t.Errorf("CheckRedirect(%s from %s) = %v, want allowed: %v", tt.target, tt.upstream, err, tt.ok)
			}
			if err != nil && (strings.Contains(err.Error(), "X-Amz") || len(req.URL.Path) > 1 && strings.Contains(err.Error(), req.URL.Path)) {
				t.Errorf("error %q names the target's path or query", err)
			}
			if ref := req.Header.Get("Referer"); ref != "" {
				t.Errorf("Referer %q left on the redirect", ref)
			}
		})
	}
}

func TestRedirectDialGuard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, upstream, addr string
		proxy                string // the request's proxy host:port in the dial context; "": none
		wantDial             string // what reaches the dial hook; "": refused before it
	}{
		{name: "upstream by name", upstream: "https://r.example", addr: "r.example:443", wantDial: "r.example:443"},
		{name: "upstream private literal", upstream: "https://10.0.0.5", addr: "10.0.0.5:443", wantDial: "10.0.0.5:443"},
		{name: "metadata literal", upstream: "http://127.0.0.1:5000", addr: "169.254.169.254:80"},
		{name: "metadata by name", upstream: "https://r.example", addr: "metadata.test:443"},
		{name: "private literal", upstream: "http://127.0.0.1:5000", addr: "10.1.2.3:80"},
		{name: "name to private", upstream: "http://127.0.0.1:5000", addr: "private.test:80"},
		{name: "name to loopback from public", upstream: "https://r.example", addr: "internal.test:443"},
		{name: "localhost from public", upstream: "https://r.example", addr: "127.0.0.1:443"},
		{name: "unknown name", upstream: "https://r.example", addr: "nowhere.test:443"},
		{name: "name to loopback from loopback", upstream: "http://127.0.0.1:5000", addr: "internal.test:80", wantDial: "127.0.0.1:80"},
		{name: "name to public", upstream: "https://r.example", addr: "public.test:443", wantDial: "203.0.113.9:443"},
		{name: "proxy of a request", upstream: "https://r.example", addr: "10.0.0.3:3128", proxy: "10.0.0.3:3128", wantDial: "10.0.0.3:3128"},
		{name: "another address than the proxy", upstream: "https://r.example", addr: "private.test:443", proxy: "10.0.0.3:3128"},
		{name: "unicode name not taken for a proxy", upstream: "https://r.example", addr: "xn--internl-hwa.test:443", proxy: "internäl.test:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up, err := url.Parse(tt.upstream)
			if err != nil {
				t.Fatal(err)
			}
			p := NewRedirectPolicy(up)
			p.lookup = testLookup
			var dialled []string
			errNoNet := errors.New("test: no network")
			dial := p.dialContext(func(_ context.Context, _, addr string) (net.Conn, error) {
				dialled = append(dialled, addr)
				return nil, errNoNet // never connects anywhere
			})
			ctx := t.Context()
			if tt.proxy != "" {
				ctx = context.WithValue(ctx, proxyAddrKey{}, tt.proxy)
			}
			_, err = dial(ctx, "tcp", tt.addr)
			if tt.wantDial == "" {
				var re *redirectError
				if len(dialled) != 0 || !errors.As(err, &re) && !strings.Contains(tt.name, "unknown") {
					t.Errorf("dial %s: hook saw %v, error %v; want refused before dialling", tt.addr, dialled, err)
				}
				return
			}
			if len(dialled) == 0 || dialled[0] != tt.wantDial || !errors.Is(err, errNoNet) {
				t.Errorf("dial %s: hook saw %v, error %v; want a dial of %s first", tt.addr, dialled, err, tt.wantDial)
			}
		})
	}
}

func TestTransportErrorNamesNoRedirectTarget(t *testing.T) {
	t.Parallel()
	target, _ := url.Parse("http://10.1.2.3:8080/internal/path?X-Amz-Signature=sekrit")
	for _, cause := range []error{
		&url.Error{Op: "Get", URL: "https://bucket.s3.example/sha256/abc?X-Amz-Signature=sekrit", Err: &redirectError{target: target, reason: "private address"}},
		&url.Error{Op: "Get", URL: target.String(), Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}},
		&url.Error{Op: "Get", URL: target.String(), Err: timeoutErr{}},
	} {
		err := transportError(http.MethodGet, "team/app/blobs/sha256:abc", cause)
		var e *registry.Error
		if !errors.As(err, &e) {
			t.Fatalf("transportError(%v) = %T, want *registry.Error", cause, err)
		}
		for _, leak := range []string{"10.1.2.3", "8080", "/internal", "sekrit", "X-Amz", "bucket.s3"} {
			if strings.Contains(e.Message, leak) {
				t.Errorf("client message %q names %q", e.Message, leak)
			}
		}
		if strings.Contains(e.Internal, "sekrit") {
			t.Errorf("Internal %q keeps the query", e.Internal)
		}
	}
}

// An HTTPS_PROXY on a private address is the operator's: requests reach
// it, while the redirect targets behind it are the proxy's to resolve.
func TestRedirectPolicyClientDialsTheProxy(t *testing.T) {
	t.Parallel()
	up, _ := url.Parse("https://r.example")
	p := NewRedirectPolicy(up)
	p.lookup = testLookup
	proxyURL, _ := url.Parse("http://10.0.0.3:3128")
	var mu sync.Mutex
	var dialled []string
	errNoNet := errors.New("test: no network")
	base := &http.Transport{
		Proxy: http.ProxyURL(proxyURL),
		DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
			mu.Lock()
			defer mu.Unlock()
			dialled = append(dialled, addr)
			return nil, errNoNet // never connects anywhere
		},
	}
	c := p.Client(base, nil)
	defer c.CloseIdleConnections()
	_, err := c.Get("https://public.test/x")
	mu.Lock()
	defer mu.Unlock()
	if !errors.Is(err, errNoNet) || len(dialled) != 1 || dialled[0] != "10.0.0.3:3128" {
		t.Errorf("through the proxy: dialled %v, error %v; want one dial of the proxy", dialled, err)
	}
}

package servergroup

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

// recordingLimits records what they were asked to limit.
type recordingLimits struct {
	listeners int
	handlers  int
}

func (l *recordingLimits) Listener(ln net.Listener, _ *tls.Config) net.Listener {
	l.listeners++
	return ln
}

func (l *recordingLimits) Handler(h http.Handler) http.Handler {
	l.handlers++
	return h
}

// Listen opens every listener, counts only the limited ones' connections
// and names their addresses; every handler is watched.
func TestListenLimitsTheLimitedListeners(t *testing.T) {
	t.Parallel()
	limits := &recordingLimits{}
	servers, addrs, err := Listen([]Listener{
		{Setting: "LISTEN_ADDR", Addr: "127.0.0.1:0", Handler: http.NotFoundHandler(), TLS: &tls.Config{}, Limited: true},
		{Setting: "METRICS_ADDR", Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()},
	}, limits, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Listener.Close()
		}
	})
	if len(servers) != 2 || len(addrs) != 1 || addrs[0] != servers[0].Listener.Addr() {
		t.Fatalf("%d servers, addrs %v: want 2 servers and the first one's address", len(servers), addrs)
	}
	if !servers[0].TLS || servers[1].TLS || !strings.HasPrefix(servers[1].Name, "METRICS_ADDR 127.0.0.1:") {
		t.Fatalf("servers %q (TLS %v) and %q (TLS %v)", servers[0].Name, servers[0].TLS, servers[1].Name, servers[1].TLS)
	}
	if limits.listeners != 1 || limits.handlers != 2 {
		t.Fatalf("%d listeners and %d handlers limited, want 1 and 2", limits.listeners, limits.handlers)
	}
}

// An address that cannot be listened on fails Listen, naming the
// setting and the address, and closes the listeners already open.
func TestListenClosesWhatItOpenedOnAnError(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	// A free address for the first listener, which Listen must close.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	_, _, err = Listen([]Listener{
		{Setting: "LISTEN_ADDR", Addr: addr, Handler: http.NotFoundHandler(), Limited: true},
		{Setting: "PPROF_ADDR", Addr: taken.Addr().String(), Handler: http.NotFoundHandler()},
	}, &recordingLimits{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.HasPrefix(err.Error(), "PPROF_ADDR "+taken.Addr().String()+": ") {
		t.Fatalf("Listen on a taken address: %v, want an error naming PPROF_ADDR and %s", err, taken.Addr())
	}
	// The first listener was closed: its address is free again.
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the first listener's address %s is still taken: %v", addr, err)
	}
	again.Close()
}

// An HTTP1Only listener's server never offers HTTP/2; the others keep
// the default (HTTP/2 over TLS).
func TestListenHTTP1OnlyLeavesHTTP2Out(t *testing.T) {
	t.Parallel()
	servers, _, err := Listen([]Listener{
		{Setting: "FORWARD_PROXY_ADDR", Addr: "127.0.0.1:0", Handler: http.NotFoundHandler(), TLS: &tls.Config{}, HTTP1Only: true},
		{Setting: "LISTEN_ADDR", Addr: "127.0.0.1:0", Handler: http.NotFoundHandler(), TLS: &tls.Config{}},
	}, &recordingLimits{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Listener.Close()
		}
	})
	if p := servers[0].HTTP.Protocols; p == nil || p.HTTP2() || p.UnencryptedHTTP2() || !p.HTTP1() {
		t.Errorf("HTTP1Only listener's protocols %v, want HTTP/1 alone", p)
	}
	if servers[1].HTTP.Protocols != nil {
		t.Errorf("other listener's protocols %v, want the default", servers[1].HTTP.Protocols)
	}
}

package servergroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// watchedListener reports when it is closed, and can be made to fail
// Accept.
type watchedListener struct {
	net.Listener
	closed    chan struct{}
	isClosed  atomic.Bool
	acceptErr error
}

func newWatchedListener(t *testing.T, acceptErr error) *watchedListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &watchedListener{Listener: ln, closed: make(chan struct{}), acceptErr: acceptErr}
}

func (l *watchedListener) Accept() (net.Conn, error) {
	if l.acceptErr != nil {
		return nil, l.acceptErr
	}
	return l.Listener.Accept()
}

func (l *watchedListener) Close() error {
	if l.isClosed.CompareAndSwap(false, true) {
		close(l.closed)
	}
	return l.Listener.Close()
}

// A listener that fails ends Serve with an error naming it, after the
// other servers are shut down.
func TestServeAllReportsAFailingListener(t *testing.T) {
	t.Parallel()
	good := newWatchedListener(t, nil)
	bad := newWatchedListener(t, errors.New("accept: broken socket"))
	admin := newWatchedListener(t, nil)
	servers := []Server{
		{Name: "LISTEN_ADDR good", HTTP: &http.Server{Handler: http.NotFoundHandler()}, Listener: good},
		{Name: "METRICS_ADDR bad", HTTP: &http.Server{Handler: http.NotFoundHandler()}, Listener: bad},
		{Name: "admin socket", HTTP: &http.Server{Handler: http.NotFoundHandler()}, Listener: admin, Late: true},
	}
	err := Serve(context.Background(), servers, time.Minute, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "METRICS_ADDR bad") || !strings.Contains(err.Error(), "broken socket") {
		t.Fatalf("Serve = %v, want the failure naming METRICS_ADDR bad", err)
	}
	if !good.isClosed.Load() || !admin.isClosed.Load() {
		t.Fatalf("after the failure: good listener closed %v, admin closed %v; want both", good.isClosed.Load(), admin.isClosed.Load())
	}
}

// At shutdown the late servers (the admin socket) keep accepting until
// the others' in-flight requests are done, and every request in flight
// finishes within the grace.
func TestServeAllShutsLateServersDownLast(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{})
	held := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	api := newWatchedListener(t, nil)
	late := newWatchedListener(t, nil)
	servers := []Server{
		{Name: "LISTEN_ADDR", HTTP: &http.Server{Handler: held}, Listener: api},
		{Name: "admin socket", HTTP: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "admin") })}, Listener: late, Late: true},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, servers, time.Minute, slog.New(slog.DiscardHandler)) }()

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + api.Addr().String() + "/")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-started
	cancel()
	<-api.closed
	// The API's request is still held, so the admin socket still serves.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + late.Addr().String() + "/")
	if err != nil {
		t.Fatalf("admin socket during the API's drain: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "admin" {
		t.Fatalf("admin socket answered %q", b)
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "finished" {
		t.Fatalf("held request: %q, %v; want it finished", r.body, r.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if !late.isClosed.Load() {
		t.Fatal("admin listener left open")
	}
}

// A server's goroutine fails the group only for a failure to serve,
// naming the server; being shut down is no failure.
func TestServerServeNamesFailuresOnly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		acceptErr error
		shutdown  bool
		wantErr   string // "": nil
	}{
		{name: "shut down", shutdown: true},
		{name: "accept fails", acceptErr: errors.New("accept: broken socket"), wantErr: "serving PPROF_ADDR x: accept: broken socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := Server{Name: "PPROF_ADDR x", HTTP: &http.Server{Handler: http.NotFoundHandler()}, Listener: newWatchedListener(t, tt.acceptErr)}
			if tt.shutdown {
				s.HTTP.Shutdown(context.Background()) // before Serve: it returns ErrServerClosed at once
			}
			err := s.serve()
			if got := fmt.Sprint(err); tt.wantErr == "" && err != nil || tt.wantErr != "" && got != tt.wantErr {
				t.Fatalf("serve() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

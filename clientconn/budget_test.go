package clientconn

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// heldConn opens a connection to s, plain or TLS (HTTP/1.1), answers
// one GET / on it and keeps it open (idle, kept alive).
func heldConn(t *testing.T, s *testServer) (net.Conn, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if tr := s.client.Transport.(*http.Transport); tr.TLSClientConfig != nil {
		cfg := tr.TLSClientConfig.Clone()
		cfg.NextProtos, cfg.ServerName = []string{"http/1.1"}, "127.0.0.1"
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		c = tc
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", s.addr); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return c, resp
}

// With max connections open, the next one is answered 503 UNAVAILABLE
// with Retry-After in OCI error form and closed; a connection closed
// frees its place for a new one. Over TLS the answer comes over TLS.
func TestBudgetRefusesPastItsLimit(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			t.Parallel()
			const limit = 5
			b, err := NewBudget(limit, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, "{}")
			}), b, useTLS)
			var held []net.Conn
			for i := range limit {
				c, resp := heldConn(t, s)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("connection %d: status %d", i, resp.StatusCode)
				}
				held = append(held, c)
			}
			if got := b.Open(); got != limit {
				t.Fatalf("Open() = %d, want %d", got, limit)
			}
			c, resp := heldConn(t, s)
			var e struct {
				Errors []struct{ Code, Message string }
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
				json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNAVAILABLE" {
				t.Fatalf("connection past the limit: %d, Retry-After %q, body %s; want 503 UNAVAILABLE with Retry-After",
					resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatalf("the refused connection stayed open (read %d bytes)", n)
			}
			if got := b.Refused(); got != 1 {
				t.Errorf("Refused() = %d, want 1", got)
			}

			held[0].Close()
			testwait.Until(t, "a place freed by a closed connection", func() bool { return b.Open() < limit })
			if _, resp := heldConn(t, s); resp.StatusCode != http.StatusOK {
				t.Fatalf("a new connection after one closed: status %d", resp.StatusCode)
			}
			for _, c := range held[1:] {
				c.Close()
			}
			testwait.Until(t, "the count back at one", func() bool { return b.Open() == 1 })
		})
	}
}

func TestDescriptorBudget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		nofile uint64
		want   int
	}{
		{nofile: 1 << 20, want: (1<<20 - Reserve) / 2},
		{nofile: 65536, want: (65536 - Reserve) / 2},
		{nofile: 1024, want: 256},
		{nofile: 256, want: 64},
		{nofile: 2, want: 1},
		{nofile: 1 << 62, want: 1 << 30},
	}
	for _, tc := range tests {
		if got := DescriptorBudget(tc.nofile); got != tc.want {
			t.Errorf("DescriptorBudget(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
}

func TestNewBudgetRefusesNonPositive(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, -1} {
		if _, err := NewBudget(n, nil); err == nil {
			t.Errorf("NewBudget(%d) accepted", n)
		}
	}
}

// MAX_CLIENT_CONNECTIONS wins when set; unset, the budget is what the
// open-file limit allows.
func TestClientBudget(t *testing.T) {
	t.Parallel()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if got, want := BudgetFor(0, log), DescriptorBudget(rl.Cur); got != want {
		t.Errorf("BudgetFor(unset) = %d, want %d for an open-file limit of %d", got, want, rl.Cur)
	}
	if got := BudgetFor(5, log); got != 5 {
		t.Errorf("BudgetFor(5) = %d", got)
	}
}

// A MAX_CLIENT_CONNECTIONS above what the open-file limit allows is kept,
// with a warning; one within it is kept quietly.
func TestBudgetForWarnsPastTheLimit(t *testing.T) {
	t.Parallel()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	allowed := DescriptorBudget(rl.Cur)
	tests := []struct {
		name string
		set  int
		warn bool
	}{
		{name: "unset", set: 0},
		{name: "within", set: allowed},
		{name: "past", set: allowed + 1, warn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			got := BudgetFor(tt.set, slog.New(slog.NewTextHandler(&logs, nil)))
			if want := cmp.Or(tt.set, allowed); got != want {
				t.Errorf("BudgetFor(%d) = %d, want %d", tt.set, got, want)
			}
			if warned := strings.Contains(logs.String(), "MAX_CLIENT_CONNECTIONS is more than the open-file limit allows"); warned != tt.warn {
				t.Errorf("warned %v, want %v; logs:\n%s", warned, tt.warn, logs.String())
			}
		})
	}
}

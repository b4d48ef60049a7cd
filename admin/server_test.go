package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// serve runs a Service on a fresh store in dir behind its admin socket.
func serve(t *testing.T, dir string) *cache.Store {
	t.Helper()
	store, err := cache.Open(cache.Options{Dir: dir, MaxSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewHandler(NewService(store, nil, ""), nil, slog.New(slog.DiscardHandler))}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		ln.Close()
		store.Close()
	})
	return store
}

func TestSocketOwnerOnly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dir  string
	}{
		{name: "short path", dir: t.TempDir()},
		// Longer than a socket address holds: reached through /proc.
		{name: "long path", dir: filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.MkdirAll(tt.dir, 0o755); err != nil {
				t.Fatal(err)
			}
			store := serve(t, tt.dir)
			fi, err := os.Stat(filepath.Join(tt.dir, SocketName))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
				t.Errorf("admin socket mode %v, want a socket with 0600", fi.Mode())
			}
			leftovers, _ := filepath.Glob(filepath.Join(tt.dir, ".admin-*"))
			if len(leftovers) != 0 {
				t.Errorf("private directories left: %v", leftovers)
			}
			c, err := Dial(context.Background(), tt.dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			data := []byte("content")
			if err := store.Put(digest.FromBytes(data), "application/octet-stream", data); err != nil {
				t.Fatal(err)
			}
			l, err := c.List(context.Background())
			if err != nil || len(l.Entries) != 1 || l.Entries[0].Digest != digest.FromBytes(data) {
				t.Fatalf("List over the socket: %+v, %v", l, err)
			}
		})
	}
}

func TestDialNotRunning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Dial(context.Background(), dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial with no socket: %v, want ErrNotRunning", err)
	}
	// A socket left by a mirror that died: nobody listens on it.
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	ul := ln.(*socketListener).Listener
	ul.Close() // closes without unlinking, as a killed process would
	if _, err := os.Stat(filepath.Join(dir, SocketName)); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(context.Background(), dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial with a dead socket: %v, want ErrNotRunning", err)
	}
	// A new mirror replaces it.
	serve(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := Dial(ctx, dir); err != nil {
		t.Errorf("Dial after a restart: %v", err)
	}
}

func TestOperationErrorsCrossTheSocket(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	serve(t, dir)
	c, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	missing := digest.FromString("missing")
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{name: "pin of a bad name", call: func() error { _, err := c.Pin(ctx, "Bad Name", PinOptions{}); return err }, want: "invalid"},
		{name: "pin of an unknown tag", call: func() error { _, err := c.Pin(ctx, "team/app:v1", PinOptions{}); return err }, want: "no record of tag team/app:v1"},
		{name: "unpin of what is not pinned", call: func() error { _, err := c.Unpin(ctx, "team/app@"+missing.String()); return err }, want: "is not pinned"},
		{name: "purge of nothing", call: func() error { _, err := c.Purge(ctx, PurgeRequest{}); return err }, want: "exactly one"},
		{name: "purge of an absent digest", call: func() error { _, err := c.Purge(ctx, PurgeRequest{Image: missing.String()}); return err }, want: "not in the cache"},
		{name: "import of garbage", call: func() error { _, err := c.Import(ctx, strings.NewReader("not a tar")); return err }, want: "import"},
	}
	for _, tt := range tests {
		err := tt.call()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// NewServer serves the cache commands on the socket in dir, and the
// registry API it is given under /v2/.
func TestNewServerServesTheCommandsAndTheAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store, err := cache.Open(cache.Options{Dir: dir, MaxSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("api " + r.URL.Path)) })
	srv, ln, err := NewServer(dir, store, "", api, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); ln.Close() })
	c, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.List(context.Background()); err != nil {
		t.Fatalf("cache ls over the socket: %v", err)
	}
	viaSocket := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, SocketName))
	}}}
	resp, err := viaSocket.Get("http://ecr-mirror/v2/team/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "api /v2/team/app/manifests/v1" {
		t.Fatalf("GET /v2/... over the socket: %q, want the API's answer", body)
	}
}

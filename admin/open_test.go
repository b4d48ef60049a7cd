package admin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// OpenStore refuses what is no store, unless asked to create one, and a
// store a running mirror holds.
func TestOpenStore(t *testing.T) {
	t.Parallel()
	existing := func(t *testing.T) string {
		dir := t.TempDir()
		s, err := cache.Open(cache.Options{Dir: dir, MaxSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return dir
	}
	tests := []struct {
		name    string
		opts    func(t *testing.T) StoreOptions
		wantErr string // "" when it opens
		locked  bool   // the error wraps cache.ErrLocked
	}{
		{name: "no directory", opts: func(*testing.T) StoreOptions { return StoreOptions{MaxSize: 1 << 20} },
			wantErr: "no cache directory: set --cache-dir or CACHE_DIR"},
		{name: "no index", opts: func(t *testing.T) StoreOptions { return StoreOptions{Dir: t.TempDir(), MaxSize: 1 << 20} },
			wantErr: "is not a cache directory: it has no index/"},
		{name: "created", opts: func(t *testing.T) StoreOptions {
			return StoreOptions{Dir: t.TempDir(), MaxSize: 1 << 20, Create: true}
		}},
		{name: "existing", opts: func(t *testing.T) StoreOptions { return StoreOptions{Dir: existing(t), MaxSize: 1 << 20} }},
		{name: "existing, read-only", opts: func(t *testing.T) StoreOptions {
			return StoreOptions{Dir: existing(t), MaxSize: 1 << 20, ReadOnly: true}
		}},
		{name: "held by a running mirror", opts: func(t *testing.T) StoreOptions {
			dir := t.TempDir()
			s, err := cache.Open(cache.Options{Dir: dir, MaxSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return StoreOptions{Dir: dir, MaxSize: 1 << 20}
		}, wantErr: "is locked by a running mirror whose admin socket", locked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := OpenStore(tt.opts(t))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("OpenStore: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("OpenStore opened a store, want an error with %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || errors.Is(err, cache.ErrLocked) != tt.locked {
				t.Errorf("OpenStore: %v, want an error with %q (wrapping ErrLocked: %v)", err, tt.wantErr, tt.locked)
			}
		})
	}
}

// Open uses a running mirror's socket without reading the options of a
// stopped one, and opens the store itself when no mirror runs.
func TestOpenRunningOrStopped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	running := t.TempDir()
	serve(t, running)
	c, closeCache, err := Open(ctx, running, func() (StoreOptions, error) {
		t.Error("a running mirror's cache asked for a stopped one's options")
		return StoreOptions{}, errors.New("not needed")
	})
	if err != nil {
		t.Fatalf("Open on a running mirror: %v", err)
	}
	if _, ok := c.(*Client); !ok {
		t.Errorf("Open on a running mirror gave a %T, want a *Client", c)
	}
	closeCache()

	stopped := t.TempDir()
	c, closeCache, err = Open(ctx, stopped, func() (StoreOptions, error) {
		return StoreOptions{Dir: stopped, MaxSize: 1 << 20, Create: true}, nil
	})
	if err != nil {
		t.Fatalf("Open on a stopped mirror: %v", err)
	}
	if _, ok := c.(*Service); !ok {
		t.Errorf("Open on a stopped mirror gave a %T, want a *Service", c)
	}
	closeCache()
	if _, err := os.Stat(filepath.Join(stopped, "index")); err != nil {
		t.Errorf("no store created: %v", err)
	}

	bad := errors.New("bad CACHE_MAX_SIZE")
	if _, _, err := Open(ctx, t.TempDir(), func() (StoreOptions, error) { return StoreOptions{}, bad }); !errors.Is(err, bad) {
		t.Errorf("Open with bad options: %v, want %v", err, bad)
	}
}

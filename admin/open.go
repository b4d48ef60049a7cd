package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// StoreOptions locate a stopped mirror's store and say how to open it.
type StoreOptions struct {
	Dir     string // the mirror's CACHE_DIR
	MaxSize int64  // its CACHE_MAX_SIZE
	// Registry is the upstream host imported images link to; "": the
	// mirror's main upstream, whatever it is.
	Registry string
	// ReadOnly opens the store only to look: no eviction, no cleanup.
	ReadOnly bool
	// Create makes a new store in a directory that has none (import).
	Create bool
	// Log receives the store's warnings.
	Log io.Writer
}

// lockWait is how long Open waits for a starting or stopping mirror.
const lockWait = 3 * time.Second

// Open reaches the mirror of the cache directory dir: through its admin
// socket when it runs, else by opening its store with the options stopped
// returns (called only then, so that settings a running mirror does not
// need are not checked). close releases what Open took.
//
// A mirror starting or stopping holds the directory's lock without
// answering on its socket for a moment: Open then tries again for up to
// lockWait.
func Open(ctx context.Context, dir string, stopped func() (StoreOptions, error)) (c Cache, close func(), err error) {
	deadline := time.Now().Add(lockWait)
	for {
		client, err := Dial(ctx, dir)
		if err == nil {
			return client, client.Close, nil
		}
		if !errors.Is(err, ErrNotRunning) {
			return nil, nil, err
		}
		opts, err := stopped()
		if err != nil {
			return nil, nil, err
		}
		s, err := OpenStore(opts)
		if err == nil {
			return NewService(s, nil, opts.Registry), func() { s.Close() }, nil
		}
		if !errors.Is(err, cache.ErrLocked) || time.Now().After(deadline) {
			return nil, nil, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// OpenStore opens the store of a stopped mirror (read-only with
// opts.ReadOnly), or with opts.Create a new one in a directory that has
// none. A directory a running mirror holds is refused with an error
// wrapping cache.ErrLocked.
func OpenStore(opts StoreOptions) (*cache.Store, error) {
	// cache.Open would create a store anywhere: insist on an existing one.
	if opts.Dir == "" {
		return nil, errors.New("no cache directory: set --cache-dir or CACHE_DIR")
	}
	if fi, err := os.Stat(filepath.Join(opts.Dir, "index")); !opts.Create && (err != nil || !fi.IsDir()) {
		return nil, fmt.Errorf("%s is not a cache directory: it has no index/ (set --cache-dir or CACHE_DIR)", opts.Dir)
	}
	running := func() error {
		return fmt.Errorf("%s is locked by a running mirror whose admin socket (%s) does not answer: %w",
			opts.Dir, filepath.Join(opts.Dir, SocketName), cache.ErrLocked)
	}
	if err := cache.CheckUnlocked(opts.Dir); errors.Is(err, cache.ErrLocked) {
		return nil, running()
	} else if err != nil {
		return nil, err
	}
	log := io.Discard
	if opts.Log != nil {
		log = opts.Log
	}
	s, err := cache.Open(cache.Options{Dir: opts.Dir, MaxSize: opts.MaxSize, ReadOnly: opts.ReadOnly,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		if errors.Is(cache.CheckUnlocked(opts.Dir), cache.ErrLocked) {
			return nil, running() // started in between
		}
		return nil, err
	}
	return s, nil
}

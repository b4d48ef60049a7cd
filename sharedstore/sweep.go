package sharedstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// DefaultGrace is how old an object must be before a sweep may delete
// it: a download being written, or an image whose manifest has not landed
// yet, is never swept.
const DefaultGrace = 10 * time.Minute

// SweepOptions configure a Sweeper.
type SweepOptions struct {
	// MaxSize bounds the bytes under blobs/ (SHARED_STORE_MAX_SIZE).
	MaxSize int64
	// Grace is the age below which no object is deleted; 0: DefaultGrace.
	Grace time.Duration
	// Clock says what time it is and times Run; nil: the real clock.
	Clock clockwork.Clock
	// Logger receives each sweep's summary; nil: discard.
	Logger *slog.Logger
	// RequestTimeout bounds each request of a sweep (a listing's page, a
	// manifest's read, a delete); 0: DefaultSweepRequestTimeout.
	RequestTimeout time.Duration
}

// DefaultSweepRequestTimeout bounds each request of a sweep: a bucket
// that takes a request and never answers fails the sweep (the next one
// tries again) instead of holding it, and every later sweep, for good.
const DefaultSweepRequestTimeout = time.Minute

// SweepStats are a Sweeper's counters.
type SweepStats struct {
	Bytes      int64 // the bucket's blobs after the last sweep
	SweptBytes int64 // bytes deleted by every sweep
	Sweeps     int64 // sweeps that ran to the end
	Failures   int64 // sweeps that failed (nothing was deleted, or only part)
}

// Sweeper keeps the bucket's blobs under a bound by deleting whole
// images, least recently used first (plan). What it learned of each
// digest (manifest or not, and what it references) is kept between
// sweeps: digests are immutable, so each object is read once.
type Sweeper struct {
	st    *Store
	opts  SweepOptions
	clock clockwork.Clock
	log   *slog.Logger

	mu    sync.Mutex // one sweep at a time; guards known
	known map[digest.Digest]manifest

	bytes, swept, sweeps, failures atomic.Int64
}

// NewSweeper returns a sweeper of the store's bucket.
func (s *Store) NewSweeper(opts SweepOptions) (*Sweeper, error) {
	if opts.MaxSize <= 0 {
		return nil, fmt.Errorf("shared store sweep: bound %d is not a positive number of bytes", opts.MaxSize)
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultSweepRequestTimeout
	}
	w := &Sweeper{st: s, opts: opts, clock: opts.Clock, log: opts.Logger, known: make(map[digest.Digest]manifest)}
	if w.clock == nil {
		w.clock = clockwork.NewRealClock()
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w, nil
}

// Stats returns the sweeper's counters.
func (w *Sweeper) Stats() SweepStats {
	return SweepStats{Bytes: w.bytes.Load(), SweptBytes: w.swept.Load(), Sweeps: w.sweeps.Load(), Failures: w.failures.Load()}
}

// Run sweeps every interval until ctx is done, when elected says this
// replica sweeps now (nil: always). Sweeps by several replicas at once
// are safe: deletes are idempotent, and what one deletes that another
// replica needs costs that replica a download from upstream.
func (w *Sweeper) Run(ctx context.Context, interval time.Duration, elected func() bool) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.clock.After(interval):
		}
		if elected != nil && !elected() {
			continue
		}
		if _, err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("shared store sweep failed", "error", err)
		}
	}
}

// Sweep lists the bucket, reads the manifests it has not read yet, and
// deletes what plan says, logging a summary. A failed listing or read
// deletes nothing.
func (w *Sweeper) Sweep(ctx context.Context) (Plan, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := w.clock.Now()
	inv, err := w.inventory(ctx)
	if err != nil {
		w.failures.Add(1)
		return Plan{}, err
	}
	p := plan(inv, w.opts.MaxSize, start.Add(-w.opts.Grace))
	freed, err := w.apply(ctx, p, inv)
	w.swept.Add(freed)
	w.bytes.Store(p.Bytes - freed)
	if err != nil {
		w.failures.Add(1)
		return p, err
	}
	w.sweeps.Add(1)
	w.logSummary(p, freed, len(inv.Pins), w.clock.Since(start))
	return p, nil
}

// logSummary logs a sweep's summary: at info level when it deleted
// something, as a warning when the bucket stays over the bound (pinned
// and recent content exceed it), else at debug level.
func (w *Sweeper) logSummary(p Plan, freed int64, pins int, took time.Duration) {
	level, msg := slog.LevelDebug, "shared store swept"
	switch {
	case p.Bytes-freed > w.opts.MaxSize:
		level, msg = slog.LevelWarn, "shared store swept, still over its bound: pinned content and content younger than the grace period exceed it"
	case len(p.Delete) > 0:
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, msg, "bytes_before", p.Bytes, "bytes_after", p.Bytes-freed, "max_bytes", w.opts.MaxSize,
		"deleted", len(p.Delete), "freed_bytes", freed, "images", p.Images, "orphans", p.Orphans, "records", len(p.Records),
		"pins", pins, "grace", w.opts.Grace, "duration", took)
}

// inventory lists the bucket and, when its blobs exceed the bound, reads
// the manifests among them.
func (w *Sweeper) inventory(ctx context.Context) (Inventory, error) {
	blobs, err := w.st.list(ctx, dirBlobs, w.opts.RequestTimeout)
	if err != nil {
		return Inventory{}, err
	}
	used, err := w.st.list(ctx, dirUsed, w.opts.RequestTimeout)
	if err != nil {
		return Inventory{}, err
	}
	pins, err := w.st.list(ctx, dirPins, w.opts.RequestTimeout)
	if err != nil {
		return Inventory{}, err
	}
	inv := Inventory{Blobs: blobs, Refs: make(map[digest.Digest][]digest.Digest),
		Used: make(map[digest.Digest]time.Time, len(used)), Pins: make(map[digest.Digest]bool, len(pins))}
	for d, o := range used {
		inv.Used[d] = o.Modified
	}
	for d := range pins {
		inv.Pins[d] = true
	}
	for d := range w.known {
		if _, ok := blobs[d]; !ok {
			delete(w.known, d) // gone: forget it
		}
	}
	var total int64
	for _, o := range blobs {
		total += o.Size
	}
	if total <= w.opts.MaxSize {
		return inv, nil // under the bound: what the blobs reference does not matter
	}
	if err := w.learn(ctx, blobs, inv); err != nil {
		return Inventory{}, err
	}
	for d := range blobs {
		if m := w.known[d]; m.is {
			inv.Refs[d] = m.refs
		}
	}
	return inv, nil
}

// sweepReaders is how many objects a sweep reads at once.
const sweepReaders = 8

// learn reads the blobs the sweeper does not know yet: first those with
// a use record or a pin, manifests most likely, then the rest, but for
// what a known manifest names as its config or a layer, which is no
// manifest: most of an image is never read.
func (w *Sweeper) learn(ctx context.Context, blobs map[digest.Digest]Listed, inv Inventory) error {
	var likely, rest []digest.Digest
	for d := range blobs {
		if _, ok := w.known[d]; ok {
			continue
		}
		if _, used := inv.Used[d]; used || inv.Pins[d] {
			likely = append(likely, d)
		} else {
			rest = append(rest, d)
		}
	}
	if err := w.read(ctx, likely, blobs); err != nil {
		return err
	}
	layers := make(map[digest.Digest]bool)
	for _, m := range w.known {
		for _, b := range m.blobs {
			layers[b] = true
		}
	}
	rest = slices.DeleteFunc(rest, func(d digest.Digest) bool {
		if layers[d] {
			w.known[d] = manifest{}
		}
		return layers[d]
	})
	return w.read(ctx, rest, blobs)
}

// read reads ds, sweepReaders at once, into w.known.
func (w *Sweeper) read(ctx context.Context, ds []digest.Digest, blobs map[digest.Digest]Listed) error {
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(sweepReaders)
	for _, d := range ds {
		g.Go(func() error {
			rctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
			m, err := w.st.readManifest(rctx, d, blobs[d].Size)
			cancel()
			if err != nil {
				return err
			}
			mu.Lock()
			w.known[d] = m
			mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// apply deletes what p says, sweepReaders at once, and returns the
// bytes freed. It goes on past a failed delete and returns every failure.
func (w *Sweeper) apply(ctx context.Context, p Plan, inv Inventory) (int64, error) {
	var mu sync.Mutex
	var freed int64
	var errs []error
	var wg sync.WaitGroup
	slots := make(chan struct{}, sweepReaders)
	run := func(del func(context.Context) error, done func()) {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			dctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
			defer cancel()
			err := del(dctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if done != nil {
				done()
			}
		})
	}
	for _, d := range p.Delete {
		run(func(ctx context.Context) error { return w.st.Delete(ctx, d) }, func() { delete(w.known, d); freed += inv.Blobs[d].Size })
	}
	for _, d := range p.Records {
		run(func(ctx context.Context) error { return w.st.deleteKey(ctx, w.st.recordKey(dirUsed, d)) }, nil)
	}
	wg.Wait()
	if n := len(errs); n > maxErrors {
		errs = append(errs[:maxErrors], fmt.Errorf("and %d more failed deletes", n-maxErrors))
	}
	return freed, errors.Join(errs...)
}

// maxErrors is how many failed deletes a sweep's error names.
const maxErrors = 5

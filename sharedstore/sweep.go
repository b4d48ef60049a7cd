package sharedstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"
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
}

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
	w.log.Info("shared store swept", "bytes_before", p.Bytes, "bytes_after", p.Bytes-freed, "max_bytes", w.opts.MaxSize,
		"deleted", len(p.Delete), "freed_bytes", freed, "images", p.Images, "orphans", p.Orphans, "records", len(p.Records),
		"pins", len(inv.Pins), "duration", w.clock.Since(start))
	return p, nil
}

// inventory lists the bucket and, when its blobs exceed the bound, reads
// the manifests among them.
func (w *Sweeper) inventory(ctx context.Context) (Inventory, error) {
	blobs, err := w.st.list(ctx, dirBlobs)
	if err != nil {
		return Inventory{}, err
	}
	used, err := w.st.list(ctx, dirUsed)
	if err != nil {
		return Inventory{}, err
	}
	pins, err := w.st.list(ctx, dirPins)
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
	for d, o := range blobs {
		m, ok := w.known[d]
		if !ok {
			if m, err = w.st.readManifest(ctx, d, o.Size); err != nil {
				return Inventory{}, err
			}
			w.known[d] = m
		}
		if m.is {
			inv.Refs[d] = m.refs
		}
	}
	return inv, nil
}

// apply deletes what p says and returns the bytes freed. It goes on past
// a failed delete and returns every failure.
func (w *Sweeper) apply(ctx context.Context, p Plan, inv Inventory) (int64, error) {
	var freed int64
	var errs []error
	for _, d := range p.Delete {
		if err := w.st.Delete(ctx, d); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.known, d)
		freed += inv.Blobs[d].Size
	}
	for _, d := range p.Records {
		if err := w.st.deleteKey(ctx, w.st.recordKey(dirUsed, d)); err != nil {
			errs = append(errs, err)
		}
	}
	return freed, errors.Join(errs...)
}

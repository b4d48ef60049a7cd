package sharedstore

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"
)

// DefaultUseInterval is how often a replica rewrites a manifest's used/
// record at most: often enough for least-recently-used order at the
// scale of a sweep, rare enough that a busy replica writes at most one
// small object per image an hour.
const DefaultUseInterval = time.Hour

// Usage writes the used/ records of the manifests a replica serves, at
// most once per interval per manifest, in the background: Record never
// waits for the bucket.
type Usage struct {
	st    *Store
	every time.Duration
	clock clockwork.Clock
	log   *slog.Logger
	queue chan digest.Digest
	wg    sync.WaitGroup

	mu   sync.Mutex
	last map[digest.Digest]time.Time // when each record was last queued
}

// usageWriters write the records; usageBacklog bound those waiting (past
// it a use is not recorded: the next one is).
const (
	usageWriters = 2
	usageBacklog = 4096
	// usageTimeout bounds one record's write.
	usageTimeout = 30 * time.Second
)

// UsageOptions configure a Usage.
type UsageOptions struct {
	// Interval is the least time between two writes of one record; 0:
	// DefaultUseInterval.
	Interval time.Duration
	// Clock times Interval; nil: the real clock.
	Clock  clockwork.Clock
	Logger *slog.Logger // nil: discard
}

// NewUsage returns a recorder whose writers run until ctx is done; Wait
// then returns once they have stopped.
func (s *Store) NewUsage(ctx context.Context, opts UsageOptions) *Usage {
	u := &Usage{st: s, every: opts.Interval, clock: opts.Clock, log: opts.Logger,
		queue: make(chan digest.Digest, usageBacklog), last: make(map[digest.Digest]time.Time)}
	if u.every <= 0 {
		u.every = DefaultUseInterval
	}
	if u.clock == nil {
		u.clock = clockwork.NewRealClock()
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	for range usageWriters {
		u.wg.Go(func() { u.write(ctx) })
	}
	return u
}

// Record notes that the manifest dgst was served now. Its record is
// written unless it was within the interval.
func (u *Usage) Record(dgst digest.Digest) {
	now := u.clock.Now()
	u.mu.Lock()
	if at, ok := u.last[dgst]; ok && now.Sub(at) < u.every {
		u.mu.Unlock()
		return
	}
	if len(u.last) >= usageBacklog*4 {
		u.forgetOlder(now.Add(-u.every))
	}
	u.last[dgst] = now
	u.mu.Unlock()
	select {
	case u.queue <- dgst:
	default:
		u.forget(dgst) // too many waiting: the next use tries again
	}
}

// forgetOlder drops the times older than cutoff, which no longer
// throttle anything, so that the map holds at most the manifests served
// within an interval. Under u.mu.
func (u *Usage) forgetOlder(cutoff time.Time) {
	for d, at := range u.last {
		if at.Before(cutoff) {
			delete(u.last, d)
		}
	}
}

// forget lets the next use of dgst write its record.
func (u *Usage) forget(dgst digest.Digest) {
	u.mu.Lock()
	delete(u.last, dgst)
	u.mu.Unlock()
}

// write writes queued records until ctx is done. A failed write is
// logged and forgotten, so that the next use tries again.
func (u *Usage) write(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case dgst := <-u.queue:
			wctx, cancel := context.WithTimeout(ctx, usageTimeout)
			err := u.st.MarkUsed(wctx, dgst)
			cancel()
			if err != nil {
				u.forget(dgst)
				u.log.Debug("shared store: recording a manifest's use failed", "digest", dgst, "error", err)
			}
		}
	}
}

// Wait returns once the writers have stopped (their context is done).
func (u *Usage) Wait() { u.wg.Wait() }

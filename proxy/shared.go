package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// Shared holds what several proxies (one per upstream registry) share,
// so that it holds for the mirror as a whole: the cap on upstream bytes
// per second (Options.MaxRate), the cap on concurrent downloads
// (Options.MaxDownloads), and the downloads in flight, so that a digest
// is downloaded once whichever upstreams it is asked through (a request
// through another upstream follows the download once its upstream
// confirms it holds the digest). Give the same Shared to every proxy in
// Options.Shared.
type Shared struct {
	maxRate   int64
	lim       *rate.Limiter // nil: unlimited
	chunk     int
	downloads *downloadSlots

	mu      sync.Mutex
	flights map[digest.Digest]*flight
}

// NewShared returns the limits of maxRate upstream bytes per second (0:
// unlimited) and maxDownloads concurrent downloads (0: no cap), for all
// the proxies given it together.
func NewShared(maxRate int64, maxDownloads int) *Shared {
	r := newRateLimit(maxRate, &Stats{})
	return &Shared{maxRate: max(maxRate, 0), lim: r.lim, chunk: r.chunk, downloads: &downloadSlots{max: int64(maxDownloads)},
		flights: make(map[digest.Digest]*flight)}
}

// rateLimit is the shared bucket, counted in stats.
func (s *Shared) rateLimit(stats *Stats) rateLimit {
	stats.MaxRate.Store(s.maxRate)
	return rateLimit{lim: s.lim, chunk: s.chunk, stats: stats}
}

// downloadSlots counts the downloads running against a cap.
type downloadSlots struct {
	max int64 // 0: no cap
	n   atomic.Int64
}

// take claims a slot for a download; false when all are taken.
func (d *downloadSlots) take() bool {
	for {
		n := d.n.Load()
		if d.max > 0 && n >= d.max {
			return false
		}
		if d.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// give frees the slot of a download that ended.
func (d *downloadSlots) give() { d.n.Add(-1) }

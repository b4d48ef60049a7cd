package proxy

import (
	"context"
	"io"
	"time"

	"golang.org/x/time/rate"
)

// rateLimit is the cap on upstream body bytes per second (Options.MaxRate):
// one token bucket per Proxy, shared by every download and by ranges passed
// through from upstream, so the mirror never takes more than its share of
// the site's link. Hits never touch it.
//
// The bucket holds at most one second's worth of bytes, and no more than
// one read buffer: a burst after a quiet spell stays short. Reads are
// never larger than the burst, so each can wait for its tokens.
type rateLimit struct {
	lim   *rate.Limiter // nil: unlimited
	chunk int           // the most read from upstream at once
	stats *Stats
}

func newRateLimit(bytesPerSecond int64, stats *Stats) rateLimit {
	stats.MaxRate.Store(max(bytesPerSecond, 0))
	if bytesPerSecond <= 0 {
		return rateLimit{chunk: copyBufferSize, stats: stats}
	}
	burst := int(min(bytesPerSecond, copyBufferSize))
	return rateLimit{lim: rate.NewLimiter(rate.Limit(bytesPerSecond), burst), chunk: burst, stats: stats}
}

// wait takes n bytes (at most chunk) from the bucket, blocking until they
// are there or ctx ends.
func (r *rateLimit) wait(ctx context.Context, n int) error {
	if r.lim == nil || n <= 0 {
		return nil
	}
	start := time.Now()
	err := r.lim.WaitN(ctx, n)
	r.stats.ThrottledBytes.Add(int64(n))
	r.stats.ThrottledNanos.Add(int64(time.Since(start)))
	return err
}

// body returns rc read under the cap, for an upstream body passed to a
// client as it is (ranges on uncached blobs); ctx is the request's.
func (r *rateLimit) body(ctx context.Context, rc io.ReadCloser) io.ReadCloser {
	if r.lim == nil {
		return rc
	}
	return &throttledBody{rc: rc, ctx: ctx, limit: r}
}

// throttledBody reads an upstream body under the cap. It has no WriteTo,
// so copies go through its Read.
type throttledBody struct {
	rc    io.ReadCloser
	ctx   context.Context
	limit *rateLimit
}

func (b *throttledBody) Read(p []byte) (int, error) {
	if len(p) > b.limit.chunk {
		p = p[:b.limit.chunk]
	}
	n, err := b.rc.Read(p)
	if werr := b.limit.wait(b.ctx, n); werr != nil && err == nil {
		err = werr
	}
	return n, err
}

func (b *throttledBody) Close() error { return b.rc.Close() }

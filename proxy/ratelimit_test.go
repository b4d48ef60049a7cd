package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// The bucket holds at most a second's worth and one read buffer; reads are
// never larger than it, so every WaitN can be met.
func TestNewRateLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		rate             int64
		unlimited        bool
		burst, chunk     int
		wantStatsMaxRate int64
	}{
		{name: "unlimited", rate: 0, unlimited: true, chunk: copyBufferSize},
		{name: "negative is unlimited", rate: -5, unlimited: true, chunk: copyBufferSize},
		{name: "one byte a second", rate: 1, burst: 1, chunk: 1, wantStatsMaxRate: 1},
		{name: "under a buffer", rate: 100 << 10, burst: 100 << 10, chunk: 100 << 10, wantStatsMaxRate: 100 << 10},
		{name: "20 MiB/s", rate: 20 << 20, burst: copyBufferSize, chunk: copyBufferSize, wantStatsMaxRate: 20 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var st Stats
			r := newRateLimit(tt.rate, &st)
			if (r.lim == nil) != tt.unlimited {
				t.Fatalf("limiter %v, want unlimited %v", r.lim, tt.unlimited)
			}
			if r.chunk != tt.chunk {
				t.Errorf("chunk %d, want %d", r.chunk, tt.chunk)
			}
			if r.lim != nil {
				if r.lim.Burst() != tt.burst || int64(r.lim.Limit()) != tt.rate {
					t.Errorf("limiter %v/s burst %d, want %d/s burst %d", r.lim.Limit(), r.lim.Burst(), tt.rate, tt.burst)
				}
				if r.chunk > r.lim.Burst() || int64(r.lim.Burst()) > tt.rate {
					t.Errorf("chunk %d, burst %d, rate %d: want chunk ≤ burst ≤ rate", r.chunk, r.lim.Burst(), tt.rate)
				}
			}
			if got := st.MaxRate.Load(); got != tt.wantStatsMaxRate {
				t.Errorf("Stats.MaxRate = %d, want %d", got, tt.wantStatsMaxRate)
			}
		})
	}
}

// A body read under the cap takes the time the cap says, and counts what
// it read and waited.
func TestThrottledBody(t *testing.T) {
	t.Parallel()
	const rate, size = 2 << 20, 1 << 20
	var st Stats
	r := newRateLimit(rate, &st)
	body := r.body(context.Background(), io.NopCloser(bytes.NewReader(make([]byte, size))))
	start := time.Now()
	n, err := io.Copy(io.Discard, body)
	took := time.Since(start)
	if err != nil || n != size {
		t.Fatalf("copied %d bytes, err %v", n, err)
	}
	// The first burst is free; the rest comes at the rate.
	if want := time.Duration(float64(size-r.lim.Burst()) / rate * float64(time.Second)); took < want*9/10 {
		t.Errorf("took %v, want at least %v", took, want)
	}
	if st.ThrottledBytes.Load() != size || st.ThrottledNanos.Load() <= 0 {
		t.Errorf("ThrottledBytes %d, ThrottledNanos %d", st.ThrottledBytes.Load(), st.ThrottledNanos.Load())
	}
	if err := body.Close(); err != nil {
		t.Error(err)
	}

	// A canceled context ends the wait. The bucket is an hour in debt,
	// so the wait outlasts any delay before the cancel.
	ctx, cancel := context.WithCancel(context.Background())
	slow := newRateLimit(1024, &st)
	b := slow.body(ctx, io.NopCloser(bytes.NewReader(make([]byte, 4096))))
	buf := make([]byte, 4096)
	if n, err := b.Read(buf); err != nil || n != 1024 {
		t.Fatalf("first read (the free burst): %d bytes, %v", n, err)
	}
	for range 3600 {
		slow.lim.ReserveN(time.Now(), 1024)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := b.Read(buf); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
	// Unlimited: the body itself.
	plain := io.NopCloser(bytes.NewReader(nil))
	unlimited := newRateLimit(0, &st)
	if got := unlimited.body(ctx, plain); got != plain {
		t.Errorf("unlimited body is wrapped: %T", got)
	}
}

// Downloads share one cap: three at once take as long as their sum at the
// rate. Hits do not touch it. The only durations asserted are lower
// bounds the limiter itself guarantees (a busy machine only adds time);
// that hits are not throttled is asserted on the bytes the cap accounts.
func TestDownloadsShareRateLimit(t *testing.T) {
	t.Parallel()
	const rate, size = 2 << 20, 512 << 10
	e := newEdgeEnv(t, edgeOptions{maxRate: rate})
	var dgsts []digest.Digest
	var datas [][]byte
	for i := range 3 {
		d := testkit.RandomBytes(uint64(40+i), size)
		datas = append(datas, d)
		dgsts = append(dgsts, e.fake.PutBlob("team/app", d))
	}
	fetch := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for i, dgst := range dgsts {
			wg.Go(func() {
				r := e.fetchAll(t, "team/app", dgst, 1)[0]
				if r.err != nil || !bytes.Equal(r.body, datas[i]) {
					t.Errorf("blob %d: status %d, %d bytes, err %v", i, r.status, len(r.body), r.err)
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	cold := fetch()
	e.proxy.Wait()
	st := e.proxy.Stats()
	total := int64(len(dgsts) * size)
	if want := time.Duration(float64(total-copyBufferSize) / rate * float64(time.Second)); cold < want*9/10 {
		t.Errorf("3 downloads of %d bytes took %v under a %d B/s cap, want at least %v", size, cold, rate, want)
	}
	if got := st.ThrottledBytes.Load(); got != total {
		t.Errorf("Stats.ThrottledBytes = %d, want %d", got, total)
	}
	if st.MaxRate.Load() != rate || st.ThrottledNanos.Load() <= 0 {
		t.Errorf("Stats.MaxRate %d, ThrottledNanos %d", st.MaxRate.Load(), st.ThrottledNanos.Load())
	}
	fetch()
	if got := st.ThrottledBytes.Load(); got != total || st.Hits.Load() != 3 {
		t.Errorf("after hits: ThrottledBytes %d (want %d), Hits %d (want 3)", got, total, st.Hits.Load())
	}
}

// Close ends a download waiting for the cap at once.
func TestCloseDuringRateLimitWait(t *testing.T) {
	t.Parallel()
	// At 1 KiB/s the download would take 17 minutes: a Close that waited
	// for it would run the test past its deadline.
	e := newEdgeEnv(t, edgeOptions{maxRate: 1 << 10})
	dgst := e.fake.PutBlob("team/app", testkit.RandomBytes(52, 1<<20))
	done := e.startDownload(t, "team/app", dgst)
	testwait.Until(t, "the cap to hold the download back", func() bool { return e.proxy.Stats().ThrottledBytes.Load() > 0 })
	e.proxy.Close()
	if r := <-done; r.err == nil && r.status == http.StatusOK {
		t.Errorf("the client got %d bytes and no error", len(r.body))
	}
	e.assertNotStored(t, dgst)
}

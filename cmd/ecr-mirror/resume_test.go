package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// Resumable downloads and the bandwidth cap, end to end: the mirror as
// main runs it, configured through its settings, against the fake ECR.

// edgeStall is the stall timeout of these tests. It is timed by a fake
// clock (mirrorOpts.stallClock): a stall fires when a test advances the
// clock by it, never because a busy machine paused a read.
const edgeStall = 300 * time.Millisecond

// edgeEnv are the mirror settings of these tests.
func edgeEnv(more ...string) map[string]string {
	env := map[string]string{"UPSTREAM_STALL_TIMEOUT": edgeStall.String()}
	for i := 0; i+1 < len(more); i += 2 {
		env[more[i]] = more[i+1]
	}
	return env
}

// fetchConcurrently runs fetchBlob from n clients at once.
func fetchConcurrently(t testing.TB, m *mirror, repo string, dgst digest.Digest, n int) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = fetchBlob(t, m, repo, dgst) })
	}
	wg.Wait()
	return errs
}

// s3RangeStarts lists where the ranged S3 GETs of dgst started, in order,
// waiting for at least want of them: the fake logs a request when its
// handler returns.
func s3RangeStarts(t testing.TB, fake *fakeecr.Server, dgst digest.Digest, want int) []int64 {
	t.Helper()
	deadline := time.Now().Add(testwait.HangGuard)
	for {
		var out []int64
		for _, r := range fake.Counters().Requests {
			if r.Endpoint != fakeecr.EndpointS3 || r.Range == "" || !strings.HasSuffix(r.Path, dgst.Encoded()) {
				continue
			}
			first, _, _ := strings.Cut(strings.TrimPrefix(r.Range, "bytes="), "-")
			n, err := strconv.ParseInt(first, 10, 64)
			if err != nil || !strings.HasSuffix(r.Range, "-") {
				t.Fatalf("the mirror sent Range %q, want bytes=N-", r.Range)
			}
			out = append(out, n)
		}
		if len(out) >= want || time.Now().After(deadline) {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A blob whose S3 body is reset (once or several times) or stalls part way
// is resumed where it stopped: four clients pulling it at once all get the
// whole verified body with no error, the blob is stored, S3 sends each
// byte about once, and every resumption is a Range from the exact offset,
// asked through the registry.
func TestResumeCutDownloads(t *testing.T) {
	t.Parallel()
	const size = 8 << 20
	const q = size / 4
	tests := []struct {
		name   string
		fault  fakeecr.Fault
		ranges []int64
		stalls []int64 // where the body stalls: the stall clock is advanced there
	}{
		{name: "reset at 25%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q, Times: 1}, ranges: []int64{q}},
		{name: "reset at 50%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1}, ranges: []int64{2 * q}},
		{name: "reset at 75%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 3 * q, Times: 1}, ranges: []int64{3 * q}},
		{name: "reset at 25, 50 and 75%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q, Times: 3}, ranges: []int64{q, 2 * q, 3 * q}},
		{name: "reset 4 times, under the 5 retries", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: size / 5, Times: 4},
			ranges: []int64{size / 5, 2 * (size / 5), 3 * (size / 5), 4 * (size / 5)}},
		{name: "stall at 50%", fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: 2 * q, Times: 1}, ranges: []int64{2 * q},
			stalls: []int64{2 * q}},
		{name: "stall at 25% and 75%", fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: q, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultStall, After: 2 * q, Times: 1}}, ranges: []int64{q, 3 * q},
			stalls: []int64{q, 3 * q}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := fakeecr.Start(t, fakeecr.Options{})
			data := testkit.RandomBytes(60, size)
			dgst := fake.PutBlob("team/app", data)
			clk := clockwork.NewFakeClock()
			m := startMirror(t, fake, mirrorOpts{env: edgeEnv(), stallClock: clk})
			fake.SetFault(dgst, tt.fault)

			results := make(chan []error, 1)
			go func() { results <- fetchConcurrently(t, m, "team/app", dgst, 4) }()
			for i, at := range tt.stalls {
				waitStalled(t, m, clk, at)
				if n := strings.Count(m.Logs.String(), "resuming"); n != i {
					t.Errorf("%d resumptions before stall %d fired, want %d", n, i+1, i)
				}
				clk.Advance(edgeStall)
			}
			for i, err := range <-results {
				if err != nil {
					t.Errorf("client %d: %v", i, err)
				}
			}
			testwait.Until(t, "the blob stored", func() bool { return m.stored(dgst) })
			if got := s3RangeStarts(t, fake, dgst, len(tt.ranges)); !slices.Equal(got, tt.ranges) {
				t.Errorf("Range requests from %v, want %v", got, tt.ranges)
			}
			c := fake.Counters()
			if n := c.S3BlobBytes[dgst]; n > size*11/10 {
				t.Errorf("S3 sent %d bytes for a %d byte blob (%.3f×), want at most 1.1×", n, size, float64(n)/size)
			}
			if c.S3Get[dgst] != 1 || c.BlobGet != int64(1+len(tt.ranges)) {
				t.Errorf("%d S3 GETs without Range and %d registry blob GETs; want 1 and %d (one download, each resumption through the registry)",
					c.S3Get[dgst], c.BlobGet, 1+len(tt.ranges))
			}
			if tmp := m.tempFiles(t); len(tmp) != 0 {
				t.Errorf("tmp/ holds %v", tmp)
			}
			if logs := m.Logs.String(); strings.Count(logs, "resuming") != len(tt.ranges) {
				t.Errorf("%d resumptions logged, want %d", strings.Count(logs, "resuming"), len(tt.ranges))
			}
		})
	}
}

// Downloads that cannot be resumed fail cleanly: every client's transfer
// fails (none gets a whole body), nothing is stored or left in tmp/, and
// the next pull downloads the blob afresh. When nothing was written yet, an
// answer that ignores the Range just restarts the download.
func TestResumeFailsCleanly(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	const q = size / 4
	tests := []struct {
		name  string
		env   map[string]string
		fault fakeecr.Fault
		// held: the first body is held open (Fault.Hold) until all four
		// clients follow the download, then cut.
		held   bool
		stalls []int64 // where the body stalls: the stall clock is advanced there
		ok     bool
		ranges []int64
	}{
		{name: "more resets than retries", env: edgeEnv("UPSTREAM_RETRIES", "2"),
			fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q, Times: 3}, held: true,
			ranges: []int64{q, 2 * q}},
		{name: "more stalls than retries", env: edgeEnv("UPSTREAM_RETRIES", "1"),
			fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: q, Times: 2}, stalls: []int64{q, 2 * q},
			ranges: []int64{q}},
		{name: "no retries", env: edgeEnv("UPSTREAM_RETRIES", "0"),
			fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q, Times: 1}, held: true},
		{name: "200 to the Range after bytes went out", env: edgeEnv(),
			fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1,
				Then: &fakeecr.Fault{Mode: fakeecr.FaultIgnoreRange, Times: 1}}, held: true,
			ranges: []int64{2 * q}},
		{name: "206 at another offset after bytes went out", env: edgeEnv(),
			fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1,
				Then: &fakeecr.Fault{Mode: fakeecr.FaultWrongRange, After: 4096, Times: 1}}, held: true,
			ranges: []int64{2 * q}},
		{name: "200 to the Range with nothing written: restart", env: edgeEnv(),
			fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: -1, Times: 1,
				Then: &fakeecr.Fault{Mode: fakeecr.FaultIgnoreRange, Times: 1}}, stalls: []int64{0},
			ok: true, ranges: []int64{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := fakeecr.Start(t, fakeecr.Options{})
			data := testkit.RandomBytes(61, size)
			dgst := fake.PutBlob("team/app", data)
			clk := clockwork.NewFakeClock()
			m := startMirror(t, fake, mirrorOpts{env: tt.env, stallClock: clk})
			fault := tt.fault
			hold := make(chan struct{})
			if tt.held {
				fault.Hold = hold
			}
			fake.SetFault(dgst, fault)

			var wait func() []error
			if tt.ok {
				// Nothing to fail: the clients may come and go as they
				// like (before the first byte they have no answer yet).
				results := make(chan []error, 1)
				go func() { results <- fetchConcurrently(t, m, "team/app", dgst, 4) }()
				wait = func() []error { return <-results }
			} else {
				// All four follow the download before it fails.
				wait = startFetches(t, m, "team/app", dgst, 4)
			}
			close(hold)
			for _, at := range tt.stalls {
				waitStalled(t, m, clk, at)
				clk.Advance(edgeStall)
			}
			for i, err := range wait() {
				switch {
				case tt.ok && err != nil:
					t.Errorf("client %d: %v", i, err)
				case !tt.ok && err == nil:
					t.Errorf("client %d got a whole verified body from a failed download", i)
				case !tt.ok && strings.Contains(err.Error(), "complete body"):
					t.Errorf("client %d got a complete body with wrong bytes: %v", i, err)
				}
			}
			if got := s3RangeStarts(t, fake, dgst, len(tt.ranges)); !slices.Equal(got, tt.ranges) {
				t.Errorf("Range requests from %v, want %v", got, tt.ranges)
			}
			if c := fake.Counters(); !tt.ok && c.BlobGet != int64(1+len(tt.ranges)) {
				t.Errorf("%d registry blob GETs, want %d: one download for the four clients", c.BlobGet, 1+len(tt.ranges))
			}
			if tt.ok {
				testwait.Until(t, "the blob stored", func() bool { return m.stored(dgst) })
				return
			}
			testwait.Until(t, "the failed download to clean up", func() bool { return len(m.tempFiles(t)) == 0 })
			if m.stored(dgst) {
				t.Fatal("a failed download was stored")
			}
			fake.ClearFaults()
			if err := fetchBlob(t, m, "team/app", dgst); err != nil {
				t.Fatalf("the pull after the failure: %v", err)
			}
			testwait.Until(t, "the blob stored", func() bool { return m.stored(dgst) })
		})
	}
}

// A resumption after the presigned URL has expired asks the registry for
// a fresh redirect: the stalled body's URL is never reused.
func TestResumeAfterPresignedURLExpired(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	clk := &clock{}
	// A minute: the first URL is used long before it expires, however busy
	// the machine; the clock is then moved an hour on.
	fake := fakeecr.Start(t, fakeecr.Options{Now: clk.Now, PresignTTL: time.Minute})
	data := testkit.RandomBytes(62, size)
	dgst := fake.PutBlob("team/app", data)
	stallClock := clockwork.NewFakeClock()
	m := startMirror(t, fake, mirrorOpts{env: edgeEnv(), stallClock: stallClock})
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: size / 2, Times: 1})

	done := make(chan error, 1)
	go func() { done <- fetchBlob(t, m, "team/app", dgst) }()
	// Once S3 is stalling, move the fake's clock past the URL's expiry:
	// the stall, in the fake's time, outlasts the presigned URL. Then
	// the mirror's stall timeout passes.
	waitStalled(t, m, stallClock, size/2)
	clk.Advance(time.Hour)
	stallClock.Advance(edgeStall)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the blob stored", func() bool { return m.stored(dgst) })
	c := fake.Counters()
	if c.BlobGet != 2 || c.S3SignatureRejected != 0 {
		t.Errorf("%d registry blob GETs, %d S3 requests refused; want 2 and 0", c.BlobGet, c.S3SignatureRejected)
	}
	if got := s3RangeStarts(t, fake, dgst, 1); !slices.Equal(got, []int64{size / 2}) {
		t.Errorf("Range requests from %v, want [%d]", got, size/2)
	}
	// The first URL had indeed expired.
	for _, r := range c.Requests {
		if r.Endpoint == fakeecr.EndpointS3 && r.Range == "" {
			resp, _, err := get(t, http.MethodGet, fake.S3URL()+r.Path+"?"+r.Query, nil)
			if err != nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("the stalled body's URL, fetched again: %v, %v; want 403", resp, err)
			}
		}
	}
}

// UPSTREAM_MAX_RATE caps all downloads together: three 4 MiB blobs pulled
// at once under 4m take about three seconds (their aggregate rate stays
// within 10% of the cap), and cache hits afterwards are not throttled.
// The durations asserted are lower bounds the cap itself guarantees (a
// busy machine only adds time); that hits are not throttled is asserted
// on the bytes the cap accounts.
func TestMaxRate(t *testing.T) {
	t.Parallel()
	const size, rate = 4 << 20, 4 << 20
	fake := fakeecr.Start(t, fakeecr.Options{})
	var dgsts []digest.Digest
	for i := range 3 {
		dgsts = append(dgsts, fake.PutBlob("team/app", testkit.RandomBytes(uint64(63+i), size)))
	}
	m := startMirror(t, fake, mirrorOpts{env: edgeEnv("UPSTREAM_MAX_RATE", "4m")})
	pullAll := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for _, dgst := range dgsts {
			wg.Go(func() {
				if err := fetchBlob(t, m, "team/app", dgst); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	cold := pullAll()
	total := float64(len(dgsts) * size)
	upstream := float64(fake.Counters().S3BytesSent)
	if cold < 2500*time.Millisecond || upstream/cold.Seconds() > 1.1*rate {
		t.Errorf("3 blobs of 4 MiB took %v under a 4 MiB/s cap: %.2f MiB/s upstream, want at most 4.4", cold, upstream/cold.Seconds()/(1<<20))
	}
	t.Logf("cold: %v, %.2f MiB/s upstream (%.3f of the cap)", cold, upstream/cold.Seconds()/(1<<20), upstream/cold.Seconds()/rate)
	for _, dgst := range dgsts {
		testwait.Until(t, "blobs stored", func() bool { return m.stored(dgst) })
	}
	throttled := scrape(t, m.URL+"/metrics")["ecr_mirror_upstream_throttled_bytes_total"]
	if throttled != total {
		t.Errorf("%.0f bytes went through the cap, want the %.0f downloaded", throttled, total)
	}
	pullAll()
	if got := scrape(t, m.URL+"/metrics")["ecr_mirror_upstream_throttled_bytes_total"]; got != throttled {
		t.Errorf("cache hits of %.0f MiB went through the cap (%.0f bytes)", total/(1<<20), got-throttled)
	}
	if c := fake.Counters(); float64(c.S3BytesSent) != upstream {
		t.Errorf("the hits went upstream: S3 sent %d more bytes", c.S3BytesSent-int64(upstream))
	}
}

// BenchmarkResume pulls a cold 256 MiB blob whose S3 connection is reset
// at 25%, 50% and 75%, and reports whether the client completed with the
// right bytes (completed: 1), the S3 bytes as a multiple of the blob size
// (s3/size), and the client's throughput.
//
//	go test -run '^$' -bench Resume -benchtime 3x ./cmd/ecr-mirror/
func BenchmarkResume(b *testing.B) {
	const size = 256 << 20
	fake := fakeecr.Start(b, fakeecr.Options{})
	data := testkit.RandomBytes(70, size)
	dgst := fake.PutBlob("bench/resume", data)
	c := benchClient()
	var took time.Duration
	var s3Bytes, completed float64
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		m := startMirror(b, fake, mirrorOpts{})
		fake.ResetCounters()
		fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: size / 4, Times: 3})
		b.StartTimer()
		start := time.Now()
		resp, err := c.Get(m.URL + "/v2/bench/resume/blobs/" + dgst.String())
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		took += time.Since(start)
		b.StopTimer()
		if err == nil && n == size && resp.StatusCode == http.StatusOK && digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)) == dgst {
			completed++
		} else {
			b.Errorf("status %d, %d of %d bytes, err %v", resp.StatusCode, n, size, err)
		}
		if got := s3RangeStarts(b, fake, dgst, 3); !slices.Equal(got, []int64{size / 4, size / 2, 3 * size / 4}) {
			b.Errorf("Range requests from %v", got)
		}
		s3Bytes += float64(fake.Counters().S3BlobBytes[dgst])
		m.Stop()
		os.RemoveAll(m.Dir)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(completed/float64(b.N), "completed")
	b.ReportMetric(s3Bytes/float64(b.N)/size, "s3/size")
	b.ReportMetric(float64(size)*float64(b.N)/took.Seconds()/1e6, "client-MB/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMaxRate pulls a cold 60 MiB blob with UPSTREAM_MAX_RATE=20m and
// reports the measured upstream rate as a ratio of the cap (rate/cap).
//
//	go test -run '^$' -bench MaxRate -benchtime 3x ./cmd/ecr-mirror/
func BenchmarkMaxRate(b *testing.B) {
	const size, rate = 60 << 20, 20 << 20
	fake := fakeecr.Start(b, fakeecr.Options{})
	data := testkit.RandomBytes(71, size)
	dgst := fake.PutBlob("bench/rate", data)
	c := benchClient()
	var took time.Duration
	var sent float64
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		m := startMirror(b, fake, mirrorOpts{env: map[string]string{"UPSTREAM_MAX_RATE": "20m"}})
		fake.ResetCounters()
		b.StartTimer()
		start := time.Now()
		resp, err := c.Get(m.URL + "/v2/bench/rate/blobs/" + dgst.String())
		if err != nil {
			b.Fatal(err)
		}
		var got bytes.Buffer
		n, err := io.Copy(&got, resp.Body)
		resp.Body.Close()
		took += time.Since(start)
		b.StopTimer()
		if err != nil || n != size || !bytes.Equal(got.Bytes(), data) {
			b.Errorf("status %d, %d of %d bytes, err %v", resp.StatusCode, n, size, err)
		}
		sent += float64(fake.Counters().S3BlobBytes[dgst])
		m.Stop()
		os.RemoveAll(m.Dir)
		b.StartTimer()
	}
	b.StopTimer()
	measured := sent / took.Seconds()
	b.ReportMetric(measured/(1<<20), "upstream-MiB/s")
	b.ReportMetric(measured/rate, "rate/cap")
	b.ReportMetric(0, "ns/op")
}

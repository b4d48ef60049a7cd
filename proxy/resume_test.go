package proxy

import (
	"bytes"
	"cmp"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// edgeOptions configure newEdgeEnv: newEnv's wiring with the settings of
// resumption and the bandwidth cap.
type edgeOptions struct {
	fake    fakeecr.Options
	retries int
	stall   time.Duration // 0: DefaultStallTimeout
	maxRate int64
}

// newEdgeEnv is newEnv with edgeOptions.
func newEdgeEnv(t *testing.T, o edgeOptions) *testEnv {
	t.Helper()
	return newEnv(t, envOptions{edge: o})
}

// fetchAll GETs a blob through the mirror from n clients at once.
func (e *testEnv) fetchAll(t *testing.T, repo string, dgst digest.Digest, n int) []fetchResult {
	t.Helper()
	out := make([]fetchResult, n)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			resp, err := e.srv.Client().Get(e.srv.URL + "/v2/" + repo + "/blobs/" + dgst.String())
			if err != nil {
				out[i].err = err
				return
			}
			defer resp.Body.Close()
			out[i].status = resp.StatusCode
			out[i].body, out[i].err = io.ReadAll(resp.Body)
		})
	}
	wg.Wait()
	return out
}

// rangeStarts lists the offsets of the ranged S3 GETs of dgst the fake
// saw ("bytes=N-" gives N), in ascending order rather than the order the
// fake logged them: it logs a request when its handler returns, and the
// handler of a stalled body the mirror gave up on may return after the
// next one's. Each resumption starts past the last, so sorting loses
// nothing a test could check.
func rangeStarts(t *testing.T, fake *fakeecr.Server, dgst digest.Digest) []int64 {
	t.Helper()
	var out []int64
	for _, r := range fake.Counters().Requests {
		if r.Endpoint != fakeecr.EndpointS3 || !strings.HasSuffix(r.Path, dgst.Encoded()) || r.Range == "" {
			continue
		}
		spec, ok := strings.CutPrefix(r.Range, "bytes=")
		first, rest, ok2 := strings.Cut(spec, "-")
		n, err := strconv.ParseInt(first, 10, 64)
		if !ok || !ok2 || rest != "" || err != nil {
			t.Fatalf("the mirror sent Range %q, want bytes=N-", r.Range)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// A blob whose upstream body stops short is resumed where it stopped,
// through the registry, into the same download: every client gets one
// whole, verified body, each byte crosses the link about once, and the
// Range requests start exactly where the cuts were. Answers that do not
// continue the body are used only when nothing was written yet; otherwise,
// and once the resumptions are used up, the download fails cleanly and
// the next one starts afresh.
//
// Nothing here depends on timing: a stall fires when the test advances
// the stall clock (stallAt), and a body that is to fail is held open
// (Fault.Hold) until every client has joined the download.
func TestResume(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	const q = size / 4
	tests := []struct {
		name    string
		retries int
		fault   fakeecr.Fault
		// held: the first body is held open until every client has
		// joined the download, then cut.
		held    bool
		stalls  []int64 // where the body stalls: the clock is advanced there
		ok      bool
		ranges  []int64 // the Range requests' starts, in order
		s3Gets  int64   // S3 GETs without Range
		resumes int64
		// discards: an answer was dropped unread, so S3 may have sent
		// more than the blob.
		discards bool
		clients  int // 0: 3
	}{
		{name: "reset at 25%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q, Times: 1},
			ok: true, ranges: []int64{q}, s3Gets: 1, resumes: 1},
		{name: "reset at 50%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1},
			ok: true, ranges: []int64{2 * q}, s3Gets: 1, resumes: 1},
		{name: "reset at 75%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 3 * q, Times: 1},
			ok: true, ranges: []int64{3 * q}, s3Gets: 1, resumes: 1},
		{name: "reset at 25, 50 and 75%", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q, Times: 3},
			ok: true, ranges: []int64{q, 2 * q, 3 * q}, s3Gets: 1, resumes: 3},
		{name: "reset 5 times of 5", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: size / 8, Times: 5},
			ok: true, ranges: []int64{size / 8, 2 * size / 8, 3 * size / 8, 4 * size / 8, 5 * size / 8}, s3Gets: 1, resumes: 5},
		{name: "stall at 50%", fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: 2 * q, Times: 1}, stalls: []int64{2 * q},
			ok: true, ranges: []int64{2 * q}, s3Gets: 1, resumes: 1},
		{name: "stall at 25% and 75%", fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: q, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultStall, After: 2 * q, Times: 1}}, stalls: []int64{q, 3 * q},
			ok: true, ranges: []int64{q, 3 * q}, s3Gets: 1, resumes: 2},
		{name: "stall before the first byte", fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: -1, Times: 1}, stalls: []int64{0},
			ok: true, ranges: []int64{0}, s3Gets: 1, resumes: 1},
		{name: "resumption failing with 503, then resumed", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 503, Endpoint: fakeecr.EndpointS3, Times: 1}},
			ok: true, ranges: []int64{2 * q, 2 * q}, s3Gets: 1, resumes: 2},
		{name: "range ignored with nothing written: restart", fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: -1, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultIgnoreRange, Times: 1}}, stalls: []int64{0},
			ok: true, ranges: []int64{0}, s3Gets: 1, resumes: 1},
		{name: "wrong range with nothing written: restart without Range", fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: -1, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultWrongRange, Times: 1}}, stalls: []int64{0},
			ok: true, ranges: []int64{0}, s3Gets: 2, resumes: 1, discards: true},

		// The failing ones hold the first body open, so that every
		// client has joined the download when it fails.
		{name: "range ignored after bytes", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultIgnoreRange, Times: 1}}, held: true,
			ranges: []int64{2 * q}, s3Gets: 1, resumes: 1, discards: true},
		{name: "wrong range after bytes", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultWrongRange, After: 1000, Times: 1}}, held: true,
			ranges: []int64{2 * q}, s3Gets: 1, resumes: 1, discards: true},
		{name: "resumption refused with 403", fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: 2 * q, Times: 1,
			Then: &fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 403, Endpoint: fakeecr.EndpointS3, Times: 1}}, held: true,
			ranges: []int64{2 * q}, s3Gets: 1, resumes: 1},
		{name: "more cuts than retries", retries: 2, fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q / 2, Times: 3}, held: true,
			ranges: []int64{q / 2, q}, s3Gets: 1, resumes: 2},
		{name: "more stalls than retries", retries: 1, fault: fakeecr.Fault{Mode: fakeecr.FaultStall, After: q, Times: 2}, stalls: []int64{q, 2 * q},
			ranges: []int64{q}, s3Gets: 1, resumes: 1},
		{name: "no retries", retries: -1, fault: fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: q, Times: 1}, held: true,
			s3Gets: 1},
		{name: "digest mismatch is not resumed", fault: fakeecr.Fault{Mode: fakeecr.FaultCorrupt, Times: 1},
			s3Gets: 1, clients: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			retries := 5
			switch {
			case tt.retries < 0:
				retries = 0
			case tt.retries > 0:
				retries = tt.retries
			}
			e := newEdgeEnv(t, edgeOptions{retries: retries, stall: 200 * time.Millisecond})
			data := testkit.RandomBytes(31, size)
			dgst := e.fake.PutBlob("team/app", data)
			clients := cmp.Or(tt.clients, 3)
			fault := tt.fault
			hold := make(chan struct{})
			if tt.held {
				fault.Hold = hold
			}
			e.fake.SetFault(dgst, fault)

			done := make(chan []fetchResult, 1)
			go func() { done <- e.fetchAll(t, "team/app", dgst, clients) }()
			if tt.held || len(tt.stalls) > 0 {
				// The body is held open (or stalled): let every client
				// join before it goes on or fails.
				testwait.Until(t, "every client to join the download", func() bool {
					st := e.proxy.Stats()
					return st.Misses.Load()+st.Coalesced.Load() == int64(clients)
				})
				close(hold)
			}
			for i, at := range tt.stalls {
				e.waitStalled(t, dgst, at)
				if got := e.proxy.Stats().Resumes.Load(); got != int64(i) {
					t.Errorf("%d resumptions before stall %d fired, want %d", got, i+1, i)
				}
				e.fireStall()
			}
			results := <-done
			e.proxy.Wait()
			if st := e.proxy.Stats(); st.Misses.Load() != 1 || !tt.ok && st.Coalesced.Load() != int64(clients-1) {
				t.Errorf("%d misses and %d coalesced; want one download for %d clients", st.Misses.Load(), st.Coalesced.Load(), clients)
			}
			for i, r := range results {
				whole := r.err == nil && r.status == http.StatusOK && bytes.Equal(r.body, data)
				if tt.ok && !whole {
					t.Errorf("client %d: status %d, %d of %d bytes, err %v; want the whole blob", i, r.status, len(r.body), size, r.err)
				}
				if !tt.ok {
					if r.err == nil && len(r.body) == size {
						t.Errorf("client %d got a complete body (status %d) from a failed download", i, r.status)
					}
					if r.status == http.StatusOK && tt.fault.Mode != fakeecr.FaultCorrupt && !bytes.Equal(r.body, data[:len(r.body)]) {
						t.Errorf("client %d got wrong bytes before the transfer broke", i)
					}
				}
			}
			// The fake logs a request when its handler returns, which for
			// an answer the mirror dropped unread may be later.
			testwait.Until(t, "the fake to log the Range requests", func() bool { return len(rangeStarts(t, e.fake, dgst)) >= len(tt.ranges) })
			if got := rangeStarts(t, e.fake, dgst); !slices.Equal(got, tt.ranges) {
				t.Errorf("Range requests from %v, want %v", got, tt.ranges)
			}
			c := e.fake.Counters()
			if c.S3Get[dgst] != tt.s3Gets {
				t.Errorf("%d S3 GETs without Range, want %d", c.S3Get[dgst], tt.s3Gets)
			}
			if n := c.S3BlobBytes[dgst]; !tt.discards && n > size*11/10 {
				t.Errorf("S3 sent %d bytes for a %d byte blob: %.2f×", n, size, float64(n)/size)
			}
			if want := int64(len(tt.ranges)) + 1; c.BlobGet != want && tt.s3Gets == 1 {
				t.Errorf("%d registry blob GETs, want %d: every resumption asks the registry", c.BlobGet, want)
			}
			if got := e.proxy.Stats().Resumes.Load(); got != tt.resumes {
				t.Errorf("Stats.Resumes = %d, want %d\n%s", got, tt.resumes, e.logs)
			}
			if got := e.proxy.Stats().UpstreamBytes.Load(); tt.ok && got < size {
				t.Errorf("Stats.UpstreamBytes = %d, want at least %d", got, size)
			}
			if !tt.ok {
				e.assertNotStored(t, dgst)
				e.fake.ClearFaults()
				if r := e.fetchAll(t, "team/app", dgst, 1)[0]; r.err != nil || !bytes.Equal(r.body, data) {
					t.Fatalf("the pull after the failure: status %d, %d bytes, err %v", r.status, len(r.body), r.err)
				}
				e.proxy.Wait()
			}
			if _, err := e.store.Stat(dgst); err != nil {
				t.Errorf("the blob is not stored: %v", err)
			}
			if tmp := e.tempFiles(t); len(tmp) != 0 {
				t.Errorf("tmp/ holds %v", tmp)
			}
			// The presigned URLs stay out of the logs, resumptions included.
			if logs := e.logs.String(); strings.Contains(logs, "X-Amz-") {
				t.Errorf("the log holds a presigned URL:\n%s", logs)
			}
		})
	}
}

// Close during the backoff before a resumption ends the download at once:
// nothing is stored, and the client's transfer fails.
func TestCloseDuringResumeBackoff(t *testing.T) {
	t.Parallel()
	e := newEdgeEnv(t, edgeOptions{retries: 5})
	e.proxy.resume.backoff, e.proxy.resume.maxBackoff = time.Hour, time.Hour
	const size = 256 << 10
	data := testkit.RandomBytes(32, size)
	dgst := e.fake.PutBlob("team/app", data)
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: size / 2, Times: 1})
	done := e.startDownload(t, "team/app", dgst)
	testwait.Until(t, "the first resumption", func() bool { return e.proxy.Stats().Resumes.Load() == 1 })
	// Close returns at once: with a backoff of an hour, a Close that
	// waited for it would run the test past its deadline.
	e.proxy.Close()
	if r := <-done; r.err == nil && r.status == http.StatusOK {
		t.Errorf("the client got %d bytes and no error from an abandoned download", len(r.body))
	}
	e.assertNotStored(t, dgst)
	if got := rangeStarts(t, e.fake, dgst); len(got) != 0 {
		t.Errorf("resumed after Close: Range requests from %v", got)
	}
}

// A manifest body cut short is not resumed (ECR's registry serves it
// whole, and it is small): the download fails as before.
func TestManifestNotResumed(t *testing.T) {
	t.Parallel()
	e := newEdgeEnv(t, edgeOptions{retries: 5})
	body := testManifest(33)
	dgst := e.fake.PutManifest("team/app", "v1", ociManifest, body)
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultTruncate, Times: 1})
	if resp, got, err := e.do(t, t.Context(), http.MethodGet, "/v2/team/app/manifests/"+dgst.String(), nil); err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("a truncated manifest was served whole (%d of %d bytes)", len(got), len(body))
	}
	e.proxy.Wait()
	if got := e.proxy.Stats().Resumes.Load(); got != 0 {
		t.Errorf("Stats.Resumes = %d, want 0", got)
	}
	e.assertNotStored(t, dgst)
}

func TestContinues(t *testing.T) {
	t.Parallel()
	const size = 1000
	tests := []struct {
		name          string
		status        int
		contentRange  string
		contentLength int64
		offset, size  int64
		ok            bool
	}{
		{name: "206 at the offset", status: 206, contentRange: "bytes 400-999/1000", contentLength: 600, offset: 400, size: size, ok: true},
		{name: "206 without a length", status: 206, contentRange: "bytes 400-999/1000", contentLength: -1, offset: 400, size: size, ok: true},
		{name: "206 from 0", status: 206, contentRange: "bytes 0-999/1000", contentLength: 1000, offset: 0, size: size, ok: true},
		{name: "206 of unknown size blob", status: 206, contentRange: "bytes 400-999/1000", contentLength: 600, offset: 400, size: -1, ok: true},
		{name: "206 before the offset", status: 206, contentRange: "bytes 399-999/1000", contentLength: 601, offset: 400, size: size},
		{name: "206 after the offset", status: 206, contentRange: "bytes 401-999/1000", contentLength: 599, offset: 400, size: size},
		{name: "206 of another size", status: 206, contentRange: "bytes 400-1099/1100", contentLength: 700, offset: 400, size: size},
		{name: "206 of unknown total", status: 206, contentRange: "bytes 400-999/*", contentLength: 600, offset: 400, size: size},
		{name: "206 short of the end", status: 206, contentRange: "bytes 400-899/1000", contentLength: 500, offset: 400, size: size},
		{name: "206 length disagrees", status: 206, contentRange: "bytes 400-999/1000", contentLength: 500, offset: 400, size: size},
		{name: "206 without Content-Range", status: 206, contentLength: 600, offset: 400, size: size},
		{name: "200 from 0", status: 200, contentLength: 1000, offset: 0, size: size, ok: true},
		{name: "200 from 0 of another size", status: 200, contentLength: 999, offset: 0, size: size},
		{name: "200 past 0", status: 200, contentLength: 1000, offset: 400, size: size},
		{name: "204", status: 204, offset: 400, size: size},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := &http.Response{StatusCode: tt.status, ContentLength: tt.contentLength, Header: http.Header{}}
			if tt.contentRange != "" {
				resp.Header.Set("Content-Range", tt.contentRange)
			}
			err := continues(resp, tt.offset, tt.size)
			if (err == nil) != tt.ok {
				t.Errorf("continues = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestResumeDelay(t *testing.T) {
	t.Parallel()
	r := resumePolicy{backoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second}
	tests := []struct {
		n        int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 200 * time.Millisecond, 400 * time.Millisecond},
		{6, 1600 * time.Millisecond, 3200 * time.Millisecond},
		{7, 2500 * time.Millisecond, 5 * time.Second},
		{40, 2500 * time.Millisecond, 5 * time.Second},
		{200, 2500 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := r.delay(tt.n)
			if d < tt.min || d > tt.max {
				t.Errorf("delay(%d) = %v, want within [%v, %v]", tt.n, d, tt.min, tt.max)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("delay(%d) is always %v: no jitter", tt.n, r.delay(tt.n))
		}
	}
	if d := (resumePolicy{}).delay(3); d != 0 {
		t.Errorf("zero policy delay = %v", d)
	}
	if p := newResumePolicy(-3); p.retries != 0 {
		t.Errorf("newResumePolicy(-3).retries = %d", p.retries)
	}
}

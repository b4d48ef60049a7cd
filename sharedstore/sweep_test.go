package sharedstore

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/s3test"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// testImage is an image written to the bucket: its manifest, config and
// layers, each layer of layerSize random bytes unless given.
type testImage struct {
	manifest digest.Digest
	blobs    []digest.Digest // config, then layers
	size     int64           // every object's bytes
}

// putImage writes an image with a config and the given layers (new
// random ones for nil entries) to s, the manifest as mediaType.
func putImage(t *testing.T, s *Store, seed uint64, mediaType string, layers ...[]byte) testImage {
	t.Helper()
	ctx := context.Background()
	var im testImage
	put := func(data []byte, mt string) oci.Descriptor {
		dgst := digest.FromBytes(data)
		if err := s.Put(ctx, dgst, int64(len(data)), mt, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		im.size += int64(len(data))
		return oci.Descriptor{MediaType: mt, Digest: dgst, Size: int64(len(data))}
	}
	config := put(testkit.RandomBytes(seed, 512), oci.MediaTypeImageConfig)
	im.blobs = append(im.blobs, config.Digest)
	doc := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "config": config}
	var descs []oci.Descriptor
	for i, l := range layers {
		if l == nil {
			l = testkit.RandomBytes(seed*100+uint64(i), 64<<10)
		}
		desc := put(l, oci.MediaTypeImageLayerGzip)
		descs = append(descs, desc)
		im.blobs = append(im.blobs, desc.Digest)
	}
	doc["layers"] = descs
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	im.manifest = put(b, mediaType).Digest
	return im
}

// expectHeld fails t for each of ds the bucket holds (want false) or
// lacks (want true), saying what it is.
func expectHeld(t *testing.T, s *Store, want bool, what string, ds ...digest.Digest) {
	t.Helper()
	for _, d := range ds {
		has, err := s.Has(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		if has != want {
			t.Errorf("%s %s: in the bucket %v, want %v", what, d, has, want)
		}
	}
}

// lastModified is the LastModified of key, by the server's clock.
func lastModified(t *testing.T, srv *s3test.Server, key string) time.Time {
	t.Helper()
	out, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String("tier"), Key: &key})
	if err != nil {
		t.Fatalf("HEAD %s: %v", key, err)
	}
	return aws.ToTime(out.LastModified)
}

// afterSecondOf waits until the bucket's next write is stamped later than
// key's LastModified (S3 stamps whole seconds).
func afterSecondOf(t *testing.T, srv *s3test.Server, key string) {
	t.Helper()
	lm := lastModified(t, srv, key)
	// A second, and a little more: file systems stamp files from a
	// clock that lags the one time.Now reads by up to a tick.
	testwait.Until(t, "the clock to pass "+key+"'s LastModified by a second", func() bool {
		return time.Now().After(lm.Add(time.Second + 100*time.Millisecond))
	})
}

// Against a real S3 server: the sweep lists the bucket, reads each
// manifest (typed, or sniffed behind a generic type), takes each image's
// last use from its used/ record and keeps pinned images whole: over a
// bound that fits two images of three, it deletes the least recently
// used unpinned image's own blobs and its record, and nothing else.
func TestSweepDeletesTheLeastRecentlyUsedUnpinnedImageFromTheBucket(t *testing.T) {
	t.Parallel()
	s, srv, obs := newStore(t)
	ctx := context.Background()
	shared := testkit.RandomBytes(99, 64<<10)
	pinned := putImage(t, s, 1, oci.MediaTypeImageManifest, nil)
	older := putImage(t, s, 2, "application/octet-stream", shared, nil) // sniffed
	newer := putImage(t, s, 3, oci.MediaTypeImageManifest, shared, nil)
	if err := s.PutPin(ctx, pinned.manifest, []string{"team/app:v1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkUsed(ctx, older.manifest); err != nil {
		t.Fatal(err)
	}
	afterSecondOf(t, srv, s.recordKey(dirUsed, older.manifest))
	if err := s.MarkUsed(ctx, newer.manifest); err != nil {
		t.Fatal(err)
	}
	if a, b := lastModified(t, srv, s.recordKey(dirUsed, older.manifest)), lastModified(t, srv, s.recordKey(dirUsed, newer.manifest)); !b.After(a) {
		t.Fatalf("the bucket stamped the newer use %v, not after the older %v: the test cannot order them", b, a)
	}
	for _, k := range []string{"mirror/used/" + older.manifest.Encoded(), "mirror/used/" + newer.manifest.Encoded(), "mirror/pins/" + pinned.manifest.Encoded()} {
		if keys := srv.Keys(t, "tier", k); len(keys) != 1 {
			t.Fatalf("bucket has %v, want the record %s", keys, k)
		}
	}

	total := pinned.size + older.size + newer.size - int64(len(shared))
	unshared := older.size - int64(len(shared))
	// Now is an hour on: nothing is in its grace period any more.
	clk := clockwork.NewFakeClockAt(time.Now().Add(time.Hour))
	w, err := s.NewSweeper(SweepOptions{MaxSize: total - unshared, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	gets := obs.get(OpGet, OutcomeOK)
	p, err := w.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The manifests are read, found by their records; their configs and
	// layers are not.
	if n := obs.get(OpGet, OutcomeOK) - gets; n != 3 {
		t.Errorf("the sweep read %d objects, want the 3 manifests", n)
	}
	if p.Bytes != total || p.Freed != unshared || p.Images != 1 {
		t.Errorf("sweep of %d bytes freed %d in %d images, want %d bytes, %d freed, 1 image", p.Bytes, p.Freed, p.Images, total, unshared)
	}
	sharedDigest := digest.FromBytes(shared)
	gone := append([]digest.Digest{older.manifest}, slices.DeleteFunc(slices.Clone(older.blobs), func(d digest.Digest) bool { return d == sharedDigest })...)
	expectHeld(t, s, false, "the least recently used image's", gone...)
	expectHeld(t, s, true, "the pinned, newer or shared", append(append([]digest.Digest{pinned.manifest, newer.manifest, sharedDigest}, pinned.blobs...), newer.blobs...)...)
	if keys := srv.Keys(t, "tier", "mirror/used/"); !slices.Equal(keys, []string{"mirror/used/" + newer.manifest.Encoded()}) {
		t.Errorf("used records left %v, want only the newer image's", keys)
	}
	if st := w.Stats(); st.Bytes != total-unshared || st.SweptBytes != unshared || st.Sweeps != 1 {
		t.Errorf("stats %+v, want %d bytes left, %d swept, 1 sweep", st, total-unshared, unshared)
	}

	// Unpinned, the pinned image is the least recently used. The sweep
	// reads no object again: digests do not change.
	if err := s.DeletePin(ctx, pinned.manifest); err != nil {
		t.Fatal(err)
	}
	w.opts.MaxSize = newer.size
	gets = obs.get(OpGet, OutcomeOK)
	if _, err = w.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := obs.get(OpGet, OutcomeOK) - gets; n != 0 {
		t.Errorf("the next sweep read %d objects, want 0: it knows them", n)
	}
	expectHeld(t, s, false, "the unpinned image's", append([]digest.Digest{pinned.manifest}, pinned.blobs...)...)
}

// Nothing younger than the grace period is swept: a download being
// written, or an image whose manifest has not landed yet.
func TestSweepLeavesObjectsInTheirGracePeriod(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	im := putImage(t, s, 5, oci.MediaTypeImageManifest, nil)
	orphan := testkit.RandomBytes(6, 1000)
	if err := s.Put(context.Background(), digest.FromBytes(orphan), 1000, "", bytes.NewReader(orphan)); err != nil {
		t.Fatal(err)
	}
	logs := new(testkit.SyncBuffer)
	w, err := s.NewSweeper(SweepOptions{MaxSize: 1, Clock: clockwork.NewFakeClockAt(time.Now()), Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p, err := w.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Delete) != 0 {
		t.Errorf("swept %d young objects", len(p.Delete))
	}
	expectHeld(t, s, true, "young", append(im.blobs, im.manifest, digest.FromBytes(orphan))...)
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "still over its bound") {
		t.Errorf("a sweep that could not get under the bound did not warn: %s", logs.String())
	}
}

// A replica rewrites a manifest's used/ record at most once per interval,
// whatever it serves in between.
func TestUsageRecordsAreThrottledPerInterval(t *testing.T) {
	t.Parallel()
	s, _, obs := newStore(t)
	clk := clockwork.NewFakeClock()
	ctx, cancel := context.WithCancel(context.Background())
	u := s.NewUsage(ctx, UsageOptions{Interval: time.Minute, Clock: clk})
	t.Cleanup(func() { cancel(); u.Wait() })
	a, b := digest.FromString("a"), digest.FromString("b")
	puts := func(want int) {
		t.Helper()
		testwait.Until(t, "the records to be written", func() bool { return obs.get(OpMetaPut, OutcomeOK) >= want })
	}
	for range 5 {
		u.Record(a)
	}
	u.Record(b)
	puts(2)
	clk.Advance(59 * time.Second)
	u.Record(a)
	clk.Advance(time.Second)
	u.Record(a)
	puts(3)
	// Every write queued was written: nothing else is waiting, so the
	// counts are final.
	testwait.Until(t, "the queue to drain", func() bool { return len(u.queue) == 0 })
	if n := obs.get(OpMetaPut, OutcomeOK); n != 3 {
		t.Errorf("%d record writes, want 3 (a twice, a minute apart; b once)", n)
	}
}

// Run sweeps once per interval, and only while elected says this replica
// sweeps.
func TestRunSweepsEachIntervalWhenElected(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	clk := clockwork.NewFakeClock()
	w, err := s.NewSweeper(SweepOptions{MaxSize: 1 << 30, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	var elected atomic.Bool
	asked := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, time.Minute, func() bool { e := elected.Load(); asked <- struct{}{}; return e })
	}()
	t.Cleanup(func() { cancel(); <-done })
	tick := func() {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, testwait.HangGuard)
		defer wcancel()
		if err := clk.BlockUntilContext(wctx, 1); err != nil {
			t.Fatalf("Run never waited for its interval: %v", err)
		}
		clk.Advance(time.Minute)
		<-asked
	}
	tick()
	tick()
	if n := w.Stats().Sweeps; n != 0 {
		t.Fatalf("%d sweeps while not elected", n)
	}
	elected.Store(true)
	tick()
	testwait.Until(t, "the elected sweep", func() bool { return w.Stats().Sweeps == 1 })
}

// A sweep that cannot read a manifest (or list the bucket) deletes
// nothing: without every manifest, any layer could look unreferenced.
// The failure is counted.
func TestSweepThatCannotReadDeletesNothing(t *testing.T) {
	t.Parallel()
	s, srv, _ := newStore(t)
	im := putImage(t, s, 7, oci.MediaTypeImageManifest, nil, nil)
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// Object GETs fail; listings (GETs of the bucket) and deletes pass.
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && !r.URL.Query().Has("list-type") {
			http.Error(w, "<Error><Code>InternalError</Code></Error>", http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	failing, err := New(Options{Bucket: "tier", Prefix: "mirror", PathStyle: true, AWS: s3test.AWSConfig(front.URL)})
	if err != nil {
		t.Fatal(err)
	}
	w, err := failing.NewSweeper(SweepOptions{MaxSize: 1, Clock: clockwork.NewFakeClockAt(time.Now().Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Sweep(context.Background()); err == nil {
		t.Fatal("a sweep whose reads all fail succeeded")
	}
	expectHeld(t, s, true, "after a failed sweep, the image's", append(im.blobs, im.manifest)...)
	srv.Stop()
	if _, err := w.Sweep(context.Background()); err == nil {
		t.Fatal("a sweep of a bucket that is down succeeded")
	}
	if st := w.Stats(); st.Failures != 2 || st.Sweeps != 0 || st.SweptBytes != 0 {
		t.Errorf("stats %+v, want 2 failures and nothing swept", st)
	}
}

// A bucket that takes requests and never answers fails the sweep, one
// request's timeout later, rather than holding it (and every later
// sweep) for good; nothing is deleted.
func TestSweepOfABucketThatNeverAnswersFails(t *testing.T) {
	t.Parallel()
	s, srv, _ := newStore(t)
	im := putImage(t, s, 8, oci.MediaTypeImageManifest, nil)
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		hang func(*http.Request) bool
	}{
		{"listing", func(r *http.Request) bool { return r.URL.Query().Has("list-type") }},
		{"manifest read", func(r *http.Request) bool { return r.Method == http.MethodGet && !r.URL.Query().Has("list-type") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			rp := httputil.NewSingleHostReverseProxy(target)
			rp.ErrorLog = log.New(io.Discard, "", 0)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.hang(r) {
					<-release
					return
				}
				rp.ServeHTTP(w, r)
			}))
			t.Cleanup(front.Close)
			t.Cleanup(func() { close(release) })
			hung, err := New(Options{Bucket: "tier", Prefix: "mirror", PathStyle: true, AWS: s3test.AWSConfig(front.URL)})
			if err != nil {
				t.Fatal(err)
			}
			w, err := hung.NewSweeper(SweepOptions{MaxSize: 1, RequestTimeout: 50 * time.Millisecond,
				Clock: clockwork.NewFakeClockAt(time.Now().Add(time.Hour))})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := w.Sweep(context.Background()); done <- err }()
			var sweepErr error
			testwait.Until(t, "the sweep of a bucket that never answers to end", func() bool {
				select {
				case sweepErr = <-done:
					return true
				default:
					return false
				}
			})
			if sweepErr == nil {
				t.Fatal("a sweep of a bucket that never answered succeeded")
			}
			if st := w.Stats(); st.Failures != 1 || st.SweptBytes != 0 {
				t.Errorf("stats %+v, want 1 failure and nothing swept", st)
			}
			expectHeld(t, s, true, "after a hung sweep, the image's", append(im.blobs, im.manifest)...)
		})
	}
}

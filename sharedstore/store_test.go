package sharedstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/s3test"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// outcomes counts Observe calls by op and outcome.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomes) observe(op, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n[op+" "+outcome]++
}

func (o *outcomes) get(op, outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[op+" "+outcome]
}

// newStore starts versitygw with one bucket and returns a store over it
// with 5 MiB parts.
func newStore(t *testing.T) (*Store, *s3test.Server, *outcomes) {
	t.Helper()
	srv := s3test.Start(t)
	srv.CreateBucket(t, "tier")
	obs := &outcomes{n: map[string]int{}}
	s, err := New(Options{Bucket: "tier", Prefix: "mirror", PathStyle: true, AWS: srv.AWS(), PartSize: 5 << 20, Observe: obs.observe})
	if err != nil {
		t.Fatal(err)
	}
	return s, srv, obs
}

func readAll(t *testing.T, s *Store, dgst digest.Digest) ([]byte, string) {
	t.Helper()
	obj, err := s.Open(context.Background(), dgst)
	if err != nil {
		t.Fatalf("Open(%s): %v", dgst, err)
	}
	defer obj.Body.Close()
	b, err := io.ReadAll(obj.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", dgst, err)
	}
	if obj.Size != int64(len(b)) {
		t.Errorf("Open(%s) size %d, body %d bytes", dgst, obj.Size, len(b))
	}
	return b, obj.MediaType
}

func TestPutOpenHasDeleteRoundTripByDigest(t *testing.T) {
	s, srv, _ := newStore(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int
	}{{"empty", 0}, {"small", 1000}, {"one part exactly", 5 << 20}, {"multipart", 11<<20 + 3}} {
		t.Run(tc.name, func(t *testing.T) {
			data := testkit.RandomBytes(uint64(tc.size)+1, tc.size)
			dgst := digest.FromBytes(data)
			if has, err := s.Has(ctx, dgst); err != nil || has {
				t.Fatalf("Has before Put = %v, %v; want false, nil", has, err)
			}
			if _, err := s.Open(ctx, dgst); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Open before Put: %v, want ErrNotFound", err)
			}
			if err := s.Put(ctx, dgst, int64(len(data)), "application/vnd.test", bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			got, mt := readAll(t, s, dgst)
			if !bytes.Equal(got, data) || mt != "application/vnd.test" {
				t.Fatalf("read back %d bytes (%s), want the %d written (application/vnd.test)", len(got), mt, len(data))
			}
			if keys := srv.Keys(t, "tier", s.Key(dgst)); len(keys) != 1 || keys[0] != "mirror/blobs/sha256/"+dgst.Encoded() {
				t.Errorf("objects %v, want mirror/blobs/sha256/%s", keys, dgst.Encoded())
			}
			if err := s.Delete(ctx, dgst); err != nil {
				t.Fatal(err)
			}
			if has, err := s.Has(ctx, dgst); err != nil || has {
				t.Fatalf("Has after Delete = %v, %v; want false, nil", has, err)
			}
		})
	}
}

// An object a store sends without Content-Length (chunked, as some
// gateways and proxies in front of a bucket do) opens with its size
// unknown (-1), never 0: a reader checking 0 bytes would take the whole
// object for corrupt, and delete it.
func TestObjectSentWithoutLengthOpensWithSizeUnknown(t *testing.T) {
	t.Parallel()
	s, srv, _ := newStore(t)
	data := testkit.RandomBytes(9, 70_000)
	dgst := digest.FromBytes(data)
	if err := s.Put(context.Background(), dgst, int64(len(data)), "application/vnd.test", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		return nil
	}
	front := httptest.NewServer(rp)
	t.Cleanup(front.Close)
	chunked, err := New(Options{Bucket: "tier", Prefix: "mirror", PathStyle: true, AWS: s3test.AWSConfig(front.URL)})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := chunked.Open(context.Background(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Body.Close()
	got, err := io.ReadAll(obj.Body)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	if obj.Size != -1 {
		t.Errorf("size %d of an object sent without its length, want -1 (unknown)", obj.Size)
	}
}

// A conditional create that finds the object there (another replica
// wrote it first) is success, single part or multipart, and leaves the
// first write's bytes.
func TestConditionalCreateOfAnExistingObjectIsSuccess(t *testing.T) {
	s, srv, obs := newStore(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int
	}{{"single", 4096}, {"multipart", 11 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			data := testkit.RandomBytes(uint64(tc.size), tc.size)
			dgst := digest.FromBytes(data)
			if err := s.Put(ctx, dgst, int64(len(data)), "", bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			other := bytes.Repeat([]byte{'x'}, len(data))
			key := s.Key(dgst)
			var err error
			if tc.size > int(s.partSize) {
				err = s.putMultipart(ctx, key, int64(len(other)), "", bytes.NewReader(other))
			} else {
				err = s.putSingle(ctx, key, int64(len(other)), "", bytes.NewReader(other))
			}
			if statusOf(err) != 412 {
				t.Fatalf("second conditional create: %v, want 412", err)
			}
			if got, _ := readAll(t, s, dgst); !bytes.Equal(got, data) {
				t.Fatal("the second write replaced the first")
			}
			if n := len(srv.Keys(t, "tier", "mirror/")); n < 1 {
				t.Fatalf("%d objects", n)
			}
		})
	}
	if obs.get(OpPut, OutcomeOK) != 2 {
		t.Errorf("put ok %d times, want 2", obs.get(OpPut, OutcomeOK))
	}
}

// Replicas writing one digest at once write it once: one put succeeds,
// the others find it there (Has) or get 412.
func TestConcurrentPutsOfOneDigestWriteOnce(t *testing.T) {
	s, _, obs := newStore(t)
	data := testkit.RandomBytes(7, 6<<20)
	dgst := digest.FromBytes(data)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = s.Put(context.Background(), dgst, int64(len(data)), "", bytes.NewReader(data)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("put %d: %v", i, err)
		}
	}
	if n := obs.get(OpPut, OutcomeOK); n != 1 {
		t.Errorf("%d puts wrote the object, want 1 (exists: %d)", n, obs.get(OpPut, OutcomeExists))
	}
	if got, _ := readAll(t, s, dgst); !bytes.Equal(got, data) {
		t.Fatal("object does not hold the content")
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct{ in, bucket, prefix, err string }{
		{in: "s3://b", bucket: "b"},
		{in: "s3://b/", bucket: "b"},
		{in: "s3://b/p/q/", bucket: "b", prefix: "p/q"},
		{in: "https://b/p", err: "want s3://"},
		{in: "s3:///p", err: "want s3://"},
		{in: "s3://k:s@b/p", err: "want s3://"},
		{in: "https://key:hunter2@b/p", err: "key:xxxxx@b"}, // the password is never echoed
		{in: "s3://b/p?x=1", err: "want s3://"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			b, p, err := ParseURL(tc.in)
			if tc.err != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.err)) {
					t.Fatalf("ParseURL(%q) error %v, want one saying %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || b != tc.bucket || p != tc.prefix {
				t.Fatalf("ParseURL(%q) = %q, %q, %v; want %q, %q", tc.in, b, p, err, tc.bucket, tc.prefix)
			}
		})
	}
}

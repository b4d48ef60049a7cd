package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// A pull through the mirror gets every digest right; a second pull makes
// no upstream blob download, while the tag is still revalidated upstream.
func TestPullTwice(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, err := random.Image(256<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	manifest, blobs := putImage(t, fake, "team/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{})

	got, err := pullImage(t, m, "team/app:v1")
	if err != nil {
		t.Fatalf("first pull: %v", err)
	}
	if d, _ := got.Digest(); d.String() != manifest.String() {
		t.Fatalf("pulled manifest %s, want %s", d, manifest)
	}
	first := fake.Counters()
	for _, b := range blobs {
		if n := first.S3Get[b]; n != 1 {
			t.Errorf("blob %s downloaded %d times from S3, want 1", b, n)
		}
		testwait.Until(t, "blob "+b.String()+" on disk", func() bool { return m.stored(b) })
	}
	if first.S3AuthRejected != 0 {
		t.Errorf("S3 rejected %d requests for carrying Authorization", first.S3AuthRejected)
	}

	if _, err := pullImage(t, m, "team/app:v1"); err != nil {
		t.Fatalf("second pull: %v", err)
	}
	second := fake.Counters()
	for _, b := range blobs {
		if second.S3Get[b] != first.S3Get[b] {
			t.Errorf("second pull downloaded blob %s again", b)
		}
	}
	if second.BlobGet != first.BlobGet || second.ManifestGetByDigest != first.ManifestGetByDigest || second.ManifestGetByTag != first.ManifestGetByTag {
		t.Errorf("second pull fetched content upstream: before %+v after %+v", first, second)
	}
	if second.ManifestHead <= first.ManifestHead {
		t.Errorf("second pull did not revalidate the tag upstream (manifest HEADs %d -> %d)", first.ManifestHead, second.ManifestHead)
	}
}

// Thirty-two clients asking at once for one uncached blob cause one
// upstream download, and every one of them gets the right bytes.
func TestConcurrentMissesShareOneDownload(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(1, 4<<20)
	dgst := fake.PutBlob("big/blob", data)
	// The body stops after 1 MiB until every client follows the download.
	hold := make(chan struct{})
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 20, Hold: hold, Times: 1})
	m := startMirror(t, fake, mirrorOpts{})

	const clients = 32
	wait := startFetches(t, m, "big/blob", dgst, clients)
	close(hold)
	for _, err := range wait() {
		if err != nil {
			t.Error(err)
		}
	}
	c := fake.Counters()
	if c.S3Get[dgst] != 1 || c.BlobGet != 1 {
		t.Fatalf("%d clients caused %d registry blob GETs and %d S3 downloads, want 1 each", clients, c.BlobGet, c.S3Get[dgst])
	}
	testwait.Until(t, "blob on disk", func() bool { return m.stored(dgst) })
}

// Truncated and corrupted upstream bodies make the client's transfer fail,
// leave nothing in the store, and the next pull succeeds.
func TestBrokenUpstreamBodiesAreNeverServedWhole(t *testing.T) {
	t.Parallel()
	for _, mode := range []fakeecr.FaultMode{fakeecr.FaultTruncate, fakeecr.FaultCorrupt} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			fake := fakeecr.Start(t, fakeecr.Options{})
			data := testkit.RandomBytes(2, 3<<20)
			dgst := fake.PutBlob("team/app", data)
			// Without resumption: a cut body would be resumed (resume_test.go).
			m := startMirror(t, fake, mirrorOpts{env: map[string]string{"UPSTREAM_RETRIES": "0"}})
			fake.SetFault(dgst, fakeecr.Fault{Mode: mode, Times: 1})

			if err := fetchBlob(t, m, "team/app", dgst); err == nil {
				t.Fatal("client got a complete, verified body from a broken upstream")
			} else if strings.Contains(err.Error(), "complete body") {
				t.Fatalf("client got a complete body with wrong bytes: %v", err)
			}
			testwait.Until(t, "the failed download to clean up", func() bool { return len(m.tempFiles(t)) == 0 })
			if m.stored(dgst) {
				t.Fatal("a broken download was stored")
			}
			if err := fetchBlob(t, m, "team/app", dgst); err != nil {
				t.Fatalf("pull after the fault cleared: %v", err)
			}
			if got := fake.Counters().S3Get[dgst]; got != 2 {
				t.Fatalf("S3 downloads = %d, want 2 (broken, then good)", got)
			}
			testwait.Until(t, "the good download to be stored", func() bool { return m.stored(dgst) })
		})
	}
}

// A range covering a whole uncached blob is served verified: a corrupted
// upstream body makes the transfer fail.
func TestWholeRangeOfBrokenBlobFails(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(9, 1<<20)
	dgst := fake.PutBlob("team/app", data)
	m := startMirror(t, fake, mirrorOpts{})
	fake.SetFault("", fakeecr.Fault{Mode: fakeecr.FaultCorrupt})
	resp, body, err := get(t, "GET", m.URL+"/v2/team/app/blobs/"+dgst.String(), http.Header{"Range": {"bytes=0-"}})
	if err == nil && len(body) == len(data) {
		t.Fatalf("client got a complete %d body of corrupted bytes", resp.StatusCode)
	}
	testwait.Until(t, "temp files to go", func() bool { return len(m.tempFiles(t)) == 0 })
	if m.stored(dgst) {
		t.Fatal("corrupted blob stored")
	}
}

// A broken manifest body by digest is refused the same way.
func TestCorruptManifestNotStored(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(1024, 1)
	manifest, _ := putImage(t, fake, "team/app", "", img)
	m := startMirror(t, fake, mirrorOpts{})
	fake.SetFault(manifest, fakeecr.Fault{Mode: fakeecr.FaultCorrupt, Times: 1})
	hdr := http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}}
	if resp, body, err := get(t, "GET", m.URL+"/v2/team/app/manifests/"+manifest.String(), hdr); err == nil && digest.FromBytes(body) == manifest {
		t.Fatal("corrupted manifest produced a correct body?")
	} else if err == nil && resp.StatusCode == 200 && len(body) == int(resp.ContentLength) {
		t.Fatalf("client got a complete corrupted manifest (%d bytes)", len(body))
	}
	testwait.Until(t, "temp files to go", func() bool { return len(m.tempFiles(t)) == 0 })
	if m.stored(manifest) {
		t.Fatal("corrupted manifest stored")
	}
	resp, body, err := get(t, "GET", m.URL+"/v2/team/app/manifests/"+manifest.String(), hdr)
	if err != nil || resp.StatusCode != 200 || digest.FromBytes(body) != manifest {
		t.Fatalf("second GET: %v %v digest %s", err, resp, digest.FromBytes(body))
	}
	if resp.Header.Get("Docker-Content-Digest") != manifest.String() {
		t.Fatalf("Docker-Content-Digest = %q", resp.Header.Get("Docker-Content-Digest"))
	}
}

// Tokens that expire (ECR answers 403 DENIED) are refreshed without a
// failed pull, and tokens longer than 4 KiB work.
func TestExpiredLongTokenRefreshed(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	fake := fakeecr.Start(t, fakeecr.Options{Now: clk.Now, TokenPasswordLen: 6000})
	img1, _ := random.Image(4096, 2)
	img2, _ := random.Image(4096, 2)
	putImage(t, fake, "team/app", "one", img1)
	putImage(t, fake, "team/app", "two", img2)
	m := startMirror(t, fake, mirrorOpts{})
	if _, err := pullImage(t, m, "team/app:one"); err != nil {
		t.Fatalf("pull with a 6000-byte-password token: %v", err)
	}
	before := fake.Counters()
	clk.Advance(13 * time.Hour) // the fake now considers the mirror's token expired
	if _, err := pullImage(t, m, "team/app:two"); err != nil {
		t.Fatalf("pull after the token expired: %v", err)
	}
	after := fake.Counters()
	if after.Denied == before.Denied {
		t.Fatal("upstream never said the token expired; the test proves nothing")
	}
	if after.TokensIssued <= before.TokensIssued {
		t.Fatal("the mirror did not fetch a new token")
	}
}

// The store stays under its bound and evicts the least recently used.
func TestEvictionLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	const size = 1 << 20
	var d [4]digest.Digest
	for i := range d {
		d[i] = fake.PutBlob("team/app", testkit.RandomBytes(uint64(10+i), size))
	}
	m := startMirror(t, fake, mirrorOpts{maxSize: fmt.Sprint(3*size + size/2)})
	must := func(dgst digest.Digest) {
		t.Helper()
		if err := fetchBlob(t, m, "team/app", dgst); err != nil {
			t.Fatal(err)
		}
		testwait.Until(t, "download to settle", func() bool { return len(m.tempFiles(t)) == 0 })
	}
	must(d[0])
	must(d[1])
	must(d[2])
	must(d[0]) // hit: d[1] is now least recently used
	must(d[3]) // needs room: evicts d[1]
	testwait.Until(t, "the least recently used blob to be evicted", func() bool { return !m.stored(d[1]) })
	for _, i := range []int{0, 2, 3} {
		if !m.stored(d[i]) {
			t.Errorf("blob %d evicted, want kept", i)
		}
	}
	if got := m.storedBytes(t); got > 3*size+size/2 {
		t.Errorf("store holds %d bytes, over its %d byte bound", got, 3*size+size/2)
	}
	if c := fake.Counters(); c.S3Get[d[0]] != 1 {
		t.Errorf("blob 0 downloaded %d times, want 1 (the second GET was a hit)", c.S3Get[d[0]])
	}
}

// A blob larger than the whole budget is streamed through and not kept.
func TestBlobLargerThanCacheStreamedNotKept(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(3, 2<<20))
	m := startMirror(t, fake, mirrorOpts{maxSize: "1m"})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "temp files to go", func() bool { return len(m.tempFiles(t)) == 0 })
	if m.stored(dgst) || m.storedBytes(t) != 0 {
		t.Fatal("a blob over the cache budget was kept")
	}
}

// A restart keeps the cache: the same pull downloads nothing.
func TestRestartKeepsCache(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(64<<10, 2)
	_, blobs := putImage(t, fake, "team/app", "v1", img)
	dir := t.TempDir()
	m := startMirror(t, fake, mirrorOpts{dir: dir})
	if _, err := pullImage(t, m, "team/app:v1"); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	before := fake.Counters()

	m2 := startMirror(t, fake, mirrorOpts{dir: dir})
	if _, err := pullImage(t, m2, "team/app:v1"); err != nil {
		t.Fatalf("pull after restart: %v", err)
	}
	after := fake.Counters()
	for _, b := range blobs {
		if after.S3Get[b] != before.S3Get[b] {
			t.Errorf("blob %s downloaded again after restart", b)
		}
	}
	if after.BlobGet != before.BlobGet {
		t.Errorf("registry blob GETs after restart: %d -> %d", before.BlobGet, after.BlobGet)
	}
}

// A client hanging up does not stop the download: the next one finds the
// blob cached.
func TestDownloadOutlivesClient(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(4, 1<<20))
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultSlow, Rate: 2 << 20, Times: 1})
	m := startMirror(t, fake, mirrorOpts{})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", m.URL+"/v2/team/app/blobs/"+dgst.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	testwait.Until(t, "the abandoned download to complete", func() bool { return m.stored(dgst) })
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	if n := fake.Counters().S3Get[dgst]; n != 1 {
		t.Fatalf("S3 downloads = %d, want 1", n)
	}
}

// HEAD on a miss asks upstream without downloading; Range on a miss is
// answered from upstream while the whole blob is cached in the background.
func TestHeadAndRangeOnMiss(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(5, 1<<20)
	dgst := fake.PutBlob("team/app", data)
	m := startMirror(t, fake, mirrorOpts{})
	blobURL := m.URL + "/v2/team/app/blobs/" + dgst.String()

	resp, _, err := get(t, "HEAD", blobURL, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", err, resp)
	}
	if resp.ContentLength != int64(len(data)) || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Fatalf("HEAD answered length %d digest %q", resp.ContentLength, resp.Header.Get("Docker-Content-Digest"))
	}
	if c := fake.Counters(); c.S3Get[dgst] != 0 || c.BlobHead != 1 {
		t.Fatalf("HEAD downloaded the blob (S3 GETs %d, registry HEADs %d)", c.S3Get[dgst], c.BlobHead)
	}

	// A fill held after 1000 bytes until the range is answered: the
	// range must not wait for it (it would wait forever).
	hold := make(chan struct{})
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1000, Hold: hold, Times: 1})
	resp, body, err := get(t, "GET", blobURL, http.Header{"Range": {"bytes=500000-500999"}})
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("range GET: %v %v", err, resp)
	}
	if m.stored(dgst) {
		t.Fatal("the range was answered only after the whole blob was downloaded")
	}
	close(hold)
	if !bytes.Equal(body, data[500000:501000]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 500000-500999/%d", len(data)) {
		t.Fatalf("range GET returned %d bytes, Content-Range %q", len(body), resp.Header.Get("Content-Range"))
	}
	testwait.Until(t, "the background fill", func() bool { return m.stored(dgst) })
	resp, body, err = get(t, "GET", blobURL, http.Header{"Range": {"bytes=-10"}})
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(body, data[len(data)-10:]) {
		t.Fatalf("range on the cached blob: %v %v %d bytes", err, resp, len(body))
	}
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	c := fake.Counters()
	if c.S3Get[dgst] != 1 || c.S3RangeGet[dgst] != 1 {
		t.Fatalf("S3 full GETs %d (want 1), ranged %d (want 1)", c.S3Get[dgst], c.S3RangeGet[dgst])
	}
}

// A tag that moves upstream is followed at once.
func TestTagRevalidated(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img1, _ := random.Image(1024, 1)
	img2, _ := random.Image(1024, 1)
	d1, _ := putImage(t, fake, "team/app", "latest", img1)
	m := startMirror(t, fake, mirrorOpts{})
	if got, err := pullImage(t, m, "team/app:latest"); err != nil {
		t.Fatal(err)
	} else if d, _ := got.Digest(); d.String() != d1.String() {
		t.Fatalf("got %s want %s", d, d1)
	}
	d2, _ := putImage(t, fake, "team/app", "latest", img2)
	got, err := pullImage(t, m, "team/app:latest")
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d.String() != d2.String() {
		t.Fatalf("after the tag moved the mirror served %s, want %s", d, d2)
	}
	// The manifest of a tag lookup is stored by its digest too.
	resp, body, err := get(t, "GET", m.URL+"/v2/team/app/manifests/"+d2.String(), nil)
	if err != nil || resp.StatusCode != 200 || digest.FromBytes(body) != d2 {
		t.Fatalf("manifest by digest: %v %v", err, resp)
	}
	if c := fake.Counters(); c.ManifestGetByDigest != 0 {
		t.Fatalf("manifest by digest went upstream %d times; it was cached by the tag lookup", c.ManifestGetByDigest)
	}
}

// tags/list passes through with the Link pointing at the mirror.
func TestTagsListLinkPointsAtMirror(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(1024, 1)
	for _, tag := range []string{"a", "b", "c"} {
		putImage(t, fake, "team/app", tag, img)
	}
	m := startMirror(t, fake, mirrorOpts{})
	resp, body, err := get(t, "GET", m.URL+"/v2/team/app/tags/list?n=2", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", err, resp)
	}
	if !strings.Contains(string(body), `"a"`) || !strings.Contains(string(body), `"b"`) || strings.Contains(string(body), `"c"`) {
		t.Fatalf("first page %s", body)
	}
	link := resp.Header.Get("Link")
	if !strings.HasPrefix(link, "<"+m.URL+"/v2/team/app/tags/list?") || strings.Contains(link, fake.Host()) {
		t.Fatalf("Link = %q, want it on the mirror %s", link, m.URL)
	}
	next := strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
	_, body, err = get(t, "GET", next, nil)
	if err != nil || !strings.Contains(string(body), `"c"`) {
		t.Fatalf("second page: %v %s", err, body)
	}
}

// Malformed names, digests and ranges get 400/416 with OCI errors, and
// nothing reaches upstream or leaves the cache directory.
func TestBadInput(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(6, 100)
	dgst := fake.PutBlob("team/app", data)
	m := startMirror(t, fake, mirrorOpts{})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	blob := "/v2/team/app/blobs/" + dgst.String()
	uncached := "/v2/team/app/blobs/" + fake.PutBlob("team/app", testkit.RandomBytes(8, 100)).String()
	tests := []struct {
		name, method, path string
		hdr                http.Header
		status             int
		code               registry.Code
	}{
		{name: "uppercase repo", method: "GET", path: "/v2/Team/App/manifests/latest", status: 400, code: registry.CodeNameInvalid},
		{name: "traversal in name", method: "GET", path: "/v2/team/..%2F..%2Fetc/manifests/latest", status: 400, code: registry.CodeNameInvalid},
		{name: "bad tag", method: "GET", path: "/v2/team/app/manifests/.hidden", status: 404, code: registry.CodeManifestUnknown},
		{name: "digest not hex", method: "GET", path: "/v2/team/app/blobs/sha256:" + strings.Repeat("g", 64), status: 400, code: registry.CodeDigestInvalid},
		{name: "digest traversal", method: "GET", path: "/v2/team/app/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd", status: 400},
		{name: "digest short", method: "HEAD", path: "/v2/team/app/blobs/sha256:abc", status: 400},
		{name: "unknown algorithm", method: "GET", path: "/v2/team/app/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, code: registry.CodeDigestInvalid},
		{name: "malformed range", method: "GET", path: blob, hdr: http.Header{"Range": {"bytes=5-2"}}, status: 416, code: registry.CodeRangeInvalid},
		{name: "garbage range", method: "GET", path: blob, hdr: http.Header{"Range": {"bytes=a-b"}}, status: 416, code: registry.CodeRangeInvalid},
		{name: "range past end", method: "GET", path: blob, hdr: http.Header{"Range": {"bytes=100-"}}, status: 416, code: registry.CodeRangeInvalid},
		{name: "range past end of uncached blob", method: "GET", path: uncached, hdr: http.Header{"Range": {"bytes=100-"}}, status: 416, code: registry.CodeRangeInvalid},
		{name: "unknown blob", method: "GET", path: "/v2/team/app/blobs/" + digest.FromString("nope").String(), status: 404, code: registry.CodeBlobUnknown},
		{name: "unknown repo", method: "GET", path: "/v2/no/such/manifests/latest", status: 404, code: registry.CodeNameUnknown},
		{name: "unknown tag", method: "GET", path: "/v2/team/app/manifests/nope", status: 404, code: registry.CodeManifestUnknown},
		{name: "push", method: "PUT", path: "/v2/team/app/manifests/latest", status: 405, code: registry.CodeUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := get(t, tt.method, m.URL+tt.path, tt.hdr)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.code != "" {
				code, msg, ok := registry.ParseErrorBody(body)
				if !ok || code != tt.code || msg == "" {
					t.Fatalf("body %q, want OCI error %s", body, tt.code)
				}
			}
		})
	}
	// Everything the store wrote is inside its directory.
	parent := filepath.Dir(m.Dir)
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if p := filepath.Join(parent, e.Name()); p != m.Dir && !strings.HasPrefix(p, m.Dir) {
			if _, err := os.Stat(filepath.Join(p, "passwd")); err == nil {
				t.Fatalf("a file appeared outside the cache dir: %s", p)
			}
		}
	}
}

// An unreachable upstream is a 502 that says so; blobs cached earlier are
// still served.
func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(7, 4096)
	dgst := fake.PutBlob("team/app", data)
	m := startMirror(t, fake, mirrorOpts{})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	fake.SetDown(true)
	defer fake.SetDown(false)
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatalf("cached blob with upstream down: %v", err)
	}
	resp, body, err := get(t, "GET", m.URL+"/v2/team/app/blobs/"+digest.FromString("other").String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	code, msg, _ := registry.ParseErrorBody(body)
	if resp.StatusCode != http.StatusBadGateway || code != registry.CodeUnavailable || !strings.Contains(msg, "unreachable") {
		t.Fatalf("got %d %s %q, want 502 UNAVAILABLE saying upstream is unreachable", resp.StatusCode, code, msg)
	}
}

// Secrets never reach a client or a log line: no token, no AWS key, no
// presigned S3 URL.
func TestSecretsStayInside(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	fake := fakeecr.Start(t, fakeecr.Options{Now: clk.Now})
	img, _ := random.Image(4096, 2)
	_, blobs := putImage(t, fake, "team/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{})
	if _, err := pullImage(t, m, "team/app:v1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(13 * time.Hour)
	fake.SetFault(blobs[0], fakeecr.Fault{Mode: fakeecr.FaultTruncate, Times: 1})
	resp, _, err := get(t, "GET", m.URL+"/v2/team/app/blobs/"+digest.FromString("x").String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, "X-Amz") || strings.Contains(v, fake.S3URL()) {
				t.Errorf("header %s: %s leaks upstream details", k, v)
			}
		}
	}
	logs := m.Logs.String()
	for _, secret := range append(fake.IssuedTokens(), "fake-secret-key-never-logged", "X-Amz-Signature", "X-Amz-Security-Token", "Basic ") {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret (%.20s...)", secret)
		}
	}
}

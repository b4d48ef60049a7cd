// Tests of the properties a peer-to-peer engine in front of the mirror
// relies on (README "Behind a P2P engine"): spegel, which answers what the
// nodes hold and a 404 for the rest so that containerd moves on to the
// mirror, and Dragonfly's dfdaemon, which reads blobs from the mirror in
// Range pieces and keys its tasks by blob URL.

package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// rangeCase is one Range request on a blob of blobSize bytes and what the
// mirror must answer: status, the body as a slice of the blob ([from,to)),
// and the Content-Range (empty: none).
type rangeCase struct {
	name     string
	hdr      http.Header
	status   int
	from, to int64
	crange   string
}

// blobSize is the size of the blobs the range tests read: several
// Dragonfly-sized pieces would be too slow to hash here, a few 64 KiB ones
// are not.
const blobSize = 256 << 10

// rangeCases are the Range requests P2P engines and clients send: dfdaemon
// learns a blob's size with bytes=0-0 and reads it in pieces bytes=a-b,
// containerd resumes and splits with bytes=a-, others ask for a suffix.
// Several ranges get the whole blob (RFC 9110 lets a server ignore Range),
// and If-Range applies the range only when it names the blob's ETag.
func rangeCases(dgst digest.Digest) []rangeCase {
	etag := `"` + dgst.String() + `"`
	n := int64(blobSize)
	return []rangeCase{
		{name: "first byte (dfdaemon's size probe)", hdr: rng("bytes=0-0"), status: 206, from: 0, to: 1, crange: fmt.Sprintf("bytes 0-0/%d", n)},
		{name: "a piece", hdr: rng("bytes=65536-131071"), status: 206, from: 65536, to: 131072, crange: fmt.Sprintf("bytes 65536-131071/%d", n)},
		{name: "last piece, end past the size", hdr: rng(fmt.Sprintf("bytes=%d-%d", n-100, n+1000)), status: 206, from: n - 100, to: n, crange: fmt.Sprintf("bytes %d-%d/%d", n-100, n-1, n)},
		{name: "open-ended (containerd's resume and chunks)", hdr: rng("bytes=1000-"), status: 206, from: 1000, to: n, crange: fmt.Sprintf("bytes 1000-%d/%d", n-1, n)},
		{name: "suffix", hdr: rng("bytes=-100"), status: 206, from: n - 100, to: n, crange: fmt.Sprintf("bytes %d-%d/%d", n-100, n-1, n)},
		{name: "several ranges: the whole blob", hdr: rng("bytes=0-9,20-29"), status: 200, from: 0, to: n},
		{name: "If-Range with the blob's ETag", hdr: http.Header{"Range": {"bytes=10-19"}, "If-Range": {etag}}, status: 206, from: 10, to: 20, crange: fmt.Sprintf("bytes 10-19/%d", n)},
		{name: "If-Range with another ETag: the whole blob", hdr: http.Header{"Range": {"bytes=10-19"}, "If-Range": {`"sha256:0000"`}}, status: 200, from: 0, to: n},
		{name: "If-Range with a date: the whole blob", hdr: http.Header{"Range": {"bytes=10-19"}, "If-Range": {"Sat, 05 Dec 2026 10:00:00 GMT"}}, status: 200, from: 0, to: n},
		{name: "start past the end", hdr: rng(fmt.Sprintf("bytes=%d-", n)), status: 416, crange: fmt.Sprintf("bytes */%d", n)},
	}
}

func rng(v string) http.Header { return http.Header{"Range": {v}} }

// check sends c to url and checks the answer against data, the whole blob.
func (c rangeCase) check(t *testing.T, url string, data []byte) {
	t.Helper()
	resp, body, err := get(t, http.MethodGet, url, c.hdr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != c.status {
		t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, c.status, body)
	}
	if got := resp.Header.Get("Content-Range"); got != c.crange {
		t.Errorf("Content-Range %q, want %q", got, c.crange)
	}
	if c.status == http.StatusRequestedRangeNotSatisfiable {
		if !bytes.Contains(body, []byte("RANGE_INVALID")) {
			t.Errorf("416 body %q, want an OCI RANGE_INVALID error", body)
		}
		return
	}
	if want := data[c.from:c.to]; !bytes.Equal(body, want) {
		t.Errorf("body is %d bytes (digest %s), want bytes %d-%d of the blob", len(body), digest.FromBytes(body), c.from, c.to-1)
	}
	if resp.ContentLength != c.to-c.from {
		t.Errorf("Content-Length %d, want %d", resp.ContentLength, c.to-c.from)
	}
}

// Range GETs on a cached blob are answered from the cache with the exact
// bytes, and upstream is not asked at all.
func TestP2PRangeGetsOnCachedBlobAreServedFromTheCache(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(161, blobSize)
	dgst := fake.PutBlob("team/app", data)
	m := startMirror(t, fake, mirrorOpts{})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the blob in the cache", func() bool { return m.stored(dgst) })
	before := fake.Counters()
	url := m.URL + "/v2/team/app/blobs/" + dgst.String()
	for _, c := range rangeCases(dgst) {
		t.Run(c.name, func(t *testing.T) { c.check(t, url, data) })
	}
	after := fake.Counters()
	if after.BlobGet != before.BlobGet || after.BlobHead != before.BlobHead ||
		after.S3Get[dgst] != before.S3Get[dgst] || after.S3RangeGet[dgst] != before.S3RangeGet[dgst] {
		t.Errorf("ranges on a cached blob reached upstream: blob GETs %d -> %d, HEADs %d -> %d, S3 GETs %d -> %d, S3 range GETs %d -> %d",
			before.BlobGet, after.BlobGet, before.BlobHead, after.BlobHead,
			before.S3Get[dgst], after.S3Get[dgst], before.S3RangeGet[dgst], after.S3RangeGet[dgst])
	}
}

// The same Range requests on a blob the mirror does not hold yet get the
// same answers; each starts the one download of the whole blob into the
// cache, so a P2P engine's pieces never cost more than one blob from ECR.
func TestP2PRangeGetsOnMissGetTheSameAnswers(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{})
	for i := range len(rangeCases("")) {
		data := testkit.RandomBytes(uint64(170+i), blobSize)
		dgst := fake.PutBlob("team/app", data)
		c := rangeCases(dgst)[i]
		t.Run(c.name, func(t *testing.T) {
			c.check(t, m.URL+"/v2/team/app/blobs/"+dgst.String(), data)
			testwait.Until(t, "the whole blob in the cache", func() bool { return m.stored(dgst) })
			if n := fake.Counters().S3Get[dgst]; n != 1 {
				t.Errorf("the whole blob was downloaded %d times, want once", n)
			}
		})
	}
}

// stableHeaders are the headers a P2P engine keeps with a blob it caches
// under its URL and hands to every node: they must not depend on whether
// the mirror had the blob.
var stableHeaders = []string{"Content-Length", "Content-Type", "Docker-Content-Digest", "ETag", "Accept-Ranges"}

// answer is what one request for a blob URL got, as a P2P engine sees it
// (redirects not followed).
type answer struct {
	status int
	header http.Header
	body   []byte
}

// noRedirects GETs or HEADs u without following redirects.
func noRedirects(t *testing.T, method, u string) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return answer{resp.StatusCode, resp.Header, body}
}

// A blob URL is answered with the same status, bytes and headers whether
// the mirror downloads the blob (miss) or has it (hit), for HEAD and GET,
// and never with a redirect: ECR's 307 to a presigned S3 URL, which
// changes with every request and expires, stays between the mirror and
// ECR. A P2P engine keys the blob by the URL it asked and serves the
// first answer's headers to every node.
func TestP2PBlobURLsAreStable(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub"}})
	for i, tt := range []struct{ name, url string }{
		{"ECR repository", m.URL + "/v2/docker-hub/library/app/blobs/%s"},
		{"ns=docker.io", m.URL + "/v2/library/app/blobs/%s?ns=docker.io"},
	} {
		data := testkit.RandomBytes(uint64(190+i), blobSize)
		dgst := fake.PutBlob("docker-hub/library/app", data)
		t.Run(tt.name, func(t *testing.T) {
			url := fmt.Sprintf(tt.url, dgst)
			headMiss := noRedirects(t, http.MethodHead, url)
			miss := noRedirects(t, http.MethodGet, url)
			testwait.Until(t, "the blob in the cache", func() bool { return m.stored(dgst) })
			headHit := noRedirects(t, http.MethodHead, url)
			hit := noRedirects(t, http.MethodGet, url)
			for _, a := range []struct {
				name string
				answer
			}{{"HEAD (miss)", headMiss}, {"GET (miss)", miss}, {"HEAD (hit)", headHit}, {"GET (hit)", hit}} {
				if a.status != http.StatusOK {
					t.Errorf("%s: status %d (Location %q), want 200", a.name, a.status, a.header.Get("Location"))
				}
				if loc := a.header.Get("Location"); loc != "" {
					t.Errorf("%s: Location %q: a P2P engine would key the blob by a URL that expires", a.name, loc)
				}
				if got := a.header.Get("Docker-Content-Digest"); got != dgst.String() {
					t.Errorf("%s: Docker-Content-Digest %q, want %s", a.name, got, dgst)
				}
				if got := a.header.Get("ETag"); got != `"`+dgst.String()+`"` {
					t.Errorf("%s: ETag %q, want the quoted digest", a.name, got)
				}
				for _, h := range stableHeaders {
					if got, want := a.header.Values(h), hit.header.Values(h); !slices.Equal(got, want) {
						t.Errorf("%s: %s %q, but a GET on a hit has %q", a.name, h, got, want)
					}
				}
			}
			if !bytes.Equal(miss.body, data) || !bytes.Equal(hit.body, data) {
				t.Errorf("GET bodies are %d bytes (miss) and %d (hit), want the blob's %d", len(miss.body), len(hit.body), len(data))
			}
			if n := fake.Counters().S3Get[dgst]; n != 1 {
				t.Errorf("ECR served the blob %d times, want once", n)
			}
		})
	}
}

// ecrPaths lists the registry paths the fake ECR was asked, as "METHOD
// path".
func ecrPaths(fake *fakeecr.Server) []string {
	var out []string
	for _, r := range fake.Counters().Requests {
		if r.Endpoint == fakeecr.EndpointRegistry && strings.HasPrefix(r.Path, "/v2/") && r.Path != "/v2/" {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	return out
}

// ns= chooses the upstream repository of blobs and manifests alike, by
// tag and by digest, on a miss and on a hit: a P2P engine passes
// containerd's query on unchanged (dfdaemon even reads the registry from
// it), and the same path in another namespace is other content.
func TestP2PNamespaceIsHonouredForBlobsAndManifests(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(200, nil)
	putRawImage(fake, "docker-hub/library/app", "v1", img)
	decoy := newRawImage(201, nil) // a mirror that ignored ns would serve it
	putRawImage(fake, "library/app", "v1", decoy)
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub"}})
	base := m.URL + "/v2/library/app/"
	accept := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
	for _, round := range []string{"miss", "hit"} {
		for _, tt := range []struct {
			name, path string
			want       []byte
		}{
			{"manifest by tag", "manifests/v1", img.Manifest},
			{"manifest by digest", "manifests/" + img.Dgst.String(), img.Manifest},
			{"config blob", "blobs/" + img.ConfigDgst.String(), img.Config},
			{"layer blob", "blobs/" + img.LayerDgst.String(), img.Layer},
		} {
			t.Run(round+"/"+tt.name, func(t *testing.T) {
				resp, body, err := get(t, http.MethodGet, base+tt.path+"?ns=docker.io", accept)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, tt.want) {
					t.Fatalf("status %d, %d bytes (digest %s); want 200 with %s", resp.StatusCode, len(body), digest.FromBytes(body), digest.FromBytes(tt.want))
				}
			})
		}
		for _, dgst := range []digest.Digest{img.ConfigDgst, img.LayerDgst} {
			testwait.Until(t, "the blobs in the cache", func() bool { return m.stored(dgst) })
		}
	}
	// The decoy's content by digest, asked in docker.io's namespace: ECR's
	// docker-hub/library/app does not have it.
	for _, tt := range []struct{ path, code string }{
		{"blobs/" + decoy.LayerDgst.String(), "BLOB_UNKNOWN"},
		{"manifests/" + decoy.Dgst.String(), "MANIFEST_UNKNOWN"},
	} {
		resp, body, err := get(t, http.MethodGet, base+tt.path+"?ns=docker.io", accept)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte(tt.code)) {
			t.Errorf("%s?ns=docker.io (only in library/app): %d %s; want 404 %s", tt.path, resp.StatusCode, body, tt.code)
		}
	}
	for _, p := range ecrPaths(fake) {
		if !strings.HasPrefix(p[strings.Index(p, " ")+1:], "/v2/docker-hub/library/app/") {
			t.Errorf("ECR was asked %s: ns=docker.io names docker-hub/library/app only", p)
		}
	}
}

// Content that is not there gets a 404 with the OCI code that says what
// is missing, after one question to ECR and never a 5xx: containerd tries
// the next host (and then the registry itself) on a 404, while a 5xx on a
// blob or manifest fails the pull on containerd 1.x. A P2P engine in
// front passes the 404 on the same way.
func TestP2PContentNotThereIs404(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(210, nil)
	putRawImage(fake, "docker-hub/library/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub"}})
	unknown := digest.FromString("nowhere upstream")
	for _, tt := range []struct {
		name, method, path string
		hdr                http.Header
		code               string // "" for HEAD: no body
		ecrAsked           int    // registry requests the answer may cost
	}{
		{"blob GET", http.MethodGet, "/v2/library/app/blobs/" + unknown.String() + "?ns=docker.io", nil, "BLOB_UNKNOWN", 1},
		{"blob Range GET", http.MethodGet, "/v2/library/app/blobs/" + unknown.String() + "?ns=docker.io", rng("bytes=0-0"), "BLOB_UNKNOWN", 1},
		{"blob HEAD", http.MethodHead, "/v2/library/app/blobs/" + unknown.String() + "?ns=docker.io", nil, "", 1},
		{"manifest by digest", http.MethodGet, "/v2/library/app/manifests/" + unknown.String() + "?ns=docker.io", nil, "MANIFEST_UNKNOWN", 1},
		{"manifest HEAD by digest", http.MethodHead, "/v2/library/app/manifests/" + unknown.String() + "?ns=docker.io", nil, "", 1},
		{"unknown tag", http.MethodGet, "/v2/library/app/manifests/v9?ns=docker.io", nil, "MANIFEST_UNKNOWN", 2},
		{"unknown tag HEAD", http.MethodHead, "/v2/library/app/manifests/v9?ns=docker.io", nil, "", 1},
		{"unknown repository", http.MethodGet, "/v2/library/nothing/manifests/v1?ns=docker.io", nil, "NAME_UNKNOWN", 2},
		{"unknown repository's blob", http.MethodGet, "/v2/library/nothing/blobs/" + img.LayerDgst.String() + "?ns=docker.io", nil, "NAME_UNKNOWN", 1},
		{"unmapped registry", http.MethodGet, "/v2/library/app/manifests/v1?ns=quay.io", nil, "NAME_UNKNOWN", 0},
		{"unmapped registry's blob", http.MethodGet, "/v2/library/app/blobs/" + img.LayerDgst.String() + "?ns=quay.io", nil, "NAME_UNKNOWN", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(ecrPaths(fake))
			resp, body, err := get(t, tt.method, m.URL+tt.path, tt.hdr)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte(tt.code)) {
				t.Errorf("%s %s: %d %s; want 404 %s", tt.method, tt.path, resp.StatusCode, body, tt.code)
			}
			if asked := len(ecrPaths(fake)) - before; asked > tt.ecrAsked {
				t.Errorf("%s %s asked ECR %d times, want at most %d (no retries on a 404)", tt.method, tt.path, asked, tt.ecrAsked)
			}
		})
	}
}

// dfdaemon's back-to-source on a blob the mirror does not hold: the size
// probe, then pieces, four at a time. Every piece gets its exact bytes,
// and ECR serves the blob once: the probe, the first Range, starts the
// one download of the whole blob (and may itself be answered by a ranged
// request to ECR); later pieces follow that download. The ratio of ECR
// bytes to the blob's size is logged (README "Behind a P2P engine").
func TestP2PDragonflyPiecesOnMissCostOneDownload(t *testing.T) {
	t.Parallel()
	const size, piece = 8 << 20, 1 << 20
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(220, size)
	dgst := fake.PutBlob("team/app", data)
	m := startMirror(t, fake, mirrorOpts{})
	readPieces(t, m.URL+"/v2/team/app/blobs/"+dgst.String(), data, piece)
	testwait.Until(t, "the whole blob in the cache", func() bool { return m.stored(dgst) })
	c := fake.Counters()
	sent := c.S3BlobBytes[dgst]
	t.Logf("ECR bytes / blob size = %.3f (%d whole downloads, %d ranged)", float64(sent)/size, c.S3Get[dgst], c.S3RangeGet[dgst])
	if c.S3Get[dgst] != 1 || c.S3RangeGet[dgst] > 1 {
		t.Errorf("ECR served %d whole downloads and %d ranged ones, want 1 and at most the probe's", c.S3Get[dgst], c.S3RangeGet[dgst])
	}
	if sent > size+1 {
		t.Errorf("ECR sent %d bytes for a %d-byte blob, more than the blob and the one-byte probe", sent, size)
	}
}

// readPieces reads the blob at url as dfdaemon does from its source: a
// bytes=0-0 probe, then pieces of the given length, four at a time, each
// checked against data.
func readPieces(t *testing.T, url string, data []byte, piece int64) {
	t.Helper()
	size := int64(len(data))
	probe := rangeCase{hdr: rng("bytes=0-0"), status: 206, from: 0, to: 1, crange: fmt.Sprintf("bytes 0-0/%d", size)}
	probe.check(t, url, data)
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for off := int64(0); off < size; off += piece {
		end := min(off+piece, size)
		c := rangeCase{hdr: rng(fmt.Sprintf("bytes=%d-%d", off, end-1)), status: 206, from: off, to: end,
			crange: fmt.Sprintf("bytes %d-%d/%d", off, end-1, size)}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.check(t, url, data)
		})
	}
	wg.Wait()
}

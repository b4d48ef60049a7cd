package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// testImage is an image in the fake: a manifest, its config and a layer.
type testImage struct {
	manifest, config, layer digest.Digest
	manifestBody, layerBody []byte
}

// putImage stores an image in repo under tag, with contents made from
// seed; the same seed gives the same digests in every repository.
func putImage(fake *fakeecr.Server, repo, tag string, seed uint64) testImage {
	cfgBody := fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","seed":%d}`, seed)
	layerBody := testkit.RandomBytes(seed, 96<<10)
	img := testImage{config: fake.PutBlob(repo, cfgBody), layer: fake.PutBlob(repo, layerBody), layerBody: layerBody}
	img.manifestBody = fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"%s",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}`,
		ociManifest, img.config, len(cfgBody), img.layer, len(layerBody))
	img.manifest = fake.PutManifest(repo, tag, ociManifest, img.manifestBody)
	return img
}

// pull fetches an image through the mirror by tag, then its config and
// layer, and fails the test unless every answer is 200.
func (e *testEnv) pull(t *testing.T, repo, tag string, img testImage) {
	t.Helper()
	for _, path := range []string{"manifests/" + tag, "blobs/" + img.config.String(), "blobs/" + img.layer.String()} {
		if resp, body := e.mustDo(t, http.MethodGet, "/v2/"+repo+"/"+path, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s/%s: %d %s", repo, path, resp.StatusCode, body)
		}
	}
	e.proxy.Wait()
}

// upstreamHeads counts the HEADs the fake saw for path (below /v2/).
func upstreamHeads(fake *fakeecr.Server, path string) int {
	n := 0
	for _, r := range fake.Counters().Requests {
		if r.Method == http.MethodHead && r.Path == "/v2/"+path {
			n++
		}
	}
	return n
}

// Content cached for one repository is not served under another that
// upstream does not hold it in: by digest, blob and manifest, GET, HEAD
// and Range alike, and a layer is never served as a manifest. Each refusal
// cost one HEAD upstream and no body.
func TestCachedContentServedOnlyWhereUpstreamHoldsIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := putImage(e.fake, "team-b/private", "v1", 1)
	e.fake.PutBlob("team-a/app", []byte("team-a exists upstream"))
	e.pull(t, "team-b/private", "v1", img)
	e.fake.ResetCounters()

	tests := []struct {
		name, method, path string
		hdr                http.Header
		code               string
	}{
		{"layer GET", http.MethodGet, "team-a/app/blobs/" + img.layer.String(), nil, "BLOB_UNKNOWN"},
		{"layer HEAD", http.MethodHead, "team-a/app/blobs/" + img.layer.String(), nil, ""},
		{"layer Range", http.MethodGet, "team-a/app/blobs/" + img.layer.String(), http.Header{"Range": {"bytes=0-99"}}, "BLOB_UNKNOWN"},
		{"config GET", http.MethodGet, "team-a/app/blobs/" + img.config.String(), nil, "BLOB_UNKNOWN"},
		{"manifest GET", http.MethodGet, "team-a/app/manifests/" + img.manifest.String(), nil, "MANIFEST_UNKNOWN"},
		{"manifest HEAD", http.MethodHead, "team-a/app/manifests/" + img.manifest.String(), nil, ""},
		{"repository unknown upstream", http.MethodGet, "team-a/anything/blobs/" + img.layer.String(), nil, "BLOB_UNKNOWN"},
		{"layer as a manifest, own repository", http.MethodGet, "team-b/private/manifests/" + img.layer.String(), nil, "MANIFEST_UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			heads := upstreamHeads(e.fake, tt.path)
			resp, body := e.mustDo(t, tt.method, "/v2/"+tt.path, tt.hdr)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("%s /v2/%s: %d, want 404", tt.method, tt.path, resp.StatusCode)
			}
			if tt.code != "" && !strings.Contains(string(body), `"`+tt.code+`"`) {
				t.Errorf("body %s, want code %s", body, tt.code)
			}
			if bytes.Contains(body, img.layerBody[:64]) || bytes.Contains(body, img.manifestBody[:64]) {
				t.Error("the refusal carries the content")
			}
			if n := upstreamHeads(e.fake, tt.path) - heads; n != 1 {
				t.Errorf("upstream saw %d HEADs of %s, want 1", n, tt.path)
			}
		})
	}
	fc := e.fake.Counters()
	if fc.BlobGet != 0 || fc.ManifestGetByDigest != 0 || len(fc.S3Get) != 0 || len(fc.S3RangeGet) != 0 {
		t.Errorf("upstream saw %d blob GETs, %d manifest GETs, S3 %v %v; want no body fetched", fc.BlobGet, fc.ManifestGetByDigest, fc.S3Get, fc.S3RangeGet)
	}
	// The owner still gets everything, from the cache, without a HEAD.
	e.fake.ResetCounters()
	e.pull(t, "team-b/private", "v1", img)
	if fc := e.fake.Counters(); fc.BlobHead != 0 || fc.BlobGet != 0 || fc.ManifestHead != 1 {
		t.Errorf("owner's pull: upstream saw %d blob HEADs, %d blob GETs, %d manifest HEADs; want 0, 0, 1 (the tag)", fc.BlobHead, fc.BlobGet, fc.ManifestHead)
	}
}

// A client of another repository cannot join a download in flight: it is
// refused before it is handed a byte, while the downloading client gets
// the whole blob.
func TestFlightNotJoinedFromAnotherRepository(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.fake.PutBlob("team-a/app", []byte("team-a exists upstream"))
	data := testkit.RandomBytes(7, 256<<10)
	dgst := e.fake.PutBlob("team-b/private", data)
	// The body stops after 1 KiB until the joiner has been answered.
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 10, Delay: time.Hour, Times: 1})
	first := e.startDownload(t, "team-b/private", dgst)

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := e.mustDo(t, method, "/v2/team-a/app/blobs/"+dgst.String(), nil)
		if resp.StatusCode != http.StatusNotFound || bytes.Contains(body, data[:64]) {
			t.Errorf("%s by team-a during the download: %d, %d body bytes; want 404 and none of the blob", method, resp.StatusCode, len(body))
		}
	}
	if e.proxy.flight(dgst) == nil {
		t.Fatal("the download ended before the joiners were answered: the test proved nothing")
	}
	e.fake.ClearFaults() // the stalled body stays stalled: drop it, the download resumes
	e.proxy.Close()
	<-first
}

// Content the store holds that the asking repository does hold upstream
// is confirmed with one HEAD, then served from the cache: no body is
// downloaded again, and the next request asks nothing.
func TestUnlinkedContentConfirmedWithOneHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := putImage(e.fake, "team-b/private", "v1", 3)
	e.pull(t, "team-b/private", "v1", img)
	e.fake.PutBlob("team-c/app", img.layerBody) // the same layer, in another repository
	e.fake.ResetCounters()

	path := "team-c/app/blobs/" + img.layer.String()
	for i := range 2 {
		resp, body := e.mustDo(t, http.MethodGet, "/v2/"+path, nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.layerBody) {
			t.Fatalf("GET %d: %d, %d bytes; want the layer", i, resp.StatusCode, len(body))
		}
	}
	fc := e.fake.Counters()
	if heads := upstreamHeads(e.fake, path); heads != 1 || fc.BlobGet != 0 || len(fc.S3Get) != 0 {
		t.Errorf("upstream saw %d HEADs, %d blob GETs, S3 GETs %v; want 1, 0, none", heads, fc.BlobGet, fc.S3Get)
	}
	if n := e.proxy.Stats().Confirmations.Load(); n != 1 {
		t.Errorf("Stats.Confirmations = %d, want 1", n)
	}
}

// Pulling an image by tag links what its manifest references: layers
// another repository cached are served with no HEAD at all.
func TestManifestLinksItsContent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := putImage(e.fake, "team-b/private", "v1", 4)
	e.pull(t, "team-b/private", "v1", img)
	same := putImage(e.fake, "team-c/app", "v2", 4) // the same image pushed there
	e.fake.ResetCounters()
	e.pull(t, "team-c/app", "v2", same)
	fc := e.fake.Counters()
	if fc.BlobHead != 0 || fc.BlobGet != 0 || fc.ManifestGetByTag != 0 || fc.ManifestHead != 1 {
		t.Errorf("upstream saw %d blob HEADs, %d blob GETs, %d manifest GETs by tag, %d manifest HEADs; want 0, 0, 0, 1",
			fc.BlobHead, fc.BlobGet, fc.ManifestGetByTag, fc.ManifestHead)
	}
}

// With ECR unreachable, content linked to the repository is served and
// content that is not is refused: never served on the store's word alone.
func TestOfflineServesOnlyLinkedContent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := putImage(e.fake, "team-b/private", "v1", 5)
	e.fake.PutBlob("team-a/app", []byte("team-a exists upstream"))
	e.pull(t, "team-b/private", "v1", img)
	e.fake.SetDown(true)

	for _, path := range []string{"blobs/" + img.layer.String(), "blobs/" + img.config.String(), "manifests/" + img.manifest.String()} {
		resp, _ := e.mustDo(t, http.MethodGet, "/v2/team-b/private/"+path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("offline GET team-b/private/%s: %d, want 200", path, resp.StatusCode)
		}
		resp, body := e.mustDo(t, http.MethodGet, "/v2/team-a/app/"+path, nil)
		if resp.StatusCode < 500 || bytes.Contains(body, img.layerBody[:64]) {
			t.Errorf("offline GET team-a/app/%s: %d; want a 5xx without the content", path, resp.StatusCode)
		}
	}
}

// A manifest is served with the media type upstream declared, even when
// the same bytes were stored first as a blob (a push of the manifest's
// bytes to another repository), and the store's type is corrected.
func TestManifestTypeSurvivesBlobOfSameBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := putImage(e.fake, "team-b/private", "v1", 6)
	if err := e.store.Put(img.manifest, "application/octet-stream", img.manifestBody); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"v1", img.manifest.String()} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := e.mustDo(t, method, "/v2/team-b/private/manifests/"+ref, nil)
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != ociManifest {
				t.Errorf("%s manifest %s: %d, Content-Type %q; want 200, %s", method, ref, resp.StatusCode, ct, ociManifest)
			}
		}
	}
	if info, err := e.store.Stat(img.manifest); err != nil || info.MediaType != ociManifest {
		t.Errorf("store holds the manifest as %q (%v), want %s", info.MediaType, err, ociManifest)
	}
	// A later blob write of the same bytes does not downgrade it.
	w, err := e.store.Create(img.manifest, int64(len(img.manifestBody)), "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(img.manifestBody)
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if info, _ := e.store.Stat(img.manifest); info.MediaType != ociManifest {
		t.Errorf("after a blob write the store holds the manifest as %q, want %s", info.MediaType, ociManifest)
	}
}

// Links outlive the process: after a restart the same repository is
// served without a HEAD, another one still needs upstream's word.
func TestLinksSurviveRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := putImage(e.fake, "team-b/private", "v1", 8)
	e.pull(t, "team-b/private", "v1", img)
	e.proxy.Close()
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(cache.Options{Dir: e.dir, MaxSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	p, err := New(Options{Upstream: e.proxy.up.base, Client: e.proxy.up.client, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, d := range []digest.Digest{img.manifest, img.config, img.layer} {
		if !p.linked("team-b/private", d) {
			t.Errorf("%s is not linked to team-b/private after a restart", d)
		}
		if p.linked("team-a/app", d) {
			t.Errorf("%s is linked to team-a/app", d)
		}
	}
}

// The confirming HEAD's Accept names every manifest type and the
// client's own, and nothing that could split the header.
func TestConfirmAccept(t *testing.T) {
	t.Parallel()
	got := confirmAccept([]string{"application/vnd.example+json", "bad,value", "x\r\nInjected: 1"}).Get("Accept")
	for _, want := range append(oci.ManifestTypes(), "application/vnd.example+json", oci.MediaTypeDockerSchema1Signed) {
		if !strings.Contains(got, want) {
			t.Errorf("Accept %q lacks %s", got, want)
		}
	}
	if strings.Contains(got, "bad,value") || strings.ContainsAny(got, "\r\n") {
		t.Errorf("Accept %q carries a client value it should have dropped", got)
	}
}

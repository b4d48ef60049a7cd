package main

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// pushEnv turns push on in the mirror.
var pushEnv = map[string]string{"PUSH": "true"}

// newTransport returns a client transport of the test's own (other tests'
// httptest servers close http.DefaultTransport's idle connections).
func newTransport(t *testing.T) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// locationLog is a client transport that remembers every Location the
// client was answered with.
type locationLog struct {
	base http.RoundTripper
	mu   sync.Mutex
	locs []string
}

func (l *locationLog) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(req)
	if err == nil {
		if loc := resp.Header.Get("Location"); loc != "" {
			l.mu.Lock()
			l.locs = append(l.locs, loc)
			l.mu.Unlock()
		}
	}
	return resp, err
}

// assertOnMirror fails unless the client saw Locations and every one was
// on the mirror, none on the upstream registry or its S3.
func (l *locationLog) assertOnMirror(t *testing.T, m *mirror, fake *fakeecr.Server) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.locs) == 0 {
		t.Fatal("the client was never given a Location")
	}
	for _, loc := range l.locs {
		if !strings.HasPrefix(loc, m.URL+"/v2/") || strings.Contains(loc, fake.Host()) || strings.Contains(loc, strings.TrimPrefix(fake.S3URL(), "http://")) {
			t.Errorf("the client was sent to %q, not to the mirror %s", loc, m.URL)
		}
	}
}

// pushImage pushes img through the mirror as repo:tag with ggcr.
func pushImage(t *testing.T, m *mirror, repo, tag string, img v1.Image, tr http.RoundTripper) error {
	t.Helper()
	ref, err := name.ParseReference(m.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return remote.Write(ref, img, remote.WithTransport(tr))
}

// imageDigests returns the digests of an image's manifest and blobs.
func imageDigests(t *testing.T, img v1.Image) (manifest digest.Digest, blobs []digest.Digest) {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, digest.Digest(cfg.String()))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, digest.Digest(ld.String()))
	}
	return digest.Digest(d.String()), blobs
}

// An image pushed through the mirror (POST, PATCH, PUT per blob, then the
// manifest) lands upstream, every Location the client sees is on the
// mirror, and pulling it back by digest is all cache hits: no upstream
// blob or manifest download.
func TestPushThroughMirror(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: pushEnv})
	img, err := random.Image(512<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	locs := &locationLog{base: newTransport(t)}
	if err := pushImage(t, m, "team/app", "v1", img, locs); err != nil {
		t.Fatalf("push through the mirror: %v", err)
	}
	manifest, blobs := imageDigests(t, img)
	if got, ok := fake.ResolveTag("team/app", "v1"); !ok || got != manifest {
		t.Fatalf("upstream tag v1 names %s (%v), want %s", got, ok, manifest)
	}
	for _, b := range blobs {
		if !fake.HasBlob("team/app", b) {
			t.Errorf("upstream lacks blob %s", b)
		}
	}
	pc := fake.PushCounters()
	if pc.UploadsStarted != int64(len(blobs)) || pc.BlobPuts != int64(len(blobs)) || pc.Patches < int64(len(blobs)) || pc.ManifestPuts != 1 {
		t.Errorf("upstream saw %+v; want an upload (POST, PATCH, PUT) per blob and one manifest", pc)
	}

	// One more layer on its own.
	layer, err := random.Layer(256<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := name.NewRepository(m.Host+"/team/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, layer, remote.WithTransport(locs)); err != nil {
		t.Fatalf("WriteLayer through the mirror: %v", err)
	}
	ld, _ := layer.Digest()
	extra := digest.Digest(ld.String())
	if !fake.HasBlob("team/app", extra) {
		t.Fatal("upstream lacks the layer written alone")
	}
	locs.assertOnMirror(t, m, fake)

	for _, d := range append(blobs, manifest, extra) {
		if !m.stored(d) {
			t.Errorf("%s was not cached as it was pushed", d)
		}
	}
	before := fake.Counters()
	got, err := pullImage(t, m, "team/app@"+manifest.String())
	if err != nil {
		t.Fatalf("pull by digest after the push: %v", err)
	}
	if d, _ := got.Digest(); d.String() != manifest.String() {
		t.Fatalf("pulled %s, want %s", d, manifest)
	}
	if err := fetchBlob(t, m, "team/app", extra); err != nil {
		t.Fatal(err)
	}
	after := fake.Counters()
	for _, b := range append(blobs, extra) {
		if after.S3Get[b] != 0 || after.S3RangeGet[b] != 0 {
			t.Errorf("blob %s was downloaded from S3 after being pushed", b)
		}
	}
	if after.BlobGet != before.BlobGet || after.ManifestGetByDigest != before.ManifestGetByDigest || after.ManifestGetByTag != before.ManifestGetByTag {
		t.Errorf("the pull after the push went upstream: before %+v, after %+v", before, after)
	}
	if after.S3AuthRejected != 0 {
		t.Errorf("S3 rejected %d requests", after.S3AuthRejected)
	}
	logs := m.Logs.String()
	for _, secret := range append(fake.IssuedTokens(), "X-Amz-Signature", "Basic ") {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret (%.20s...)", secret)
		}
	}
}

// A cross-repository mount passes through: upstream mounts, the client
// gets 201 with a Location on the mirror.
func TestPushMountThroughMirror(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: pushEnv})
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := pushImage(t, m, "team/app", "v1", img, newTransport(t)); err != nil {
		t.Fatal(err)
	}
	_, blobs := imageDigests(t, img)
	layer := blobs[1]
	c := &http.Client{Transport: newTransport(t)}
	resp, err := c.Post(m.URL+"/v2/team/other/blobs/uploads/?mount="+layer.String()+"&from=team/app", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mount: %d", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != m.URL+"/v2/team/other/blobs/"+layer.String() {
		t.Fatalf("mount Location %q", loc)
	}
	if !fake.HasBlob("team/other", layer) || fake.PushCounters().Mounts != 1 {
		t.Fatal("upstream did not mount the blob")
	}
}

// The same image pushed to a second repository: ggcr asks whether that
// repository has each blob (HEAD) before uploading it. ECR keeps blobs
// per repository but the cache is shared, so the answer must come from
// upstream, or ggcr skips uploads and ECR refuses the manifest.
func TestPushSameImageToSecondRepository(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: pushEnv})
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := pushImage(t, m, "team/app", "v1", img, newTransport(t)); err != nil {
		t.Fatal(err)
	}
	if err := pushImage(t, m, "team/other", "v1", img, newTransport(t)); err != nil {
		t.Fatalf("push to a second repository: %v", err)
	}
	manifest, blobs := imageDigests(t, img)
	for _, b := range blobs {
		if !fake.HasBlob("team/other", b) {
			t.Errorf("team/other lacks %s", b)
		}
	}
	if !fake.HasManifest("team/other", manifest) {
		t.Error("team/other lacks the manifest")
	}
}

// With push off (the default), a push fails with UNSUPPORTED naming the
// setting, and nothing reaches upstream.
func TestPushOffRefused(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{})
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	err = pushImage(t, m, "team/app", "v1", img, newTransport(t))
	if err == nil || !strings.Contains(err.Error(), "UNSUPPORTED") || !strings.Contains(err.Error(), "PUSH=true") {
		t.Fatalf("push with PUSH off: %v; want an UNSUPPORTED error naming PUSH", err)
	}
	if pc := fake.PushCounters(); pc != (fakeecr.PushCounters{}) {
		t.Fatalf("upstream saw pushes: %+v", pc)
	}
}

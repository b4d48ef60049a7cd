package main

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

var (
	linuxAMD64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	linuxARM64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

// multiArchIndex returns an OCI index of one random image per platform.
func multiArchIndex(t testing.TB, platforms ...v1.Platform) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := random.Image(32<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return idx
}

// putIndex stores idx in the fake under repo:tag: every child manifest
// (untagged), config and layer, then the index. It returns the index
// digest and, per child manifest digest, the child's blobs.
func putIndex(t testing.TB, fake *fakeecr.Server, repo, tag string, idx v1.ImageIndex) (digest.Digest, map[digest.Digest][]digest.Digest) {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	children := make(map[digest.Digest][]digest.Digest)
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, blobs := putImage(t, fake, repo, "", img)
		if m.String() != desc.Digest.String() {
			t.Fatalf("child stored as %s, but the index names %s", m, desc.Digest)
		}
		children[m] = blobs
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return fake.PutManifest(repo, tag, string(mt), raw), children
}

// readImage reads an image's config and every layer through ggcr, which
// verifies each digest, and checks the manifest digest.
func readImage(t testing.TB, img v1.Image, want digest.Digest) {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != want.String() {
		t.Fatalf("image digest %s, want %s", d, want)
	}
	if err := readWhole(img); err != nil {
		t.Fatalf("reading %s: %v", want, err)
	}
}

// pullIndex pulls an index through the mirror with ggcr, then every child
// image by its digest; it checks every digest and returns the platform of
// each child.
func pullIndex(t testing.TB, m *mirror, ref string, want digest.Digest, children map[digest.Digest][]digest.Digest) map[string]digest.Digest {
	t.Helper()
	r, err := name.ParseReference(m.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("remote.Index(%s): %v", ref, err)
	}
	if d, err := idx.Digest(); err != nil || d.String() != want.String() {
		t.Fatalf("index digest %v (%v), want %s", d, err, want)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(children) {
		t.Fatalf("index lists %d manifests, want %d", len(im.Manifests), len(children))
	}
	platforms := make(map[string]digest.Digest)
	for _, desc := range im.Manifests {
		dgst := digest.Digest(desc.Digest.String())
		if _, ok := children[dgst]; !ok {
			t.Fatalf("index lists unknown child %s", dgst)
		}
		if desc.Platform == nil {
			t.Fatalf("child %s has no platform", dgst)
		}
		platforms[desc.Platform.String()] = dgst
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatalf("child %s: %v", dgst, err)
		}
		readImage(t, img, dgst)
	}
	return platforms
}

// A multi-arch pull through the mirror gets every digest right; pulling it
// again revalidates the tag and fetches nothing else upstream; one
// platform pulled by digest (warm or cold) and by platform works too.
func TestPullMultiArchIndex(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	idxDigest, children := putIndex(t, fake, "team/multi", "v1", multiArchIndex(t, linuxAMD64, linuxARM64))
	m := startMirror(t, fake, mirrorOpts{})

	platforms := pullIndex(t, m, "team/multi:v1", idxDigest, children)
	amd64, arm64 := platforms[linuxAMD64.String()], platforms[linuxARM64.String()]
	if amd64 == "" || arm64 == "" || amd64 == arm64 {
		t.Fatalf("platforms %v, want distinct linux/amd64 and linux/arm64 children", platforms)
	}
	first := fake.Counters()
	if first.ManifestGetByTag != 1 || first.ManifestGetByDigest != int64(len(children)) {
		t.Errorf("first pull: %d manifest GETs by tag, %d by digest; want 1, %d", first.ManifestGetByTag, first.ManifestGetByDigest, len(children))
	}
	testwait.Until(t, "the index and children on disk", func() bool {
		if !m.stored(idxDigest) {
			return false
		}
		for child, blobs := range children {
			for _, d := range append([]digest.Digest{child}, blobs...) {
				if !m.stored(d) {
					return false
				}
			}
		}
		return true
	})
	for child, blobs := range children {
		for _, b := range blobs {
			if n := first.S3Get[b]; n != 1 {
				t.Errorf("blob %s of %s downloaded %d times from S3, want 1", b, child, n)
			}
		}
	}

	// Second pull: only the tag goes upstream (a HEAD).
	pullIndex(t, m, "team/multi:v1", idxDigest, children)
	second := fake.Counters()
	for _, blobs := range children {
		for _, b := range blobs {
			if second.S3Get[b] != first.S3Get[b] {
				t.Errorf("second pull downloaded blob %s again", b)
			}
		}
	}
	if second.BlobGet != first.BlobGet || second.ManifestGetByDigest != first.ManifestGetByDigest || second.ManifestGetByTag != first.ManifestGetByTag {
		t.Errorf("second pull fetched upstream: blob GETs %d -> %d, manifest GETs by digest %d -> %d, by tag %d -> %d",
			first.BlobGet, second.BlobGet, first.ManifestGetByDigest, second.ManifestGetByDigest, first.ManifestGetByTag, second.ManifestGetByTag)
	}
	if second.ManifestHead <= first.ManifestHead {
		t.Errorf("second pull did not revalidate the tag (manifest HEADs %d -> %d)", first.ManifestHead, second.ManifestHead)
	}

	// One platform by digest, now cached: nothing at all goes upstream.
	byDigest, err := name.ParseReference(m.Host+"/team/multi@"+arm64.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(byDigest)
	if err != nil {
		t.Fatalf("remote.Image(@%s): %v", arm64, err)
	}
	readImage(t, img, arm64)
	third := fake.Counters()
	if third.ManifestHead != second.ManifestHead || third.ManifestGetByDigest != second.ManifestGetByDigest ||
		third.ManifestGetByTag != second.ManifestGetByTag || third.BlobGet != second.BlobGet {
		t.Errorf("a cached pull by digest went upstream: %+v -> %+v", second, third)
	}

	// One platform chosen from the tag by the client.
	byTag, err := name.ParseReference(m.Host+"/team/multi:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err = remote.Image(byTag, remote.WithPlatform(linuxAMD64))
	if err != nil {
		t.Fatalf("remote.Image(v1, linux/amd64): %v", err)
	}
	readImage(t, img, amd64)

	// The same platform by digest through a cold mirror: a miss, fetched
	// once, with no tag lookup.
	before := fake.Counters()
	cold := startMirror(t, fake, mirrorOpts{})
	coldRef, err := name.ParseReference(cold.Host+"/team/multi@"+arm64.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err = remote.Image(coldRef)
	if err != nil {
		t.Fatalf("cold remote.Image(@%s): %v", arm64, err)
	}
	readImage(t, img, arm64)
	after := fake.Counters()
	if got := after.ManifestGetByDigest - before.ManifestGetByDigest; got != 1 {
		t.Errorf("cold pull by digest: %d manifest GETs by digest, want 1", got)
	}
	if after.ManifestGetByTag != before.ManifestGetByTag || after.ManifestHead != before.ManifestHead {
		t.Errorf("cold pull by digest looked up a tag (GETs by tag %d -> %d, HEADs %d -> %d)",
			before.ManifestGetByTag, after.ManifestGetByTag, before.ManifestHead, after.ManifestHead)
	}
	for _, b := range children[arm64] {
		if got := after.S3Get[b] - before.S3Get[b]; got != 1 {
			t.Errorf("cold pull downloaded blob %s %d times, want 1", b, got)
		}
	}
	for _, b := range children[amd64] {
		if after.S3Get[b] != before.S3Get[b] {
			t.Errorf("cold pull of arm64 downloaded amd64 blob %s", b)
		}
	}
}

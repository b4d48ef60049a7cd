package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// metaKeys are the tier's objects of one kind of metadata: links, tags
// or referrers.
func (s *sharedTier) metaKeys(t testing.TB, kind string) []string {
	return s.srv.Keys(t, s.bucket, s.prefix+"/"+kind+"/")
}

// linked reports whether the tier links dgst to repository repo (of any
// registry).
func (s *sharedTier) linked(t testing.TB, repo string, dgst digest.Digest) bool {
	return slices.ContainsFunc(s.metaKeys(t, "links"), func(k string) bool {
		return strings.HasSuffix(k, "/"+repo+"/sha256/"+dgst.Encoded())
	})
}

// offline is a replica's options over the tier that serve stale answers
// however old, for a fake ECR that is down.
func (s *sharedTier) offline() mirrorOpts {
	o := s.opts()
	o.env["STALE_IF_ERROR"] = "always"
	return o
}

// imageInSharedTier has a first replica pull a cold image by tag and
// waits until the tier holds its blobs, their links to the repository
// and the tag's record.
func imageInSharedTier(t *testing.T) (*fakeecr.Server, *sharedTier, digest.Digest, []digest.Digest) {
	t.Helper()
	fake, manifest, blobs := sharedImage(t)
	tier := startSharedTier(t)
	a := startMirror(t, fake, tier.opts())
	if _, err := pullImage(t, a, "team/app:v1"); err != nil {
		t.Fatalf("cold pull through replica A: %v", err)
	}
	all := append([]digest.Digest{manifest}, blobs...)
	testwait.Until(t, "A to write the image, its links and its tag record to the tier", func() bool {
		for _, d := range all {
			if !slices.Contains(tier.keys(t), tier.key(d)) || !tier.linked(t, "team/app", d) {
				return false
			}
		}
		return len(tier.metaKeys(t, "tags")) == 1
	})
	t.Logf("replica A: %v metadata writes (links and tag record) for %d digests", metric(t, a, `ecr_mirror_shared_store_requests_total{op="meta_put",outcome="ok"}`), len(all))
	return fake, tier, manifest, blobs
}

// upstreamServed is how many requests ECR answered (registry and S3).
func upstreamServed(c fakeecr.Counters) int64 {
	n := c.TokensIssued + c.ManifestGetByTag + c.ManifestGetByDigest + c.ManifestHead + c.BlobGet + c.BlobHead + c.Referrers + c.S3Head
	for _, m := range []map[digest.Digest]int64{c.S3Get, c.S3RangeGet} {
		for _, v := range m {
			n += v
		}
	}
	return n
}

// Replicas with empty disks serve, with ECR down and STALE_IF_ERROR set,
// everything another replica pulled: by tag from the tag record it left
// in the tier, by digest through the links it left there, every digest
// verified. ECR answers none of their requests.
func TestFreshReplicaServesWhatTheClusterHasSeenWithECRDown(t *testing.T) {
	t.Parallel()
	fake, tier, manifest, blobs := imageInSharedTier(t)
	fake.SetDown(true)
	before := fake.Counters()

	byTag := startMirror(t, fake, tier.offline())
	img, err := pullImage(t, byTag, "team/app:v1")
	if err != nil {
		t.Fatalf("pull by tag from a fresh replica with ECR down: %v", err)
	}
	if got, err := img.Digest(); err != nil || got.String() != manifest.String() {
		t.Fatalf("the tag named %s (%v), want %s", got, err, manifest)
	}
	if _, err := pullImage(t, byTag, "team/app@"+manifest.String()); err != nil {
		t.Fatalf("pull by digest after the tag: %v", err)
	}

	byDigest := startMirror(t, fake, tier.offline())
	if _, err := pullImage(t, byDigest, "team/app@"+manifest.String()); err != nil {
		t.Fatalf("pull by digest from a fresh replica with ECR down: %v", err)
	}

	// A blob asked alone, before any manifest: its own link confirms it.
	alone := startMirror(t, fake, tier.offline())
	for _, d := range blobs {
		if err := fetchBlob(t, alone, "team/app", d); err != nil {
			t.Errorf("blob %s alone from a fresh replica with ECR down: %v", d, err)
		}
	}

	after := fake.Counters()
	if n := upstreamServed(after) - upstreamServed(before); n != 0 {
		t.Errorf("ECR answered %d requests while down", n)
	}
	if after.Dropped == before.Dropped {
		t.Error("the replicas never asked ECR: the test did not take it down")
	}
	for i, m := range []*mirror{byTag, byDigest, alone} {
		reads := metric(t, m, `ecr_mirror_shared_store_requests_total{op="meta_get",outcome="ok"}`)
		if reads < 1 {
			t.Errorf("a replica read %v metadata objects from the tier", reads)
		}
		t.Logf("offline replica %d: %v metadata reads, %v blob reads, %v metadata writes", i, reads,
			metric(t, m, `ecr_mirror_shared_store_requests_total{op="get",outcome="ok"}`),
			metric(t, m, `ecr_mirror_shared_store_requests_total{op="meta_put",outcome="ok"}`))
	}
}

// Online, ECR's answer wins: a link only the shared tier holds does not
// confirm a repository ECR says lacks the content.
func TestECRRefusalWinsOverASharedLink(t *testing.T) {
	t.Parallel()
	fake, tier, layer := layerInSharedTier(t)
	testwait.Until(t, "the first replica's link", func() bool { return tier.linked(t, "team/app", layer) })
	links := tier.metaKeys(t, "links")
	i := slices.IndexFunc(links, func(k string) bool { return strings.HasSuffix(k, "/team/app/sha256/"+layer.Encoded()) })
	putObject(t, tier, strings.Replace(links[i], "/team/app/", "/team/other/", 1), nil)

	b := startMirror(t, fake, tier.offline())
	before := fake.Counters().BlobHead
	resp, body, err := get(t, "GET", b.URL+"/v2/team/other/blobs/"+layer.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 404 || !bytes.Contains(body, []byte("BLOB_UNKNOWN")) {
		t.Fatalf("a repository ECR does not hold the layer in got %d %.200q, want 404 BLOB_UNKNOWN", resp.StatusCode, body)
	}
	if n := fake.Counters().BlobHead - before; n != 1 {
		t.Errorf("ECR saw %d HEADs, want the 1 confirmation", n)
	}
	if b.stored(layer) {
		t.Error("B kept the layer for a repository ECR refused")
	}
}

// A tag record in the tier that is not one the mirror writes is ignored,
// with a log line, never served.
func TestMalformedSharedTagRecordIsIgnored(t *testing.T) {
	t.Parallel()
	fake, tier, manifest, _ := imageInSharedTier(t)
	tags := tier.metaKeys(t, "tags")
	good := readObject(t, tier, tags[0])
	if !bytes.Contains(good, []byte(manifest.String())) {
		t.Fatalf("the tag record %q does not name the manifest %s", good, manifest)
	}
	putObject(t, tier, tags[0], bytes.Replace(good, []byte(`"size"`), []byte(`"extra":1,"size"`), 1))
	fake.SetDown(true)

	b := startMirror(t, fake, tier.offline())
	if _, err := pullImage(t, b, "team/app:v1"); err == nil {
		t.Fatal("a replica served a tag from a malformed record")
	}
	if !strings.Contains(b.Logs.String(), "ignoring a malformed record in the shared store") {
		t.Errorf("no log line names the malformed record; logs:\n%s", b.Logs.String())
	}
	if b.stored(manifest) {
		t.Error("the replica fetched the manifest a malformed record names")
	}
}

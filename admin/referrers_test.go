package admin

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// putManifestImage stores a manifest with one config blob made from
// seed and returns the manifest's digest.
func putManifestImage(t *testing.T, s *cache.Store, seed int) digest.Digest {
	t.Helper()
	cfg := fmt.Appendf(nil, `{"seed":%d}`, seed)
	m := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[]}`, digest.FromBytes(cfg), len(cfg))
	if err := s.Put(digest.FromBytes(cfg), "application/vnd.oci.image.config.v1+json", cfg); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(digest.FromBytes(m), "application/vnd.oci.image.manifest.v1+json", m); err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(m)
}

// Referrers records are listed, and go with their subject: purging an
// image drops its records, purging everything drops every record whose
// subject is not kept (a pinned image's stay).
func TestPurgeForgetsReferrers(t *testing.T) {
	t.Parallel()
	s, err := cache.Open(cache.Options{Dir: t.TempDir(), MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	purged, unpinned, pinned := putManifestImage(t, s, 1), putManifestImage(t, s, 2), putManifestImage(t, s, 3)
	neverStored := digest.FromString("a subject only asked about")
	if err := s.Pin(pinned, "team/base:v1"); err != nil {
		t.Fatal(err)
	}
	for _, subject := range []digest.Digest{purged, unpinned, pinned, neverStored} {
		for _, at := range []string{"", "application/vnd.dev.cosign.artifact.sig.v1+json"} {
			k := cache.ReferrersKey{Repo: cache.Repo{Registry: "r.example", Name: "team/app"}, Subject: subject, ArtifactType: at}
			if err := s.PutReferrers(k, cache.ReferrersRecord{Body: []byte(`{"manifests":[{},{}]}`), Checked: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	svc := NewService(s, nil, "")
	subjects := func() []digest.Digest {
		t.Helper()
		l, err := svc.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []digest.Digest
		for _, r := range l.Referrers {
			if r.Repository != "r.example/team/app" || r.Manifests != 2 {
				t.Fatalf("listed %+v", r)
			}
			out = append(out, r.Subject)
		}
		return slices.Compact(out)
	}
	if got := subjects(); len(got) != 4 {
		t.Fatalf("listed the records of %v, want 4 subjects", got)
	}

	rep, err := svc.Purge(context.Background(), PurgeRequest{Image: purged.String()})
	if err != nil || rep.ReferrersForgotten != 2 {
		t.Fatalf("purge %s: %+v, %v; want 2 referrers records forgotten", purged, rep, err)
	}
	if got := subjects(); slices.Contains(got, purged) || len(got) != 3 {
		t.Fatalf("after purging %s, records of %v", purged, got)
	}
	rep, err = svc.Purge(context.Background(), PurgeRequest{All: true})
	if err != nil || rep.ReferrersForgotten != 4 {
		t.Fatalf("purge --all: %+v, %v; want 4 referrers records forgotten", rep, err)
	}
	if got := subjects(); !slices.Equal(got, []digest.Digest{pinned}) {
		t.Fatalf("after purge --all, records of %v, want only the pinned %s's", got, pinned)
	}
}

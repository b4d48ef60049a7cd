package proxy

import (
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// An import into a stopped mirror's directory records referrers lists
// for the main upstream (no registry host), and only the whole lists and
// those of each artifact type: while ECR cannot answer they are served,
// filtered here for a filter not recorded, and only to their repository.
func TestReferrersRecordedForTheMainUpstreamServedStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.proxy.staleIfError = time.Hour // before any request
	e.proxy.tagTimeout = time.Hour   // no answer is late on a busy machine
	img := putSignedImage(e.fake, "team/app", 84, false)
	all := e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, false, img.sig.Digest, img.sbom.Digest)
	imported, elsewhere := digest.FromString("imported"), digest.FromString("imported elsewhere")
	for repo, subject := range map[string]digest.Digest{"team/app": imported, "team/other": elsewhere} {
		err := e.store.PutReferrers(cache.ReferrersKey{Repo: cache.Repo{Name: repo}, Subject: subject},
			cache.ReferrersRecord{Body: all, Checked: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
	}
	e.fake.SetDown(true)
	e.wantReferrers(t, referrersPath("team/app", imported, ""), false, true, img.sig.Digest, img.sbom.Digest)
	e.wantReferrers(t, referrersPath("team/app", imported, cosignSig), true, true, img.sig.Digest)
	resp, body := e.mustDo(t, http.MethodGet, referrersPath("team/app", elsewhere, ""), nil)
	if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != http.StatusBadGateway || code != registry.CodeUnavailable {
		t.Errorf("another repository's record served to team/app: %d %s, want 502 UNAVAILABLE", resp.StatusCode, body)
	}
}

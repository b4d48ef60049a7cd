package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// A tag's stale answer comes from the records of the upstream asked: the
// main upstream also reads those written without a host (older versions,
// imports into a stopped mirror), another upstream only its own, and
// never those of another registry with the same repository name.
func TestStaleAnswersComeFromTheUpstreamsOwnRecords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		notMain  bool
		registry func(e *staleEnv) string // the registry the record is put under
		stale    bool
	}{
		{name: "main upstream, its own record", registry: func(e *staleEnv) string { return e.proxy.host }, stale: true},
		{name: "main upstream, a record without host", registry: func(*staleEnv) string { return "" }, stale: true},
		{name: "main upstream, another registry's record", registry: func(*staleEnv) string { return "other.example" }},
		{name: "other upstream, its own record", notMain: true, registry: func(e *staleEnv) string { return e.proxy.host }, stale: true},
		{name: "other upstream, a record without host", notMain: true, registry: func(*staleEnv) string { return "" }},
		{name: "other upstream, another registry's record", notMain: true, registry: func(*staleEnv) string { return "other.example" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, notMain: tt.notMain})
			if err := e.store.Put(e.up.dgst, ociManifest, e.up.raw); err != nil {
				t.Fatal(err)
			}
			repo := cache.Repo{Registry: tt.registry(e), Name: "team/app"}
			rec := cache.TagRecord{Digest: e.up.dgst, MediaType: ociManifest, Size: int64(len(e.up.raw)), Checked: time.Now()}
			if err := e.store.PutTag(repo, "v1", ociManifest, rec); err != nil {
				t.Fatal(err)
			}
			e.up.setFail(failWith(503))
			resp, body := e.get(t, http.MethodGet)
			if tt.stale {
				e.wantStale(t, http.MethodGet, resp, body)
				return
			}
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Warning") != "" {
				t.Fatalf("GET with a record of %q: %d, Warning %q; want 502, nothing stale", repo.Registry, resp.StatusCode, resp.Header.Get("Warning"))
			}
		})
	}
}

// Revalidated tags are recorded under the upstream's own host, and the
// newer of the main upstream's two records (with and without a host)
// is the one served.
func TestTagsAreRecordedUnderTheUpstreamsHost(t *testing.T) {
	t.Parallel()
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour})
	old := testManifest(41)
	if err := e.store.Put(digest.FromBytes(old), ociManifest, old); err != nil {
		t.Fatal(err)
	}
	// An older version's record, of a manifest the tag named a day ago.
	yesterday := cache.TagRecord{Digest: digest.FromBytes(old), MediaType: ociManifest, Size: int64(len(old)), Checked: time.Now().Add(-24 * time.Hour)}
	if err := e.store.PutTag(cache.Repo{Name: "team/app"}, "v1", ociManifest, yesterday); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get(t, http.MethodGet); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	rec, err := e.store.GetTag(cache.Repo{Registry: e.proxy.host, Name: "team/app"}, "v1", ociManifest)
	if err != nil || rec.Digest != e.up.dgst {
		t.Fatalf("record under the upstream's host: %+v, %v; want %s", rec, err, e.up.dgst)
	}
	e.up.setFail(failWith(503))
	resp, body := e.get(t, http.MethodGet)
	e.wantStale(t, http.MethodGet, resp, body) // today's answer, not yesterday's
}

// Links without a host are the main upstream's: another upstream with
// a repository of the same name confirms upstream (one HEAD) before it
// serves the content, the main upstream does not.
func TestLinksWithoutHostAreTheMainUpstreams(t *testing.T) {
	t.Parallel()
	for _, notMain := range []bool{false, true} {
		t.Run(fmt.Sprintf("notMain=%v", notMain), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{notMain: notMain})
			img := putImage(e.fake, "team/app", "v1", 7)
			if err := e.store.Put(img.layer, "application/octet-stream", img.layerBody); err != nil {
				t.Fatal(err)
			}
			// As an import into a stopped mirror links it: no host.
			if err := e.store.Link(cache.Repo{Name: "team/app"}, img.layer); err != nil {
				t.Fatal(err)
			}
			if resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+img.layer.String(), nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.layerBody) {
				t.Fatalf("GET: %d, %d bytes; want the layer", resp.StatusCode, len(body))
			}
			want := 0
			if notMain {
				want = 1
			}
			if got := upstreamHeads(e.fake, "team/app/blobs/"+img.layer.String()); got != want {
				t.Fatalf("upstream saw %d HEADs of the layer, want %d", got, want)
			}
			if got := e.fake.Counters().BlobGet; got != 0 {
				t.Fatalf("upstream served %d blob bodies, want none", got)
			}
		})
	}
}

// Proxies given the same Shared share its caps: a download running in
// one takes the only download slot from the other (429 there until it
// ends), and both read upstream under the one token bucket.
func TestSharedLimitsHoldForAllUpstreamsTogether(t *testing.T) {
	t.Parallel()
	sh := NewShared(64<<20, 1)
	a, b := newEnv(t, envOptions{shared: sh}), newEnv(t, envOptions{shared: sh, notMain: true})
	if a.proxy.limit.lim == nil || a.proxy.limit.lim != b.proxy.limit.lim {
		t.Fatal("the proxies do not read under the same token bucket")
	}
	if got := b.proxy.Stats().MaxRate.Load(); got != 64<<20 {
		t.Fatalf("MaxRate = %d, want the shared cap", got)
	}
	held := a.fake.PutBlob("team/app", testkit.RandomBytes(5, 1<<20))
	hold := make(chan struct{})
	a.fake.SetFault(held, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1000, Hold: hold, Times: 1})
	other := b.fake.PutBlob("team/app", testkit.RandomBytes(6, 1000))

	result := make(chan error, 1)
	go func() {
		resp, body := a.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+held.String(), nil)
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != held {
			result <- fmt.Errorf("GET of the held blob: %d, %d bytes", resp.StatusCode, len(body))
			return
		}
		result <- nil
	}()
	testwait.Until(t, "the held download to run", func() bool { return a.proxy.InFlight() == 1 })
	resp, body := b.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+other.String(), nil)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("GET through the other upstream while the one slot is taken: %d %s, want 429", resp.StatusCode, body)
	}
	close(hold)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	a.proxy.Wait()
	if resp, body := b.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+other.String(), nil); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != other {
		t.Fatalf("GET once the slot is free: %d, %d bytes", resp.StatusCode, len(body))
	}
}

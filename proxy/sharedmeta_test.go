package proxy

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

var acceptOCI = http.Header{"Accept": {ociManifest}}

// A tag asked again and again writes its record to the tier once per
// sharedRecordInterval, dated when ECR answered, and at once when ECR
// names another manifest; the links the lookup made go with it.
func TestTagRecordsReachTheSharedTierOncePerIntervalUnlessTheyChange(t *testing.T) {
	t.Parallel()
	tier := newMemMeta()
	clk := clockwork.NewFakeClock()
	e := newEnv(t, envOptions{sharedStore: tier, tagClock: clk})
	first := e.fake.PutManifest("team/app", "v1", ociManifest, testManifest(1))
	get := func() {
		t.Helper()
		if resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/v1", acceptOCI); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET team/app:v1: %d %s", resp.StatusCode, body)
		}
		e.proxy.Wait() // the background writes
	}
	get() // a HEAD and a GET upstream, each recording the tag
	get()
	if n := tier.tagPutCount(); n != 1 {
		t.Fatalf("%d tag record writes for one answer, want 1", n)
	}
	clk.Advance(sharedRecordInterval - time.Nanosecond)
	get()
	if n := tier.tagPutCount(); n != 1 {
		t.Fatalf("%d tag record writes within the interval, want 1", n)
	}
	clk.Advance(time.Nanosecond)
	get()
	if n, rec := tier.tagPutCount(), tier.onlyTag(t); n != 2 || rec.Digest != first || !rec.Checked.Equal(clk.Now()) {
		t.Fatalf("after the interval: %d writes, record %+v; want 2, %s checked %v", n, rec, first, clk.Now())
	}
	second := e.fake.PutManifest("team/app", "v1", ociManifest, testManifest(2))
	get()
	if n, rec := tier.tagPutCount(), tier.onlyTag(t); n != 3 || rec.Digest != second {
		t.Fatalf("after the tag moved: %d writes, record %+v; want 3, %s", n, rec, second)
	}
	for _, d := range []digest.Digest{first, second} {
		if ok, _ := tier.Linked(t.Context(), e.proxy.sharedRepo("team/app"), d); !ok {
			t.Errorf("the tier does not link %s to team/app", d)
		}
	}
	if n := e.proxy.Stats().SharedWriteFailures.Load(); n != 0 {
		t.Errorf("%d failed writes", n)
	}
}

// With ECR down and no local record, the tier's record answers the tag
// under the same rule as a local one: up to StaleIfError old, its
// manifest read from the tier's object and verified. A record too old,
// dated in the future, malformed, or naming a manifest the tier lacks
// or holds corrupt, answers nothing.
func TestSharedTagRecordAnswersOnlyUnderStaleIfError(t *testing.T) {
	t.Parallel()
	raw := testManifest(7)
	dgst := digest.FromBytes(raw)
	for _, tc := range []struct {
		name   string
		head   bool
		age    time.Duration
		local  time.Duration // >0: a local record this old, its manifest not stored
		object []byte
		getErr error
		want   bool
	}{
		{name: "young enough", age: 30 * time.Minute, object: raw, want: true},
		{name: "young enough, HEAD", head: true, age: 30 * time.Minute, object: raw, want: true},
		{name: "the local record too old", age: 30 * time.Minute, local: 2 * time.Hour, object: raw, want: true},
		{name: "too old", age: 2 * time.Hour, object: raw},
		{name: "from the future", age: -time.Hour, object: raw},
		{name: "malformed", age: time.Minute, object: raw, getErr: sharedstore.ErrMalformed},
		{name: "manifest not in the tier", age: time.Minute},
		{name: "manifest corrupt in the tier", age: time.Minute, object: bytes.Replace(raw, []byte("schemaVersion"), []byte("schemaVersioN"), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tier := newMemMeta()
			clk := clockwork.NewFakeClock()
			e := newEnv(t, envOptions{sharedStore: tier, tagClock: clk, staleIfError: time.Hour})
			if tc.object != nil {
				tier.objects[dgst], tier.putTypes[dgst] = tc.object, ociManifest
			}
			tier.getTagErr = tc.getErr
			tier.setTag(e.proxy.host, ociManifest, sharedstore.TagRecord{Digest: dgst, MediaType: ociManifest, Size: int64(len(raw)), Checked: clk.Now().Add(-tc.age)})
			if tc.local > 0 {
				err := e.store.PutTag(e.proxy.repo("team/app"), "v1", ociManifest, cache.TagRecord{Digest: digest.FromString("older"), Checked: clk.Now().Add(-tc.local)})
				if err != nil {
					t.Fatal(err)
				}
			}
			e.fake.SetDown(true)
			method := http.MethodGet
			if tc.head {
				method = http.MethodHead
			}
			resp, body := e.mustDo(t, method, "/v2/team/app/manifests/v1", acceptOCI)
			got := resp.StatusCode == http.StatusOK
			if got != tc.want {
				t.Fatalf("answered %d %.200s, want an answer: %v", resp.StatusCode, body, tc.want)
			}
			if !got {
				if errors.Is(tc.getErr, sharedstore.ErrMalformed) && !strings.Contains(e.logs.String(), "ignoring a malformed record") {
					t.Error("no log line about the malformed record")
				}
				return
			}
			if tc.head {
				body = raw // no body to a HEAD
			}
			if !bytes.Equal(body, raw) || resp.Header.Get("Warning") == "" || resp.Header.Get("Docker-Content-Digest") != dgst.String() ||
				resp.ContentLength != int64(len(raw)) {
				t.Fatalf("stale answer %q with headers %v, want the manifest with a Warning", body, resp.Header)
			}
			// Kept locally: served again with the tier gone.
			e.proxy.Wait()
			tier.mu.Lock()
			tier.getTagErr, tier.objects = errors.New("unreachable"), map[digest.Digest][]byte{}
			tier.mu.Unlock()
			if resp, _ := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/v1", acceptOCI); resp.StatusCode != http.StatusOK {
				t.Errorf("again from the local record: %d", resp.StatusCode)
			}
		})
	}
}

// Referrers answers reach the tier as tag answers do, and with ECR down
// the tier's record of a list this replica never recorded is served
// stale; one whose body is not an index is ignored.
func TestReferrersRecordsAreSharedAndServedStaleFromTheTier(t *testing.T) {
	t.Parallel()
	tier := newMemMeta()
	e := newEnv(t, envOptions{sharedStore: tier, staleIfError: time.Hour})
	e.proxy.tagTimeout = time.Hour // no answer is late on a busy machine
	img := putSignedImage(e.fake, "team/app", 91, false)
	all := e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, false, img.sig.Digest, img.sbom.Digest)
	e.proxy.Wait()
	repo := e.proxy.sharedRepo("team/app")
	got, err := tier.GetReferrers(t.Context(), sharedstore.ReferrersKey{Repo: repo, Subject: img.manifest})
	if err != nil || !bytes.Equal(got.Body, all) {
		t.Fatalf("the tier's record: %+v, %v; want the list served", got, err)
	}

	other, bad := digest.FromString("another replica's subject"), digest.FromString("a bad record's subject")
	tier.PutReferrers(t.Context(), sharedstore.ReferrersKey{Repo: repo, Subject: other}, sharedstore.ReferrersRecord{Body: all, Checked: time.Now()})
	tier.PutReferrers(t.Context(), sharedstore.ReferrersKey{Repo: repo, Subject: bad}, sharedstore.ReferrersRecord{Body: []byte(`"not an index"`), Checked: time.Now()})
	e.fake.SetDown(true)
	e.wantReferrers(t, referrersPath("team/app", other, ""), false, true, img.sig.Digest, img.sbom.Digest)
	if resp, body := e.mustDo(t, http.MethodGet, referrersPath("team/app", bad, ""), nil); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("a malformed shared record: %d %s, want 502", resp.StatusCode, body)
	}
	if !strings.Contains(e.logs.String(), "ignoring a malformed record") {
		t.Error("no log line about the malformed record")
	}
}

// With ECR down, a HEAD by digest (what containerd sends first for an
// image pinned by digest) is answered from the shared tier when the
// tier links the content to the repository, as a GET is; never when it
// does not.
func TestHeadByDigestAnsweredFromTheTierWithoutECR(t *testing.T) {
	t.Parallel()
	raw := testManifest(9)
	dgst := digest.FromBytes(raw)
	layer := testkit.RandomBytes(91, 5000)
	ldgst := digest.FromBytes(layer)
	for _, tc := range []struct {
		name   string
		path   string
		dgst   digest.Digest
		size   int
		linked bool
	}{
		{name: "manifest", path: "/v2/team/app/manifests/" + dgst.String(), dgst: dgst, size: len(raw), linked: true},
		{name: "blob", path: "/v2/team/app/blobs/" + ldgst.String(), dgst: ldgst, size: len(layer), linked: true},
		{name: "manifest not linked", path: "/v2/team/app/manifests/" + dgst.String(), dgst: dgst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tier := newMemMeta()
			e := newEnv(t, envOptions{sharedStore: tier})
			tier.objects[dgst], tier.putTypes[dgst] = raw, ociManifest
			tier.objects[ldgst], tier.putTypes[ldgst] = layer, "application/octet-stream"
			if tc.linked {
				if err := tier.PutLink(t.Context(), e.proxy.sharedRepo("team/app"), tc.dgst); err != nil {
					t.Fatal(err)
				}
			}
			e.fake.SetDown(true)
			resp, _ := e.mustDo(t, http.MethodHead, tc.path, acceptOCI)
			if !tc.linked {
				if resp.StatusCode == http.StatusOK {
					t.Fatal("a HEAD for content the tier does not link to the repository was answered 200")
				}
				return
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != tc.dgst.String() || resp.ContentLength != int64(tc.size) {
				t.Fatalf("HEAD: %d, headers %v; want 200, the digest and %d bytes", resp.StatusCode, resp.Header, tc.size)
			}
			if tc.dgst == dgst && resp.Header.Get("Content-Type") != ociManifest {
				t.Errorf("Content-Type %q, want %s", resp.Header.Get("Content-Type"), ociManifest)
			}
		})
	}
}

// A confirmation upstream that takes longer than the stall timeout (ECR
// blackholed: its HEAD neither answers nor is refused) is not the shared
// tier's silence: once it fails and the tier's link confirms, the
// object already opened is read from the tier, not given up on.
func TestSlowConfirmationDoesNotStallTheTierRead(t *testing.T) {
	t.Parallel()
	layer := testkit.RandomBytes(93, 5000)
	ldgst := digest.FromBytes(layer)
	tier := newMemMeta()
	e := newEnv(t, envOptions{sharedStore: tier})
	tier.objects[ldgst], tier.putTypes[ldgst] = layer, "application/octet-stream"
	if err := tier.PutLink(t.Context(), e.proxy.sharedRepo("team/app"), ldgst); err != nil {
		t.Fatal(err)
	}
	e.fake.PutBlob("team/app", layer)
	hold := make(chan struct{})
	e.fake.SetFault(ldgst, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusServiceUnavailable, Hold: hold})
	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, body, err := e.do(t, t.Context(), http.MethodGet, "/v2/team/app/blobs/"+ldgst.String(), nil)
		r := result{body: body, err: err}
		if resp != nil {
			r.status = resp.StatusCode
		}
		done <- r
	}()
	testwait.Until(t, "the confirming HEAD to reach ECR", func() bool { return e.fake.Counters().BlobHead == 1 })
	e.fireStall() // the confirmation outlasts the stall timeout
	close(hold)   // then ECR answers 503: the tier's link confirms
	r := <-done
	if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, layer) {
		t.Fatalf("GET: %d, %d bytes, %v; want 200 and the layer from the tier", r.status, len(r.body), r.err)
	}
	e.proxy.Wait()
	if n := e.proxy.Stats().SharedHits.Load(); n != 1 {
		t.Errorf("%d shared tier hits, want 1", n)
	}
}

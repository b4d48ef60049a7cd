package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

const (
	cosignSig = fakeecr.ArtifactTypeCosignSignature
	spdx      = fakeecr.ArtifactTypeSPDX
)

// signedImage is an image in the fake with a cosign signature and an
// SBOM attached.
type signedImage struct {
	testImage
	subject   oci.Descriptor
	sig, sbom oci.Descriptor
}

// putSignedImage stores an image in repo with a signature and an SBOM
// referring to it, also in its tag-schema index when tagSchema.
func putSignedImage(fake *fakeecr.Server, repo string, seed uint64, tagSchema bool) signedImage {
	img := signedImage{testImage: putImage(fake, repo, "v1", seed)}
	img.subject = oci.Descriptor{MediaType: ociManifest, Digest: img.manifest, Size: int64(len(img.manifestBody))}
	img.sig = fake.AttachReferrer(repo, img.subject, fakeecr.Referrer{ArtifactType: cosignSig, Payload: fmt.Appendf(nil, "sig %d", seed), TagSchema: tagSchema})
	img.sbom = fake.AttachReferrer(repo, img.subject, fakeecr.Referrer{ArtifactType: spdx, Payload: fmt.Appendf(nil, "sbom %d", seed), TagSchema: tagSchema})
	return img
}

// referrersPath is the mirror path of subject's referrers in repo,
// filtered by artifactType unless it is "".
func referrersPath(repo string, subject digest.Digest, artifactType string) string {
	p := "/v2/" + repo + "/referrers/" + subject.String()
	if artifactType != "" {
		p += "?artifactType=" + url.QueryEscape(artifactType)
	}
	return p
}

// listedDigests parses a referrers answer and returns the digests it
// lists, sorted; it fails the test unless the body is an OCI index.
func listedDigests(t *testing.T, body []byte) []digest.Digest {
	t.Helper()
	var idx struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || idx.MediaType != oci.MediaTypeImageIndex || idx.Manifests == nil {
		t.Fatalf("referrers body %s is not an OCI index with a manifests list (%v)", body, err)
	}
	out := []digest.Digest{}
	for _, d := range idx.Manifests {
		out = append(out, d.Digest)
	}
	slices.Sort(out)
	return out
}

func sortedDigests(ds ...digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	if out == nil {
		out = []digest.Digest{}
	}
	return out
}

// wantReferrers fetches a referrers path and fails unless it is a 200
// listing want, with OCI-Filters-Applied set when filtered, and the
// stale Warning exactly when stale. It returns the body.
func (e *testEnv) wantReferrers(t *testing.T, path string, filtered, stale bool, want ...digest.Digest) []byte {
	t.Helper()
	resp, body := e.mustDo(t, http.MethodGet, path, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if got := listedDigests(t, body); !slices.Equal(got, sortedDigests(want...)) {
		t.Fatalf("GET %s listed %v, want %v", path, got, sortedDigests(want...))
	}
	if got := resp.Header.Get("OCI-Filters-Applied"); (got == "artifactType") != filtered {
		t.Fatalf("GET %s: OCI-Filters-Applied %q, want it set: %v", path, got, filtered)
	}
	if got := resp.Header.Get("Warning"); (got == staleWarning) != stale {
		t.Fatalf("GET %s: Warning %q, want the stale one: %v", path, got, stale)
	}
	return body
}

// Each referrers answer is recorded under its repository, subject and
// filter, and the manifests it names are linked to the repository: one
// the store holds from another repository is then served by digest
// without a confirming HEAD, and one it lacks is fetched and cached.
func TestReferrersRecordedAndLinked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.proxy.tagTimeout = time.Hour // before any request: no answer is late on a busy machine
	img := putSignedImage(e.fake, "team/app", 81, false)
	// The same signature in another repository, pulled from there first.
	e.fake.AttachReferrer("other/app", img.subject, fakeecr.Referrer{ArtifactType: cosignSig, Payload: []byte("sig 81")})
	if resp, body := e.mustDo(t, http.MethodGet, "/v2/other/app/manifests/"+img.sig.Digest.String(), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the signature in other/app: %d %s", resp.StatusCode, body)
	}

	all := e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, false, img.sig.Digest, img.sbom.Digest)
	sigs := e.wantReferrers(t, referrersPath("team/app", img.manifest, cosignSig), true, false, img.sig.Digest)
	for _, rec := range []struct {
		key  cache.ReferrersKey
		body []byte
	}{
		{cache.ReferrersKey{Repo: e.proxy.repo("team/app"), Subject: img.manifest}, all},
		{cache.ReferrersKey{Repo: e.proxy.repo("team/app"), Subject: img.manifest, ArtifactType: cosignSig}, sigs},
	} {
		got, err := e.store.GetReferrers(rec.key)
		if err != nil || string(got.Body) != string(rec.body) || got.Fallback {
			t.Fatalf("record of %+v: %+v, %v; want the body served", rec.key, got, err)
		}
	}

	heads, confirmations := e.fake.Counters().ManifestHead, e.proxy.Stats().Confirmations.Load()
	for _, d := range []oci.Descriptor{img.sig, img.sbom} {
		resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/"+d.Digest.String(), nil)
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d.Digest {
			t.Fatalf("GET referrer %s: %d %s", d.Digest, resp.StatusCode, body)
		}
	}
	if got := e.fake.Counters().ManifestHead - heads; got != 0 {
		t.Errorf("fetching the referrers after the list cost %d upstream HEADs, want 0", got)
	}
	if got := e.proxy.Stats().Confirmations.Load() - confirmations; got != 0 {
		t.Errorf("%d confirmations, want 0", got)
	}
	payload := digest.FromString("sbom 81") // putSignedImage's SBOM layer
	if resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+payload.String(), nil); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != payload {
		t.Fatalf("GET the SBOM's layer: %d %s", resp.StatusCode, body)
	}
	e.proxy.Wait()
	for what, d := range map[string]digest.Digest{"manifest": img.sbom.Digest, "layer": payload} {
		if _, err := e.store.Stat(d); err != nil {
			t.Errorf("the SBOM's %s fetched through the mirror is not cached: %v", what, err)
		}
	}
}

// While ECR cannot be reached, a recorded referrers answer young enough
// for STALE_IF_ERROR is served with the stale Warning, per filter; one
// never recorded, one too old, or any without STALE_IF_ERROR is the
// error as before.
func TestReferrersServedStale(t *testing.T) {
	t.Parallel()
	for _, staleIfError := range []time.Duration{time.Hour, 0} {
		t.Run(fmt.Sprint("STALE_IF_ERROR=", staleIfError), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			e.proxy.staleIfError = staleIfError // before any request
			e.proxy.tagTimeout = time.Hour      // no answer is late on a busy machine
			img := putSignedImage(e.fake, "team/app", 82, false)
			all := e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, false, img.sig.Digest, img.sbom.Digest)
			e.wantReferrers(t, referrersPath("team/app", img.manifest, cosignSig), true, false, img.sig.Digest)
			old := digest.FromString("recorded long ago")
			err := e.store.PutReferrers(cache.ReferrersKey{Repo: e.proxy.repo("team/app"), Subject: old},
				cache.ReferrersRecord{Body: all, Checked: time.Now().Add(-2 * time.Hour)})
			if err != nil {
				t.Fatal(err)
			}

			e.fake.SetDown(true)
			if staleIfError > 0 {
				body := e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, true, img.sig.Digest, img.sbom.Digest)
				if string(body) != string(all) {
					t.Errorf("stale body %s, want the recorded %s", body, all)
				}
				e.wantReferrers(t, referrersPath("team/app", img.manifest, cosignSig), true, true, img.sig.Digest)
				// A filter never asked: the whole list recorded, filtered.
				e.wantReferrers(t, referrersPath("team/app", img.manifest, spdx), true, true, img.sbom.Digest)
				if got, refs := e.proxy.Stats().Stale.Load(), e.proxy.Stats().StaleReferrers.Load(); got != 3 || refs != 3 {
					t.Errorf("Stats.Stale = %d, StaleReferrers = %d, want 3 and 3", got, refs)
				}
				if logs := e.logs.String(); !strings.Contains(logs, "serving stale referrers") || !strings.Contains(logs, "reason=unreachable") {
					t.Errorf("no warning naming the reason:\n%s", logs)
				}
			}
			for _, path := range []string{
				referrersPath("team/app", img.sig.Digest, ""), // never asked
				referrersPath("team/app", old, ""),            // too old
				referrersPath("team/app", img.manifest, ""),   // without STALE_IF_ERROR
			} {
				if staleIfError > 0 && path == referrersPath("team/app", img.manifest, "") {
					continue
				}
				resp, body := e.mustDo(t, http.MethodGet, path, nil)
				if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != http.StatusBadGateway || code != registry.CodeUnavailable || resp.Header.Get("Warning") != "" {
					t.Errorf("GET %s with ECR down: %d %s, want 502 UNAVAILABLE", path, resp.StatusCode, body)
				}
			}
		})
	}
}

// An upstream without the referrers API (404 however it says so) is
// answered from the tag schema: the index tagged sha256-<hex> lists the
// referrers, filtered by the mirror when asked; no such tag is an empty
// list, never NAME_UNKNOWN. The answers are recorded and served stale.
func TestReferrersFallBackToTagSchema(t *testing.T) {
	t.Parallel()
	for _, offCode := range []string{"", "NAME_UNKNOWN", "UNSUPPORTED", "MANIFEST_UNKNOWN"} {
		t.Run("404 "+offCode, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			e.proxy.staleIfError = time.Hour // before any request
			e.proxy.tagTimeout = time.Hour   // no answer is late on a busy machine
			img := putSignedImage(e.fake, "team/app", 83, true)
			// Pushed where the API served it: not in the tag schema.
			apiOnly := e.fake.AttachReferrer("team/app", img.subject, fakeecr.Referrer{ArtifactType: cosignSig, Payload: []byte("api only")})
			e.fake.SetReferrersAPI(false, offCode)

			all := e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, false, img.sig.Digest, img.sbom.Digest)
			e.wantReferrers(t, referrersPath("team/app", img.manifest, cosignSig), true, false, img.sig.Digest)
			e.wantReferrers(t, referrersPath("team/app", img.manifest, "application/x-none"), true, false)
			unsigned := putImage(e.fake, "team/app", "v2", 84)
			e.wantReferrers(t, referrersPath("team/app", unsigned.manifest, ""), false, false)
			if strings.Contains(string(all), apiOnly.Digest.String()) {
				t.Errorf("the tag schema does not list %s, but the answer does", apiOnly.Digest)
			}
			resp, body := e.mustDo(t, http.MethodGet, referrersPath("team/nope", img.manifest, ""), nil)
			if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != http.StatusNotFound || code != registry.CodeNameUnknown {
				t.Errorf("a repository ECR does not have: %d %s, want 404 NAME_UNKNOWN", resp.StatusCode, body)
			}
			if got := e.proxy.Stats().ReferrersFallbacks.Load(); got != 4 {
				t.Errorf("Stats.ReferrersFallbacks = %d, want 4", got)
			}
			rec, err := e.store.GetReferrers(cache.ReferrersKey{Repo: e.proxy.repo("team/app"), Subject: img.manifest})
			if err != nil || !rec.Fallback || string(rec.Body) != string(all) {
				t.Fatalf("record of the fallback answer: %+v, %v", rec, err)
			}

			e.fake.SetDown(true)
			e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, true, img.sig.Digest, img.sbom.Digest)
			e.wantReferrers(t, referrersPath("team/app", unsigned.manifest, ""), false, true)
		})
	}
}

// referrersUpstream serves team/app's referrers of subject as an
// upstream that ignores the artifactType filter (no OCI-Filters-Applied),
// or fails them with status; the tag schema has nothing.
func referrersUpstream(subject digest.Digest, status int, body string) http.HandlerFunc {
	index := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"annotations":{"kept":"yes"},"manifests":[`+
		`{"mediaType":%q,"digest":%q,"size":10,"artifactType":%q,"annotations":{"n":"1"}},`+
		`{"mediaType":%q,"digest":%q,"size":20,"artifactType":%q}]}`,
		ociIndex, ociManifest, digest.FromString("sig"), cosignSig, ociManifest, digest.FromString("sbom"), spdx)
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/team/app/referrers/"+subject.String() && status == http.StatusOK:
			w.Header().Set("Content-Type", ociIndex)
			fmt.Fprint(w, index)
		case r.URL.Path == "/v2/team/app/referrers/"+subject.String():
			w.WriteHeader(status)
			fmt.Fprint(w, body)
		default:
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}`, http.StatusNotFound)
		}
	}
}

// The mirror filters by artifactType itself when upstream did not, and
// keeps the rest of upstream's index; which upstream answers mean "no
// referrers API" (the tag schema then answers) and which are passed on.
func TestReferrersByUpstreamAnswer(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	oci := func(code string) string { return fmt.Sprintf(`{"errors":[{"code":%q,"message":"x"}]}`, code) }
	tests := []struct {
		name         string
		status       int
		body         string
		artifactType string
		wantStatus   int
		want         []digest.Digest
		fallback     bool
	}{
		{name: "unfiltered upstream, no filter", status: 200, wantStatus: 200, want: []digest.Digest{digest.FromString("sig"), digest.FromString("sbom")}},
		{name: "unfiltered upstream, filter", status: 200, artifactType: cosignSig, wantStatus: 200, want: []digest.Digest{digest.FromString("sig")}},
		{name: "unfiltered upstream, filter matching none", status: 200, artifactType: "application/x-none", wantStatus: 200, want: []digest.Digest{}},
		{name: "405", status: 405, wantStatus: 200, want: []digest.Digest{}, fallback: true},
		{name: "400 UNSUPPORTED", status: 400, body: oci("UNSUPPORTED"), wantStatus: 200, want: []digest.Digest{}, fallback: true},
		{name: "400 bare", status: 400, wantStatus: 502},
		{name: "400 DIGEST_INVALID", status: 400, body: oci("DIGEST_INVALID"), wantStatus: 400},
		{name: "403", status: 403, body: oci("DENIED"), wantStatus: 403},
		{name: "503, nothing recorded", status: 503, wantStatus: 502},
		{name: "429, nothing recorded", status: 429, body: oci("TOOMANYREQUESTS"), wantStatus: 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, tagTimeout: time.Hour})
			e.up.setFail(referrersUpstream(subject, tt.status, tt.body))
			path := referrersPath("team/app", subject, tt.artifactType)
			resp, err := e.srv.Client().Get(e.srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				return
			}
			if got := listedDigests(t, body); !slices.Equal(got, sortedDigests(tt.want...)) {
				t.Fatalf("listed %v, want %v", got, sortedDigests(tt.want...))
			}
			if got := resp.Header.Get("OCI-Filters-Applied"); (got == "artifactType") != (tt.artifactType != "") {
				t.Errorf("OCI-Filters-Applied %q with filter %q", got, tt.artifactType)
			}
			if !tt.fallback && !strings.Contains(string(body), `"kept":"yes"`) || tt.artifactType == cosignSig && !strings.Contains(string(body), `"n":"1"`) {
				t.Errorf("the mirror's filtering lost upstream's fields: %s", body)
			}
			if got := e.proxy.Stats().ReferrersFallbacks.Load(); (got == 1) != tt.fallback {
				t.Errorf("Stats.ReferrersFallbacks = %d, want a fallback: %v", got, tt.fallback)
			}
		})
	}
}

// Pages are recorded apart, under their query with its parameters in
// any order, and served stale with their next-page Link; however many
// filters clients ask for, a subject keeps a bounded number of records.
func TestReferrersPagesRecordedAndBounded(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	page := func(n int) string {
		return fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":1,"artifactType":"a"}]}`,
			ociIndex, ociManifest, digest.FromString(fmt.Sprint("page ", n)))
	}
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, tagTimeout: time.Hour})
	serve := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ociIndex)
		if r.URL.Query().Get("last") == "" {
			w.Header().Set("Link", `</v2/team/app/referrers/`+subject.String()+`?n=1&last=p1>; rel="next"`)
			fmt.Fprint(w, page(1))
			return
		}
		fmt.Fprint(w, page(2))
	}
	e.up.setFail(serve)
	get := func(query string) (*http.Response, []digest.Digest) {
		t.Helper()
		resp, err := e.srv.Client().Get(e.srv.URL + "/v2/team/app/referrers/" + subject.String() + query)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s %v", query, resp.StatusCode, body, err)
		}
		return resp, listedDigests(t, body)
	}
	first, _ := get("")
	if link := first.Header.Get("Link"); !strings.Contains(link, "?n=1&last=p1>") || !strings.HasPrefix(link, "<"+e.srv.URL) {
		t.Fatalf("Link %q, want the next page on the mirror", link)
	}
	get("?n=1&last=p1")
	e.up.setFail(failWith(http.StatusServiceUnavailable))
	resp, got := get("?last=p1&n=1") // the same page, its parameters in another order
	if !slices.Equal(got, []digest.Digest{digest.FromString("page 2")}) || resp.Header.Get("Warning") != staleWarning {
		t.Fatalf("stale page 2: %v, Warning %q", got, resp.Header.Get("Warning"))
	}

	e.up.setFail(serve)
	for i := range 40 {
		get(fmt.Sprintf("?artifactType=application/x-%d", i))
	}
	n := 0
	list, err := e.store.Referrers()
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range list {
		if info.Key.Subject == subject {
			n++
		}
	}
	if n > 16 {
		t.Fatalf("%d records for one subject, want at most 16", n)
	}

	e.up.setFail(failWith(http.StatusServiceUnavailable))
	resp, _ = get("?artifactType=application/x-39")
	if resp.Header.Get("Warning") != staleWarning {
		t.Fatal("the latest filter's record is gone")
	}
}

// An answer over the record bound is served whole and not recorded.
func TestReferrersOverTheRecordBoundServedNotRecorded(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	var b strings.Builder
	fmt.Fprintf(&b, `{"schemaVersion":2,"mediaType":%q,"manifests":[`, ociIndex)
	want := []digest.Digest{}
	for i := range 400 {
		d := digest.FromString(fmt.Sprint(i))
		want = append(want, d)
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"mediaType":%q,"digest":%q,"size":1,"artifactType":%q}`, ociManifest, d, cosignSig)
	}
	b.WriteString("]}")
	if b.Len() <= cache.MaxReferrersBody {
		t.Fatalf("the answer is %d bytes, not over the bound", b.Len())
	}
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, tagTimeout: time.Hour})
	e.up.setFail(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, b.String()) })
	resp, err := e.srv.Client().Get(e.srv.URL + referrersPath("team/app", subject, ""))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !slices.Equal(listedDigests(t, body), sortedDigests(want...)) {
		t.Fatalf("status %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	if _, err := e.store.GetReferrers(cache.ReferrersKey{Repo: e.proxy.repo("team/app"), Subject: subject}); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("GetReferrers = %v, want ErrNotFound", err)
	}
}

// Clients asking for one referrers page while its lookup is under way
// share it: upstream sees one request per page and filter, every client
// gets the list, and a client hanging up fails none of the others.
func TestConcurrentReferrersRequestsShareOneLookup(t *testing.T) {
	t.Parallel()
	const n = 6
	subject := digest.FromString("subject")
	e := newStaleEnv(t, staleOptions{tagTimeout: time.Hour})
	hold := make(chan struct{})
	var mu sync.Mutex
	asked := map[string]int{}
	serve := referrersUpstream(subject, http.StatusOK, "")
	e.up.setFail(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked[r.URL.RawQuery]++
		mu.Unlock()
		<-hold
		serve(w, r)
	})
	type answer struct {
		list *registry.ReferrerList
		err  error
	}
	leave, cancel := context.WithCancel(t.Context())
	defer cancel()
	ask := func(ctx context.Context, query string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			l, err := e.proxy.Referrers(ctx, "team/app", subject, query)
			ch <- answer{l, err}
		}()
		return ch
	}
	starter := ask(leave, "")
	testwait.Until(t, "the lookup to reach upstream", func() bool { mu.Lock(); defer mu.Unlock(); return asked[""] == 1 })
	var all, sigs []<-chan answer
	for range n {
		all = append(all, ask(t.Context(), ""))
		sigs = append(sigs, ask(t.Context(), "artifactType="+url.QueryEscape(cosignSig)))
	}
	testwait.Until(t, "every client to wait on a lookup", func() bool { return e.proxy.Stats().ReferrersJoined.Load() == 2*n-1 })
	cancel()
	if a := <-starter; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("the client that hung up got %v, want context.Canceled", a.err)
	}
	close(hold)
	for what, chs := range map[string][]<-chan answer{"all": all, cosignSig: sigs} {
		want := []digest.Digest{digest.FromString("sig"), digest.FromString("sbom")}
		if what == cosignSig {
			want = want[:1]
		}
		for i, ch := range chs {
			a := <-ch
			if a.err != nil {
				t.Fatalf("%s client %d: %v", what, i, a.err)
			}
			if got := listedDigests(t, a.list.Body); !slices.Equal(got, sortedDigests(want...)) {
				t.Fatalf("%s client %d listed %v, want %v", what, i, got, sortedDigests(want...))
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[""] != 1 || asked["artifactType="+url.QueryEscape(cosignSig)] != 1 {
		t.Fatalf("upstream was asked %v, want each page once", asked)
	}
}

// An upstream that answers referrers from its own stale record (a mirror
// tier in front of which ECR is down: Warning 110) is passed on as
// stale, and not recorded as a fresh answer.
func TestStaleReferrersFromAnUpstreamMirrorArePassedOnNotRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{modify: func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/referrers/") {
			resp.Header.Set("Warning", `110 - "Response is Stale"`)
		}
		return nil
	}})
	e.proxy.tagTimeout = time.Hour // before any request: no answer is late on a busy machine
	img := putSignedImage(e.fake, "team/app", 82, false)
	e.wantReferrers(t, referrersPath("team/app", img.manifest, ""), false, true, img.sig.Digest, img.sbom.Digest)
	key := cache.ReferrersKey{Repo: e.proxy.repo("team/app"), Subject: img.manifest}
	if rec, err := e.store.GetReferrers(key); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("referrers record %+v, %v; want none for a stale answer", rec, err)
	}
}

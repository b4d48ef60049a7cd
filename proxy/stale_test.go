package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// staleUpstream is a registry serving one manifest under team/app:v1,
// or an index of it to a client whose Accept names the OCI index type,
// whose behaviour a test switches with fail.
type staleUpstream struct {
	srv       *httptest.Server
	raw       []byte
	dgst      digest.Digest
	index     []byte
	indexDgst digest.Digest

	mu   sync.Mutex
	fail http.HandlerFunc // nil: answer normally
}

func newStaleUpstream(t *testing.T) *staleUpstream {
	t.Helper()
	u := &staleUpstream{raw: testManifest(40)}
	u.dgst = digest.FromBytes(u.raw)
	u.index = fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		ociIndex, ociManifest, u.dgst, len(u.raw))
	u.indexDgst = digest.FromBytes(u.index)
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *staleUpstream) setFail(h http.HandlerFunc) {
	u.mu.Lock()
	u.fail = h
	u.mu.Unlock()
}

func (u *staleUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	fail := u.fail
	u.mu.Unlock()
	if fail != nil {
		fail(w, r)
		return
	}
	raw, dgst, mt := u.raw, u.dgst, ociManifest
	if r.URL.Path == "/v2/team/app/manifests/"+u.indexDgst.String() ||
		r.URL.Path == "/v2/team/app/manifests/v1" && strings.Contains(strings.ToLower(r.Header.Get("Accept")), ociIndex) {
		raw, dgst, mt = u.index, u.indexDgst, ociIndex
	} else if r.URL.Path != "/v2/team/app/manifests/v1" && r.URL.Path != "/v2/team/app/manifests/"+u.dgst.String() {
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Docker-Content-Digest", dgst.String())
	w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
	if r.Method == http.MethodGet {
		w.Write(raw)
	}
}

type staleEnv struct {
	up    *staleUpstream
	store *cache.Store
	proxy *Proxy
	srv   *httptest.Server
	logs  *testkit.SyncBuffer
}

type staleOptions struct {
	staleIfError, tagTimeout time.Duration
	upstream                 string                     // default: the staleUpstream's URL
	fetch                    func() (auth.Token, error) // default: a token that always works
	notMain                  bool                       // another upstream than the main one
}

func newStaleEnv(t *testing.T, o staleOptions) *staleEnv {
	t.Helper()
	up := newStaleUpstream(t)
	if o.upstream == "" {
		o.upstream = up.srv.URL
	}
	upURL, err := url.Parse(o.upstream)
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(cache.Options{Dir: t.TempDir(), MaxSize: 1 << 30, AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if o.fetch == nil {
		o.fetch = func() (auth.Token, error) { return auth.NewToken("QVdTOnNlY3JldA==", time.Now().Add(time.Hour)), nil }
	}
	src := auth.NewSource(func(context.Context) (auth.Token, error) { return o.fetch() }, auth.Options{})
	base := http.DefaultTransport.(*http.Transport).Clone()
	client := NewRedirectPolicy(upURL).Client(base, func(rt http.RoundTripper) http.RoundTripper { return src.Transport(upURL.Host, rt) })
	t.Cleanup(client.CloseIdleConnections)
	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New(Options{Upstream: upURL, MainUpstream: !o.notMain, Client: client, Store: store, Logger: log,
		StaleIfError: o.staleIfError, TagTimeout: o.tagTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	srv := httptest.NewServer(registry.NewHandler(p, nil))
	t.Cleanup(srv.Close)
	return &staleEnv{up: up, store: store, proxy: p, srv: srv, logs: logs}
}

// record stores team/app:v1's manifest and records the tag's answer, as
// a GET through the mirror would.
func (e *staleEnv) record(t *testing.T) {
	t.Helper()
	if err := e.store.Put(e.up.dgst, ociManifest, e.up.raw); err != nil {
		t.Fatal(err)
	}
	err := e.store.PutTag(cache.Repo{Name: "team/app"}, "v1", ociManifest,
		cache.TagRecord{Digest: e.up.dgst, MediaType: ociManifest, Size: int64(len(e.up.raw)), Checked: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
}

// get asks the mirror for team/app:v1 with Accept: ociManifest.
func (e *staleEnv) get(t *testing.T, method string) (*http.Response, []byte) {
	t.Helper()
	return e.getAccept(t, method, ociManifest)
}

// getAccept asks the mirror for team/app:v1 with the given Accept.
func (e *staleEnv) getAccept(t *testing.T, method, accept string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+"/v2/team/app/manifests/v1", nil)
	req.Header.Set("Accept", accept)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	return resp, body.Bytes()
}

// wantStale fails unless resp is the stale answer for the upstream's
// manifest.
func (e *staleEnv) wantStale(t *testing.T, method string, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") != `110 - "Response is Stale"` ||
		resp.Header.Get("Docker-Content-Digest") != e.up.dgst.String() || resp.Header.Get("Content-Type") != ociManifest ||
		resp.ContentLength != int64(len(e.up.raw)) {
		t.Fatalf("%s: status %d, headers %v (%s); want the stale answer", method, resp.StatusCode, resp.Header, body)
	}
	if method == http.MethodGet && !bytes.Equal(body, e.up.raw) {
		t.Fatalf("GET: body of %d bytes is not the manifest", len(body))
	}
}

func failWith(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }
}

func failWithOCI(code int, ociCode string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"from the test"}]}`, ociCode)
	}
}

// failReset drops the connection without an answer.
func failReset(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }

// failHang never answers (until the client gives up).
func failHang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// A tag lookup that gets no answer, a 5xx or a 429 is answered from the
// tag's record, with the Warning, for GET and HEAD; an answer that says
// something about the tag (401, 403, 404, any other 4xx) is passed on.
func TestStaleByFailureKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		fail       http.HandlerFunc
		stale      bool
		why        string // the reason logged
		wantStatus int    // the status without a stale answer
	}{
		{name: "500", fail: failWith(500), stale: true, why: whyServer, wantStatus: 502},
		{name: "502", fail: failWith(502), stale: true, why: whyServer, wantStatus: 502},
		{name: "503 OCI", fail: failWithOCI(503, "UNAVAILABLE"), stale: true, why: whyServer, wantStatus: 502},
		{name: "504", fail: failWith(504), stale: true, why: whyServer, wantStatus: 502},
		{name: "429", fail: failWithOCI(429, "TOOMANYREQUESTS"), stale: true, why: whyThrottled, wantStatus: 429},
		{name: "reset", fail: failReset, stale: true, why: whyUnreachable, wantStatus: 502},
		{name: "no answer", fail: failHang, stale: true, why: whyTimeout, wantStatus: 504},
		{name: "404", fail: failWithOCI(404, "MANIFEST_UNKNOWN"), wantStatus: 404},
		{name: "404 bare", fail: failWith(404), wantStatus: 404},
		{name: "403", fail: failWithOCI(403, "DENIED"), wantStatus: 403},
		{name: "401 after a refresh", fail: failWith(401), wantStatus: 403},
		{name: "400 bare", fail: failWith(400), wantStatus: 502},
		{name: "405", fail: failWith(405), wantStatus: 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The tag's last answer is recorded beforehand rather than by
			// a first GET, which would have to beat the short tag
			// timeout on a busy machine. A lookup that the timeout did
			// not end (no answer) would hang the test.
			e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, tagTimeout: 300 * time.Millisecond})
			e.record(t)
			e.up.setFail(tt.fail)
			for _, m := range []string{http.MethodGet, http.MethodHead} {
				resp, body := e.get(t, m)
				if tt.stale {
					e.wantStale(t, m, resp, body)
				} else if resp.StatusCode != tt.wantStatus || resp.Header.Get("Warning") != "" {
					t.Fatalf("%s: status %d, Warning %q (%s); want %d, not masked", m, resp.StatusCode, resp.Header.Get("Warning"), body, tt.wantStatus)
				}
			}
			wantStale := int64(0)
			if tt.stale {
				wantStale = 2
				if logs := e.logs.String(); !strings.Contains(logs, "reason="+tt.why) || !strings.Contains(logs, "level=WARN") ||
					!strings.Contains(logs, "repository=team/app") || !strings.Contains(logs, "tag=v1") || !strings.Contains(logs, "age=") {
					t.Errorf("the warn log does not say repository, tag, age and reason=%s:\n%s", tt.why, logs)
				}
			}
			if n := e.proxy.Stats().Stale.Load(); n != wantStale {
				t.Errorf("Stats.Stale = %d, want %d", n, wantStale)
			}

			// Without STALE_IF_ERROR the same failure is the usual error.
			off := newStaleEnv(t, staleOptions{tagTimeout: 300 * time.Millisecond})
			off.record(t)
			off.up.setFail(tt.fail)
			for _, m := range []string{http.MethodGet, http.MethodHead} {
				if resp, body := off.get(t, m); resp.StatusCode != tt.wantStatus || resp.Header.Get("Warning") != "" {
					t.Errorf("STALE_IF_ERROR=0, %s: status %d (%s), want %d", m, resp.StatusCode, body, tt.wantStatus)
				}
			}
		})
	}
}

// When the mirror's token is rejected and no new one can be had (the
// token API is unreachable too), ECR cannot be asked: the stale answer is
// served. The same 401 with a working token API is passed on (above).
func TestStaleWhenNoCredentials(t *testing.T) {
	t.Parallel()
	var broken atomic.Bool
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, fetch: func() (auth.Token, error) {
		if broken.Load() {
			return auth.Token{}, errors.New("dial tcp: connection refused")
		}
		return auth.NewToken("QVdTOnNlY3JldA==", time.Now().Add(time.Hour)), nil
	}})
	if resp, _ := e.get(t, http.MethodGet); resp.StatusCode != http.StatusOK {
		t.Fatalf("first GET: status %d", resp.StatusCode)
	}
	broken.Store(true)
	e.up.setFail(failWith(401))
	resp, body := e.get(t, http.MethodGet)
	e.wantStale(t, http.MethodGet, resp, body)
	if !strings.Contains(e.logs.String(), "reason="+whyCredentials) {
		t.Errorf("log does not say reason=credentials:\n%s", e.logs)
	}
}

// Once ECR has named the tag's current digest, a failure fetching that
// manifest is not masked with the older one.
func TestStaleNotServedOnceTagMoved(t *testing.T) {
	t.Parallel()
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour})
	if resp, _ := e.get(t, http.MethodGet); resp.StatusCode != http.StatusOK {
		t.Fatalf("first GET: status %d", resp.StatusCode)
	}
	moved := digest.FromString("the tag's new manifest")
	e.up.setFail(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Type", ociManifest)
			w.Header().Set("Docker-Content-Digest", moved.String())
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	resp, body := e.get(t, http.MethodGet)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Warning") != "" {
		t.Fatalf("GET: status %d, Warning %q (%s); want 502", resp.StatusCode, resp.Header.Get("Warning"), body)
	}
	// The HEAD's answer replaced the record.
	rec, err := e.store.GetTag(e.proxy.repo("team/app"), "v1", ociManifest)
	if err != nil || rec.Digest != moved {
		t.Fatalf("record after the move: %+v, %v; want %s", rec, err, moved)
	}
	// ... so even a lookup that then fails outright is not answered with
	// the old manifest: the record's is not stored.
	e.up.setFail(failWith(503))
	if resp, _ := e.get(t, http.MethodGet); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET after the move: status %d, want 502", resp.StatusCode)
	}
}

// Successful lookups record what ECR said, with the time: a HEAD alone
// (what containerd sends first) as well as a GET.
func TestTagLookupRecorded(t *testing.T) {
	t.Parallel()
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour})
	before := time.Now()
	if resp, _ := e.get(t, http.MethodHead); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: status %d", resp.StatusCode)
	}
	rec, err := e.store.GetTag(e.proxy.repo("team/app"), "v1", ociManifest)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Digest != e.up.dgst || rec.MediaType != ociManifest || rec.Size != int64(len(e.up.raw)) ||
		rec.Checked.Before(before) || rec.Checked.After(time.Now()) {
		t.Fatalf("record after HEAD: %+v", rec)
	}
	if _, err := e.store.Stat(e.up.dgst); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("a HEAD stored the manifest: %v", err)
	}
	// HEAD only: nothing to serve stale from yet.
	e.up.setFail(failWith(503))
	if resp, _ := e.get(t, http.MethodGet); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET with the manifest not stored: status %d, want 502", resp.StatusCode)
	}
	e.up.setFail(nil)
	if resp, _ := e.get(t, http.MethodGet); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: status %d", resp.StatusCode)
	}
	rec2, err := e.store.GetTag(e.proxy.repo("team/app"), "v1", ociManifest)
	if err != nil || !rec2.Checked.After(rec.Checked) {
		t.Fatalf("record after GET: %+v, %v; want a later check than %v", rec2, err, rec.Checked)
	}
	// Another Accept has no record.
	if _, err := e.store.GetTag(e.proxy.repo("team/app"), "v1", ""); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("record for another Accept: %v", err)
	}
}

// A name that does not resolve is ECR being unreachable: a record and the
// manifest in the store are enough to answer.
func TestStaleWhenUpstreamDoesNotResolve(t *testing.T) {
	t.Parallel()
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, tagTimeout: 2 * time.Second,
		upstream: "http://ecr-mirror-test.invalid"})
	e.record(t)
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		resp, body := e.get(t, m)
		e.wantStale(t, m, resp, body)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "reason="+whyUnreachable) && !strings.Contains(logs, "reason="+whyTimeout) {
		t.Errorf("log does not give the reason:\n%s", logs)
	}
}

func TestNoAnswerWhy(t *testing.T) {
	t.Parallel()
	live := context.Background()
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want string
	}{
		{name: "reset", ctx: live, err: transportError("HEAD", "a/manifests/v1", errors.New("connection reset by peer")), want: whyUnreachable},
		{name: "timeout", ctx: live, err: transportError("HEAD", "a/manifests/v1", timeoutErr{}), want: whyTimeout},
		{name: "tag deadline", ctx: expired, err: transportError("HEAD", "a/manifests/v1", context.DeadlineExceeded), want: whyTimeout},
		{name: "credentials", ctx: live, err: transportError("HEAD", "a/manifests/v1", &auth.CredentialsError{Host: "h", Err: errors.New("refused")}), want: whyCredentials},
		{name: "canceled", ctx: live, err: transportError("HEAD", "a/manifests/v1", context.Canceled), want: ""},
		{name: "too large", ctx: live, err: manifestTooLarge("a/manifests/v1", 10, 5), want: ""},
		{name: "not a registry error", ctx: live, err: errors.New("building upstream request"), want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := noAnswerWhy(tt.ctx, tt.err); got != tt.want {
				t.Errorf("noAnswerWhy(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// Clients sending 2,000 different Accept headers for one tag leave a few
// tag records, not 2,000: headers naming the same manifest types share
// one (unknown types, parameters, case and order do not matter), and the
// least recently checked go past the bound. Every answer stays the one
// for the client's Accept, online and stale.
func TestTagRecordsBoundedAcrossAcceptHeaders(t *testing.T) {
	t.Parallel()
	e := newStaleEnv(t, staleOptions{staleIfError: time.Hour, tagTimeout: 10 * time.Second})
	known := []string{
		ociIndex, ociManifest,
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.v1+prettyjws",
		"application/vnd.oci.artifact.manifest.v1+json",
	}
	// acceptFor names the manifest types of mask's bits, spelt by
	// spelling, with an unknown type of its own.
	acceptFor := func(mask, spelling int) (string, bool) {
		parts := []string{fmt.Sprintf("application/x-client-%d", spelling)}
		index := false
		for bit, mt := range known {
			if mask&(1<<bit) == 0 {
				continue
			}
			index = index || mt == ociIndex
			if spelling%2 == 1 {
				mt = strings.ToUpper(mt)
			}
			parts = append(parts, fmt.Sprintf("%s;q=0.%d", mt, spelling%10))
		}
		if spelling%3 == 0 {
			slices.Reverse(parts)
		}
		return strings.Join(parts, ", "), index
	}
	wantAnswer := func(t *testing.T, what string, resp *http.Response, body []byte, index bool) {
		t.Helper()
		raw, dgst, mt := e.up.raw, e.up.dgst, ociManifest
		if index {
			raw, dgst, mt = e.up.index, e.up.indexDgst, ociIndex
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != dgst.String() ||
			resp.Header.Get("Content-Type") != mt || !bytes.Equal(body, raw) {
			t.Fatalf("%s: status %d, %s %s (%s); want %s %s", what, resp.StatusCode,
				resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"), body, mt, dgst)
		}
	}

	const n = 2000
	masks := 1<<len(known) - 1
	for i := range n {
		accept, index := acceptFor(i%masks+1, i)
		resp, body := e.getAccept(t, http.MethodGet, accept)
		wantAnswer(t, fmt.Sprintf("GET %d with Accept %q", i, accept), resp, body, index)
	}
	tags, err := e.store.Tags()
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) > 8 {
		t.Fatalf("%d distinct Accept headers left %d tag records for team/app:v1, want at most 8", n, len(tags))
	}

	// ECR fails: the latest clients' Accepts, spelt anew, get their
	// own answers stale; the first client's record went with the bound.
	e.up.setFail(failWith(http.StatusServiceUnavailable))
	for _, i := range []int{n - 1, n - 2} {
		accept, index := acceptFor(i%masks+1, i+7)
		resp, body := e.getAccept(t, http.MethodGet, accept)
		wantAnswer(t, fmt.Sprintf("stale GET with Accept %q", accept), resp, body, index)
		if resp.Header.Get("Warning") == "" {
			t.Fatalf("stale GET with Accept %q has no Warning", accept)
		}
	}
	accept, _ := acceptFor(1, 0)
	if resp, body := e.getAccept(t, http.MethodGet, accept); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET with the first, evicted Accept %q: status %d (%s), want 502", accept, resp.StatusCode, body)
	}
}

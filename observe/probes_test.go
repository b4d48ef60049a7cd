package observe

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/proxy"
)

// newProbes checks a store in a temporary directory, a token source and the
// reachability the probes read.
func newProbes(t *testing.T, tokenOK, reachable, cached, staleIfError bool) *Probes {
	t.Helper()
	dir := t.TempDir()
	store, err := cache.Open(cache.Options{Dir: dir, MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if cached {
		data := []byte(`{"schemaVersion":2}`)
		if err := store.Put(digest.FromBytes(data), "application/vnd.oci.image.manifest.v1+json", data); err != nil {
			t.Fatal(err)
		}
	}
	tokens := auth.NewSource(func(context.Context) (auth.Token, error) {
		if !tokenOK {
			return auth.Token{}, errors.New("no credentials")
		}
		return auth.NewToken("QVdTOnNlY3JldA==", time.Now().Add(12*time.Hour)), nil
	}, auth.Options{})
	tokens.Token(context.Background()) // the error, if any, is what the probes report
	reach := NewReachability(time.Now)
	if reachable {
		reach.ObserveUpstream(proxy.UpstreamEvent{Kind: "blob", Method: "GET", Status: 200})
	} else {
		reach.ObserveUpstream(proxy.UpstreamEvent{Kind: "blob", Method: "GET", Failure: "unreachable"})
	}
	return NewProbes(dir, store, []*auth.Source{tokens}, reach, staleIfError)
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                                   string
		tokenOK, reachable, cached, staleIfErr bool
		wantStatus                             int
		want                                   []string
	}{
		{name: "all well", tokenOK: true, reachable: true, wantStatus: 200,
			want: []string{"cache directory writable: ok", "cache index open: ok", "ECR token: ok (expires", "ECR reachable: ok"}},
		{name: "no token", reachable: true, wantStatus: 503,
			want: []string{"ECR token: NOT READY: no valid token yet"}},
		{name: "unreachable is reported, not fatal alone", tokenOK: true, wantStatus: 200,
			want: []string{"ECR reachable: FAILING: last attempt at"}},
		{name: "stale, nothing cached", staleIfErr: true, wantStatus: 503,
			want: []string{"ECR token: FAILING", "cached content: NOT READY"}},
		{name: "stale, content cached", cached: true, staleIfErr: true, wantStatus: 200,
			want: []string{"degraded: serving cached content without ECR (STALE_IF_ERROR); failing: ECR token, ECR reachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProbes(t, tt.tokenOK, tt.reachable, tt.cached, tt.staleIfErr)
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tt.wantStatus {
				t.Errorf("status %d, want %d:\n%s", rec.Code, tt.wantStatus, rec.Body)
			}
			for _, w := range tt.want {
				if !strings.Contains(rec.Body.String(), w) {
					t.Errorf("body lacks %q:\n%s", w, rec.Body)
				}
			}
		})
	}
}

func TestHealthzIsAlwaysOK(t *testing.T) {
	t.Parallel()
	p := newProbes(t, false, false, false, false)
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "ok" {
		t.Errorf("/healthz: %d %q, want 200 ok", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
}

// With several ECR regions, the mirror is ready only when every region's
// token is in hand; with no ECR upstream, no token is needed.
func TestReadyzWantsEveryRegionsToken(t *testing.T) {
	t.Parallel()
	source := func(ok bool) *auth.Source {
		s := auth.NewSource(func(context.Context) (auth.Token, error) {
			if !ok {
				return auth.Token{}, errors.New("no credentials for this region")
			}
			return auth.NewToken("QVdTOnNlY3JldA==", time.Now().Add(12*time.Hour)), nil
		}, auth.Options{})
		s.Token(context.Background())
		return s
	}
	tests := []struct {
		name       string
		tokens     []*auth.Source
		wantStatus int
		want       string
	}{
		{"both regions", []*auth.Source{source(true), source(true)}, 200, "ECR token: ok (expires"},
		{"one region without", []*auth.Source{source(true), source(false)}, 503, "ECR token: NOT READY"},
		{"no ECR upstream", nil, 200, "cache index open: ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProbes(t, true, true, false, false)
			p.tokens = tt.tokens
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tt.wantStatus || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("status %d, body:\n%s\nwant %d and %q", rec.Code, rec.Body, tt.wantStatus, tt.want)
			}
		})
	}
}

// A shared tier that just failed, or peers missing, make the mirror
// degraded (first line) but never unready; both well add their ok lines.
func TestReadyzReportsSharedTierAndPeers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		shared     bool // reachable
		members    int
		self       bool
		resolveErr error
		staleIfErr bool
		want       []string
		first      string // the body's first line starts so
	}{
		{name: "all well", shared: true, members: 3, self: true,
			want: []string{"shared store: ok", "peers: 3 members, this replica among them"}, first: "cache directory writable: ok"},
		{name: "shared tier down", members: 3, self: true,
			want: []string{"shared store: FAILING"}, first: "degraded: pulls go on through ECR; failing: shared store"},
		{name: "no member", shared: true, resolveErr: errors.New("lookup headless: no such host"),
			want: []string{"peers: FAILING: 0 members", "the last resolution failed: lookup headless"}, first: "degraded: pulls go on through ECR; failing: peers"},
		{name: "not among them", shared: true, members: 2,
			want: []string{"peers: FAILING: 2 members, this replica NOT among them"}, first: "degraded: pulls go on through ECR; failing: peers"},
		{name: "failed resolution, members kept", shared: true, members: 3, self: true, resolveErr: errors.New("timeout"),
			want: []string{"peers: 3 members, this replica among them; the last resolution failed: timeout"}, first: "cache directory writable: ok"},
		{name: "stale and tiers failing", members: 3, self: true, staleIfErr: true,
			first: "degraded: serving cached content without ECR (STALE_IF_ERROR); failing: ECR token, ECR reachable, shared store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProbes(t, !tt.staleIfErr, !tt.staleIfErr, true, tt.staleIfErr)
			p.WatchSharedStore(func() bool { return tt.shared })
			p.WatchPeers(func() (int, bool, error) { return tt.members, tt.self, tt.resolveErr })
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != http.StatusOK {
				t.Errorf("status %d, want 200:\n%s", rec.Code, rec.Body)
			}
			if !strings.HasPrefix(rec.Body.String(), tt.first) {
				t.Errorf("first line is not %q:\n%s", tt.first, rec.Body)
			}
			for _, w := range tt.want {
				if !strings.Contains(rec.Body.String(), w) {
					t.Errorf("body lacks %q:\n%s", w, rec.Body)
				}
			}
		})
	}
}

// With STALE_IF_ERROR and ECR down, a replica whose own cache is empty
// is ready while the shared tier answers: it serves what the cluster
// has seen from there (a pod started during an ECR outage must not be
// kept out of its Service). Without a shared tier that answers, it is
// not ready.
func TestReadyzEmptyCacheServesFromTheSharedTierWithoutECR(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		watch      bool // a shared tier is configured
		shared     bool // reachable
		wantStatus int
		want       string
	}{
		{name: "shared tier answers", watch: true, shared: true, wantStatus: 200,
			want: "degraded: serving cached content without ECR (STALE_IF_ERROR); failing: ECR token, ECR reachable"},
		{name: "shared tier down", watch: true, wantStatus: 503, want: "cached content: NOT READY"},
		{name: "no shared tier", wantStatus: 503, want: "cached content: NOT READY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProbes(t, false, false, false, true)
			if tt.watch {
				p.WatchSharedStore(func() bool { return tt.shared })
			}
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tt.wantStatus || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("status %d, body:\n%s\nwant %d and %q", rec.Code, rec.Body, tt.wantStatus, tt.want)
			}
		})
	}
}

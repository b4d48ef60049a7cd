package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// wantTag fails unless r is a successful answer naming dgst, with raw as
// its body for a GET and its size for a HEAD.
func wantTag(t *testing.T, what string, r tagResult, head bool, dgst digest.Digest, raw []byte) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v", what, r.err)
	}
	if r.c.Dgst != dgst || r.c.Size != int64(len(raw)) || r.c.MediaType != ociManifest {
		t.Fatalf("%s: digest %s, size %d, type %q; want %s, %d, %s", what, r.c.Dgst, r.c.Size, r.c.MediaType, dgst, len(raw), ociManifest)
	}
	if !head && !bytes.Equal(r.body, raw) {
		t.Fatalf("%s: body of %d bytes is not the manifest", what, len(r.body))
	}
}

// Clients asking for one tag while its lookup is under way share that
// lookup: ECR sees one HEAD (and, when the manifest is not stored, one
// GET by tag), and every client, HEAD or GET, gets the tag's manifest.
func TestConcurrentTagRequestsShareOneLookup(t *testing.T) {
	t.Parallel()
	const n = 8
	tests := []struct {
		name        string
		stored      bool
		wantGetsTag int64
	}{
		{name: "manifest stored", stored: true},
		{name: "manifest not stored", wantGetsTag: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			raw := testManifest(50)
			dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
			if tt.stored {
				if err := e.store.Put(dgst, ociManifest, raw); err != nil {
					t.Fatal(err)
				}
			}
			hold := make(chan struct{})
			e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Hold: hold})
			var results [n]<-chan tagResult
			for i := range results {
				results[i] = e.askTag(t.Context(), tagReq(i%2 == 1, ociManifest))
			}
			testwait.Until(t, "every client waiting on one lookup", func() bool { return e.proxy.Stats().TagJoined.Load() == n-1 })
			close(hold)
			outcomes := map[string]int{}
			for i, ch := range results {
				r := <-ch
				wantTag(t, fmt.Sprintf("client %d", i), r, i%2 == 1, dgst, raw)
				outcomes[r.c.Outcome]++
			}
			c := e.fake.Counters()
			if c.ManifestHead != 1 || c.ManifestGetByTag != tt.wantGetsTag || c.ManifestGetByDigest != 0 {
				t.Errorf("upstream saw %d HEADs, %d GETs by tag, %d by digest; want 1, %d, 0",
					c.ManifestHead, c.ManifestGetByTag, c.ManifestGetByDigest, tt.wantGetsTag)
			}
			if tt.stored && (outcomes[OutcomeRevalidated] != 1 || outcomes[OutcomeJoined] != n-1) {
				t.Errorf("outcomes %v; want 1 %s, %d %s", outcomes, OutcomeRevalidated, n-1, OutcomeJoined)
			}
		})
	}
}

// A client hanging up, the one whose request started the lookup or one
// that joined it, leaves alone: the lookup goes on and the others get the
// answer.
func TestTagLookupSurvivesClientsLeaving(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		leaver int // 0 started the lookup; 1 and 2 joined it
	}{
		{name: "the starter hangs up", leaver: 0},
		{name: "a joiner hangs up", leaver: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			raw := testManifest(51)
			dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
			hold := make(chan struct{})
			e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Hold: hold})
			ctxs := [3]context.Context{t.Context(), t.Context(), t.Context()}
			leave, cancel := context.WithCancel(t.Context())
			defer cancel()
			ctxs[tt.leaver] = leave
			var results [3]<-chan tagResult
			results[0] = e.askTag(ctxs[0], tagReq(false, ociManifest))
			testwait.Until(t, "the lookup to reach ECR", func() bool { return e.fake.Counters().ManifestHead == 1 })
			results[1] = e.askTag(ctxs[1], tagReq(false, ociManifest))
			results[2] = e.askTag(ctxs[2], tagReq(true, ociManifest))
			testwait.Until(t, "two clients to join", func() bool { return e.proxy.Stats().TagJoined.Load() == 2 })
			cancel()
			if r := <-results[tt.leaver]; !errors.Is(r.err, context.Canceled) {
				t.Fatalf("the client that hung up got %+v, %v; want context.Canceled", r.c, r.err)
			}
			close(hold)
			for i, ch := range results {
				if i != tt.leaver {
					wantTag(t, "a client that stayed", <-ch, i == 2, dgst, raw)
				}
			}
			if c := e.fake.Counters(); c.ManifestHead != 1 || c.ManifestGetByTag != 1 {
				t.Errorf("upstream saw %d HEADs, %d GETs by tag; want 1, 1", c.ManifestHead, c.ManifestGetByTag)
			}
			if rec, err := e.store.GetTag(e.proxy.repo("team/app"), "v1", ociManifest); err != nil || rec.Digest != dgst {
				t.Errorf("tag record %+v, %v; want %s", rec, err, dgst)
			}
		})
	}
}

// Only requests asking for the same manifest types share a lookup, since
// ECR converts a manifest by tag to what Accept allows; how the types are
// spelled does not matter.
func TestTagLookupsSharedPerManifestTypes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		accept []string // the second client's; the first sends ociManifest
		share  bool
	}{
		{name: "same type, other spelling", accept: []string{"Application/VND.oci.image.manifest.v1+json; q=0.5", "text/html"}, share: true},
		{name: "more types", accept: []string{ociIndex, ociManifest}},
		{name: "any type", accept: []string{"*/*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			raw := testManifest(52)
			dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
			if err := e.store.Put(dgst, ociManifest, raw); err != nil {
				t.Fatal(err)
			}
			hold := make(chan struct{})
			e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Hold: hold})
			first := e.askTag(t.Context(), tagReq(false, ociManifest))
			testwait.Until(t, "the first lookup to reach ECR", func() bool { return e.fake.Counters().ManifestHead == 1 })
			second := e.askTag(t.Context(), registry.Request{Name: "team/app", Tag: "v1", Accept: tt.accept})
			wantHeads := int64(2)
			if tt.share {
				wantHeads = 1
				testwait.Until(t, "the second client to join", func() bool { return e.proxy.Stats().TagJoined.Load() == 1 })
			} else {
				testwait.Until(t, "a second lookup to reach ECR", func() bool { return e.fake.Counters().ManifestHead == 2 })
			}
			close(hold)
			wantTag(t, "first", <-first, false, dgst, raw)
			wantTag(t, "second", <-second, false, dgst, raw)
			if c := e.fake.Counters(); c.ManifestHead != wantHeads {
				t.Errorf("upstream saw %d HEADs, want %d", c.ManifestHead, wantHeads)
			}
		})
	}
}

// When the lookup every client joined fails with 503, each of them gets
// the stale answer (STALE_IF_ERROR), or else the error, as a client on
// its own would.
func TestStaleAnswerForEveryJoiner(t *testing.T) {
	t.Parallel()
	const n = 6
	tests := []struct {
		name         string
		staleIfError time.Duration
	}{
		{name: "STALE_IF_ERROR set", staleIfError: time.Hour},
		{name: "STALE_IF_ERROR unset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{staleIfError: tt.staleIfError})
			raw := testManifest(53)
			dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
			if err := e.store.Put(dgst, ociManifest, raw); err != nil {
				t.Fatal(err)
			}
			rec := cache.TagRecord{Digest: dgst, MediaType: ociManifest, Size: int64(len(raw)), Checked: time.Now()}
			if err := e.store.PutTag(e.proxy.repo("team/app"), "v1", ociManifest, rec); err != nil {
				t.Fatal(err)
			}
			hold := make(chan struct{})
			e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusServiceUnavailable, Hold: hold})
			var results [n]<-chan tagResult
			for i := range results {
				results[i] = e.askTag(t.Context(), tagReq(i%2 == 1, ociManifest))
			}
			testwait.Until(t, "every client waiting on one lookup", func() bool { return e.proxy.Stats().TagJoined.Load() == n-1 })
			close(hold)
			for i, ch := range results {
				r := <-ch
				if tt.staleIfError == 0 {
					var rerr *registry.Error
					if !errors.As(r.err, &rerr) || rerr.HTTPStatus() != http.StatusBadGateway {
						t.Fatalf("client %d: %+v, %v; want a 502", i, r.c, r.err)
					}
					continue
				}
				wantTag(t, "stale answer", r, i%2 == 1, dgst, raw)
				if r.c.Outcome != OutcomeStale || r.c.Warning != staleWarning {
					t.Fatalf("client %d: outcome %q, Warning %q; want the stale answer", i, r.c.Outcome, r.c.Warning)
				}
			}
			wantStale := int64(0)
			if tt.staleIfError > 0 {
				wantStale = n
			}
			if got := e.proxy.Stats().Stale.Load(); got != wantStale {
				t.Errorf("Stats.Stale = %d, want %d", got, wantStale)
			}
			if c := e.fake.Counters(); c.ManifestHead != 1 || c.ManifestGetByTag != 0 {
				t.Errorf("upstream saw %d HEADs, %d GETs by tag; want 1, 0", c.ManifestHead, c.ManifestGetByTag)
			}
		})
	}
}

// With TagFreshness, a tag whose record is younger than it and whose
// manifest is stored is answered from the record without asking ECR, so
// a tag moved upstream is seen up to that late; once the record is as old
// as TagFreshness, the next request revalidates and sees the move.
func TestTagFreshnessAnswersFromRecord(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	e := newEnv(t, envOptions{tagFreshness: time.Minute, tagClock: clock})
	raw := testManifest(54)
	dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
	ask := func(head bool) tagResult { return <-e.askTag(t.Context(), tagReq(head, ociManifest)) }
	wantUpstream := func(when string, heads, gets int64) {
		t.Helper()
		if c := e.fake.Counters(); c.ManifestHead != heads || c.ManifestGetByTag != gets {
			t.Fatalf("%s: upstream saw %d HEADs, %d GETs by tag; want %d, %d", when, c.ManifestHead, c.ManifestGetByTag, heads, gets)
		}
	}

	// A HEAD records the tag but stores no manifest: a GET must ask.
	wantTag(t, "first HEAD", ask(true), true, dgst, raw)
	wantTag(t, "first GET", ask(false), false, dgst, raw)
	wantUpstream("after the first HEAD and GET", 2, 1)

	clock.Advance(time.Minute - time.Nanosecond)
	for _, head := range []bool{false, true} {
		r := ask(head)
		wantTag(t, "fresh", r, head, dgst, raw)
		if r.c.Outcome != OutcomeFresh {
			t.Errorf("outcome %q, want %q", r.c.Outcome, OutcomeFresh)
		}
	}
	wantUpstream("within the window", 2, 1)

	moved := testManifest(55)
	movedDgst := e.fake.PutManifest("team/app", "v1", ociManifest, moved)
	wantTag(t, "moved upstream, within the window", ask(false), false, dgst, raw)
	wantUpstream("within the window, after the move", 2, 1)
	if n := e.proxy.Stats().TagFresh.Load(); n != 3 {
		t.Errorf("Stats.TagFresh = %d, want 3", n)
	}

	clock.Advance(time.Nanosecond)
	wantTag(t, "at the end of the window", ask(false), false, movedDgst, moved)
	wantUpstream("at the end of the window", 3, 2)
	// The revalidation dated a new record: fresh again.
	wantTag(t, "after the revalidation", ask(false), false, movedDgst, moved)
	wantUpstream("after the revalidation", 3, 2)
}

// A request whose HEAD saw the tag move does not join a GET by tag sent
// before the move: it fetches the manifest the tag names now.
func TestTagMovedDuringGetIsNotJoined(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	raw, moved := testManifest(56), testManifest(57)
	dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
	hold := make(chan struct{})
	defer close(hold)
	// The HEAD passes; the GET by tag that follows it is held.
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Times: 1,
		Then: &fakeecr.Fault{Mode: fakeecr.FaultDelay, Hold: hold}})
	before := e.askTag(t.Context(), tagReq(false, ociManifest))
	testwait.Until(t, "the GET by tag to reach ECR", func() bool { return e.fake.Counters().ManifestGetByTag == 1 })
	movedDgst := e.fake.PutManifest("team/app", "v1", ociManifest, moved)
	select {
	case r := <-e.askTag(t.Context(), tagReq(false, ociManifest)):
		wantTag(t, "after the move", r, false, movedDgst, moved)
	case <-time.After(testwait.HangGuard):
		t.Fatal("the request after the move waited for the GET sent before it")
	}
	select {
	case r := <-before:
		t.Fatalf("the held GET answered before its release: %+v, %v", r.c, r.err)
	default:
	}
}

// What ECR says about a tag (404, 403) reaches every request that shared
// the lookup, as it reaches a request alone: the HEAD clients get the
// HEAD's answer, the GET clients the GET by tag's, with its code.
func TestECRAnswersReachEveryJoiner(t *testing.T) {
	t.Parallel()
	const n = 6
	tests := []struct {
		name       string
		status     int    // what ECR answers; 0: as the fake does (the tag is unknown)
		wantStatus int    // what the clients get
		wantCode   string // the GET clients' code
		wantGets   int64  // GETs by tag ECR sees, as for one client alone
	}{
		// The HEAD's 404 has no body: the GET by tag asks again.
		{name: "unknown tag", wantStatus: http.StatusNotFound, wantCode: "MANIFEST_UNKNOWN", wantGets: 1},
		// The auth transport asks a HEAD's 403 again with a GET, to
		// read whether the token was refused (it was not).
		{name: "denied", status: http.StatusForbidden, wantStatus: http.StatusForbidden, wantCode: "DENIED", wantGets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hold := make(chan struct{})
			e := newEnv(t, envOptions{modify: func(resp *http.Response) error {
				if resp.Request.Method == http.MethodHead {
					<-hold // every client joins the first lookup first
				}
				if tt.status != 0 {
					body := `{"errors":[{"code":"DENIED","message":"User: arn:aws:iam::123456789012:role/mirror is not authorized to perform: ecr:BatchGetImage"}]}`
					resp.StatusCode, resp.ContentLength = tt.status, int64(len(body))
					resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
					resp.Body = io.NopCloser(strings.NewReader(body))
				}
				return nil
			}})
			e.fake.PutManifest("team/app", "v2", ociManifest, testManifest(58))
			var results [n]<-chan tagResult
			for i := range results {
				results[i] = e.askTag(t.Context(), tagReq(i%2 == 1, ociManifest))
			}
			testwait.Until(t, "every client waiting on one lookup", func() bool { return e.proxy.Stats().TagJoined.Load() == n-1 })
			close(hold)
			for i, ch := range results {
				r := <-ch
				var rerr *registry.Error
				if !errors.As(r.err, &rerr) || rerr.HTTPStatus() != tt.wantStatus {
					t.Fatalf("client %d: %+v, %v; want %d", i, r.c, r.err, tt.wantStatus)
				}
				if i%2 == 0 && string(rerr.Code) != tt.wantCode {
					t.Errorf("GET client %d: code %s, want %s", i, rerr.Code, tt.wantCode)
				}
			}
			if c := e.fake.Counters(); c.ManifestHead != 1 || c.ManifestGetByTag != tt.wantGets {
				t.Errorf("upstream saw %d HEADs, %d GETs by tag; want 1, %d", c.ManifestHead, c.ManifestGetByTag, tt.wantGets)
			}
		})
	}
}

// A proxy closing ends the lookups under way: their clients are told the
// mirror is shutting down (503), not handed a bare cancellation.
func TestTagLookupEndsWithTheProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	raw := testManifest(59)
	dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
	hold := make(chan struct{})
	defer close(hold)
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Hold: hold})
	r := e.askTag(t.Context(), tagReq(false, ociManifest))
	testwait.Until(t, "the lookup to reach ECR", func() bool { return e.fake.Counters().ManifestHead == 1 })
	e.proxy.Close()
	res := <-r
	var rerr *registry.Error
	if !errors.As(res.err, &rerr) || rerr.HTTPStatus() != http.StatusServiceUnavailable || !strings.Contains(rerr.Message, "shutting down") {
		t.Fatalf("got %+v, %v; want 503 saying the mirror is shutting down", res.c, res.err)
	}
}

// An upstream that answers a tag from its own stale record (a mirror
// tier in front of which ECR is down: Warning 110) is passed on as
// stale, and not recorded as a fresh answer.
func TestStaleAnswerFromAnUpstreamMirrorIsPassedOnNotRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{modify: func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/manifests/") {
			resp.Header.Set("Warning", `110 - "Response is Stale"`)
		}
		return nil
	}})
	raw := testManifest(77)
	dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
	for _, head := range []bool{true, false} {
		r := <-e.askTag(t.Context(), tagReq(head, ociManifest))
		wantTag(t, fmt.Sprintf("HEAD %v", head), r, head, dgst, raw)
		if r.c.Warning != staleWarning {
			t.Errorf("HEAD %v: Warning %q, want the stale one passed on", head, r.c.Warning)
		}
	}
	if rec, err := e.store.GetTag(e.proxy.repo("team/app"), "v1", ociManifest); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("tag record %+v, %v; want none for a stale answer", rec, err)
	}
}

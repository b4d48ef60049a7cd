package main

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

const (
	staleWarning = `110 - "Response is Stale"`
	// staleAccept is what the edge site's clients send.
	staleAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
	// staleTagTimeout is UPSTREAM_TAG_TIMEOUT in these tests: so long
	// that a lookup that waited for it instead of failing at once would
	// hang the test, and no busy machine makes a live ECR miss it.
	staleTagTimeout = time.Hour
	// blackHoleTagTimeout is UPSTREAM_TAG_TIMEOUT where ECR is
	// black-holed and the timeout must pass. The mirror is restarted with
	// it only after the first pull, so no pull has to beat it.
	blackHoleTagTimeout = 500 * time.Millisecond
)

// edgeSite is an edge site: a fake ECR holding edge/app:v1, a link in
// front of its registry (and token API) that can be black-holed, and a
// mirror reaching ECR through the link.
type edgeSite struct {
	fake      *fakeecr.Server
	link      *fakeecr.Link
	m         *mirror
	dir       string
	manifest  digest.Digest
	raw       []byte
	mediaType string
}

// newEdgeSite starts a site with these settings on top of
// UPSTREAM_TAG_TIMEOUT=staleTagTimeout, and pulls edge/app:v1 once with staleAccept
// so that the mirror records the tag and stores its manifest.
func newEdgeSite(t *testing.T, env map[string]string) *edgeSite {
	t.Helper()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, err := random.Image(4<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	manifest, _ := putImage(t, fake, "edge/app", "v1", img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	link, err := fakeecr.NewLink(fake.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(link.Close)
	s := &edgeSite{fake: fake, link: link, dir: t.TempDir(), manifest: manifest, raw: raw, mediaType: string(mt)}
	s.start(t, env)
	resp, body := s.tag(t, http.MethodGet, "v1", staleAccept)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, raw) || resp.Header.Get("Warning") != "" {
		t.Fatalf("first pull: status %d, %d bytes, Warning %q: %s", resp.StatusCode, len(body), resp.Header.Get("Warning"), body)
	}
	return s
}

// start runs a mirror on the site's cache directory.
func (s *edgeSite) start(t *testing.T, env map[string]string) {
	t.Helper()
	all := map[string]string{
		"UPSTREAM":             s.link.URL(),
		"AWS_ENDPOINT_URL_ECR": s.link.URL(),
		"UPSTREAM_TAG_TIMEOUT": staleTagTimeout.String(),
	}
	for k, v := range env {
		all[k] = v
	}
	s.m = startMirror(t, s.fake, mirrorOpts{dir: s.dir, env: all})
}

// restartWithTagTimeout restarts the mirror with env and
// UPSTREAM_TAG_TIMEOUT=timeout: a site whose tag is recorded (the first
// pull ran with the long staleTagTimeout) gets a timeout that must pass.
func (s *edgeSite) restartWithTagTimeout(t *testing.T, env map[string]string, timeout time.Duration) {
	t.Helper()
	s.m.Stop()
	all := map[string]string{"UPSTREAM_TAG_TIMEOUT": timeout.String()}
	maps.Copy(all, env)
	s.start(t, all)
	testwait.Until(t, "the restarted mirror's ECR token", func() bool {
		_, body := readyz(t, s.m)
		return strings.Contains(body, "ECR token: ok")
	})
}

// tag asks the mirror for edge/app:<tag> with accept.
func (s *edgeSite) tag(t *testing.T, method, tag, accept string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := get(t, method, s.m.URL+"/v2/edge/app/manifests/"+tag, http.Header{"Accept": {accept}})
	if err != nil {
		t.Fatalf("%s %s: %v", method, tag, err)
	}
	return resp, body
}

// wantStale fails unless resp is the recorded manifest with the Warning.
func (s *edgeSite) wantStale(t *testing.T, method string, resp *http.Response, body []byte) {
	t.Helper()
	h := resp.Header
	if resp.StatusCode != http.StatusOK || h.Get("Warning") != staleWarning || h.Get("Docker-Content-Digest") != s.manifest.String() ||
		h.Get("Content-Type") != s.mediaType || resp.ContentLength != int64(len(s.raw)) {
		t.Fatalf("%s: status %d, headers %v (%s); want the stale answer %s", method, resp.StatusCode, h, body, s.manifest)
	}
	if method == http.MethodGet && !bytes.Equal(body, s.raw) {
		t.Fatalf("GET: %d bytes that are not the manifest", len(body))
	}
}

// wantError fails unless resp is an OCI error with status and code, and
// no Warning.
func wantError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status || resp.Header.Get("Warning") != "" || resp.Request.Method == http.MethodGet && !strings.Contains(string(body), `"`+code+`"`) {
		t.Fatalf("%s: status %d, Warning %q, body %s; want %d %s", what, resp.StatusCode, resp.Header.Get("Warning"), body, status, code)
	}
}

// outage is a way for ECR to become unable to answer. Only a black hole
// makes the mirror wait for UPSTREAM_TAG_TIMEOUT.
type outage struct {
	name string
	// start begins the outage.
	start func(s *edgeSite)
	// status and code are what a client gets without STALE_IF_ERROR.
	status int
	code   string
}

var outages = []outage{
	{name: "reset", start: func(s *edgeSite) { s.fake.SetDown(true) }, status: 502, code: "UNAVAILABLE"},
	{name: "refused", start: func(s *edgeSite) { s.link.Close() }, status: 502, code: "UNAVAILABLE"},
	{name: "503", start: func(s *edgeSite) {
		s.fake.SetFault(s.manifest, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 503})
	}, status: 502, code: "UNAVAILABLE"},
	{name: "429", start: func(s *edgeSite) {
		s.fake.SetFault(s.manifest, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 429})
	}, status: 429, code: "TOOMANYREQUESTS"},
	{name: "black-hole", start: func(s *edgeSite) { s.link.SetBlackHole(true) }, status: 504, code: "UNAVAILABLE"},
}

// For every way ECR can fail to answer, a tag pulled before is served
// from the store, GET and HEAD, with the Warning: at once when ECR fails
// at once (the tag timeout is an hour: waiting for it would hang the
// test), after the tag timeout when the link is black-holed; it is
// logged at warn and counted. Without STALE_IF_ERROR the same outage is
// an error.
func TestStaleTagDuringOutage(t *testing.T) {
	t.Parallel()
	for _, o := range outages {
		t.Run(o.name, func(t *testing.T) {
			t.Parallel()
			stale := map[string]string{"STALE_IF_ERROR": "1h"}
			s := newEdgeSite(t, stale)
			if o.name == "black-hole" {
				s.restartWithTagTimeout(t, stale, blackHoleTagTimeout)
			}
			o.start(s)
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				start := time.Now()
				resp, body := s.tag(t, method, "v1", staleAccept)
				took := time.Since(start)
				s.wantStale(t, method, resp, body)
				if o.name == "black-hole" {
					// A lower bound the timer guarantees, however
					// busy the machine.
					if took < blackHoleTagTimeout {
						t.Errorf("%s with ECR black-holed took %v, less than UPSTREAM_TAG_TIMEOUT (%v)", method, took, blackHoleTagTimeout)
					}
					t.Logf("figure: stale %s with ECR black-holed served in %v (UPSTREAM_TAG_TIMEOUT=%v)", method, took.Round(time.Millisecond), blackHoleTagTimeout)
				}
			}
			logs := s.m.Logs.String()
			var line string
			for l := range strings.SplitSeq(logs, "\n") {
				if strings.Contains(l, "serving a stale tag") {
					line = l
					break
				}
			}
			for _, want := range []string{"level=WARN", "repository=edge/app", "tag=v1", "age=", "reason=", "digest=" + s.manifest.String()} {
				if !strings.Contains(line, want) {
					t.Errorf("stale log line %q lacks %q", line, want)
				}
			}
			if n := scrape(t, s.m.URL+"/metrics")[`ecr_mirror_cache_requests_total{outcome="stale"}`]; n != 2 {
				t.Errorf(`cache_requests_total{outcome="stale"} = %v, want 2`, n)
			}
		})
		t.Run(o.name+" without STALE_IF_ERROR", func(t *testing.T) {
			t.Parallel()
			s := newEdgeSite(t, nil)
			if o.name == "black-hole" {
				s.restartWithTagTimeout(t, nil, blackHoleTagTimeout)
			}
			o.start(s)
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp, body := s.tag(t, method, "v1", staleAccept)
				wantError(t, method, resp, body, o.status, o.code)
			}
		})
	}
}

// What ECR says about the tag is passed on, never masked: a tag deleted
// upstream (404) stays deleted, and a refusal (401, 403) stays refused.
func TestStaleNeverMasksECRAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fault  fakeecr.Fault
		status int
		code   string
	}{
		{name: "404 deleted", fault: fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 404, Code: "MANIFEST_UNKNOWN", Message: "Requested image not found"},
			status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "403", fault: fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 403}, status: 403, code: "DENIED"},
		{name: "401", fault: fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 401, Code: "UNAUTHORIZED"}, status: 403, code: "DENIED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newEdgeSite(t, map[string]string{"STALE_IF_ERROR": "always"})
			s.fake.SetFault(s.manifest, tt.fault)
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp, body := s.tag(t, method, "v1", staleAccept)
				wantError(t, method, resp, body, tt.status, tt.code)
			}
		})
	}
}

// Stale answers are only what was recorded: not a tag never seen, not a
// record older than STALE_IF_ERROR, not one whose manifest left the store,
// not one made for another Accept.
func TestStaleOnlyWhatWasRecorded(t *testing.T) {
	t.Parallel()
	t.Run("tag never seen", func(t *testing.T) {
		t.Parallel()
		s := newEdgeSite(t, map[string]string{"STALE_IF_ERROR": "always"})
		s.fake.PutManifest("edge/app", "v2", s.mediaType, s.raw)
		s.fake.SetDown(true)
		resp, body := s.tag(t, http.MethodGet, "v2", staleAccept)
		wantError(t, "GET v2", resp, body, 502, "UNAVAILABLE")
		if !strings.Contains(string(body), "unreachable") {
			t.Errorf("the error does not say ECR is unreachable: %s", body)
		}
		resp, body = s.tag(t, http.MethodHead, "v2", staleAccept)
		wantError(t, "HEAD v2", resp, body, 502, "UNAVAILABLE")
	})
	t.Run("record too old", func(t *testing.T) {
		t.Parallel()
		// Only the lower bound of the record's age is known (the sleep):
		// whether a young record is served is asked above, with a limit
		// no busy machine can outlast.
		s := newEdgeSite(t, map[string]string{"STALE_IF_ERROR": "200ms"})
		s.fake.SetDown(true)
		time.Sleep(300 * time.Millisecond)
		resp, body := s.tag(t, http.MethodGet, "v1", staleAccept)
		wantError(t, "GET once older than STALE_IF_ERROR", resp, body, 502, "UNAVAILABLE")
	})
	t.Run("manifest evicted", func(t *testing.T) {
		t.Parallel()
		s := newEdgeSite(t, map[string]string{"STALE_IF_ERROR": "always"})
		if err := os.Remove(s.m.blobPath(s.manifest)); err != nil {
			t.Fatal(err)
		}
		s.fake.SetDown(true)
		resp, body := s.tag(t, http.MethodGet, "v1", staleAccept)
		wantError(t, "GET", resp, body, 502, "UNAVAILABLE")
	})
	t.Run("another Accept", func(t *testing.T) {
		t.Parallel()
		s := newEdgeSite(t, map[string]string{"STALE_IF_ERROR": "always"})
		s.fake.SetDown(true)
		for _, accept := range []string{
			"application/vnd.oci.image.index.v1+json",
			"application/vnd.oci.image.manifest.v1+json",
			"",
		} {
			resp, body := s.tag(t, http.MethodGet, "v1", accept)
			wantError(t, fmt.Sprintf("GET with Accept %q", accept), resp, body, 502, "UNAVAILABLE")
		}
		// The same types in another order, with parameters: the same Accept.
		resp, body := s.tag(t, http.MethodGet, "v1",
			"application/vnd.docker.distribution.manifest.v2+json;q=0.9,application/vnd.oci.image.manifest.v1+json")
		s.wantStale(t, "GET with an equivalent Accept", resp, body)
	})
}

// The record survives a restart of the mirror: with ECR down from the
// start, the tag is still served.
func TestStaleTagAfterRestart(t *testing.T) {
	t.Parallel()
	s := newEdgeSite(t, map[string]string{"STALE_IF_ERROR": "72h"})
	s.m.Stop()
	// The token API is down too: the restarted mirror never gets a token.
	s.fake.SetDown(true)
	s.start(t, map[string]string{"STALE_IF_ERROR": "72h"})
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := s.tag(t, method, "v1", staleAccept)
		s.wantStale(t, method, resp, body)
	}
	// The restarted mirror serves the image's content too.
	resp, body := s.tag(t, http.MethodGet, s.manifest.String(), staleAccept)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.raw) || resp.Header.Get("Warning") != "" {
		t.Fatalf("GET by digest after restart: status %d, Warning %q", resp.StatusCode, resp.Header.Get("Warning"))
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// askTag sends a manifest request by tag to the mirror and checks that
// it names img's manifest (and, for a GET, is its bytes).
func askTag(m *mirror, method, repo, tag string, img rawImage) error {
	_, err := askTagCtx(context.Background(), m, method, repo, tag, img)
	return err
}

// askTagCtx is askTag on ctx; it returns the response's headers too.
func askTagCtx(ctx context.Context, m *mirror, method, repo, tag string, img rawImage) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, m.URL+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", ociManifestType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s %s:%s: %w", method, repo, tag, err)
	case resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != img.Dgst.String():
		return nil, fmt.Errorf("%s %s:%s: status %d, digest %q (%s); want 200, %s", method, repo, tag, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), body, img.Dgst)
	case method == http.MethodGet && !bytes.Equal(body, img.Manifest):
		return nil, fmt.Errorf("GET %s:%s: %d bytes that are not the manifest", repo, tag, len(body))
	}
	return resp.Header, nil
}

// A farm pulling one tag at once costs ECR one lookup: while the fake
// holds the answer to the first HEAD, every other client, HEAD or GET,
// joins it; all get the manifest, and the metrics and the request log
// say they joined.
func TestFarmPullingOneTagAsksECROnce(t *testing.T) {
	t.Parallel()
	const n = 16
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(70, nil)
	putRawImage(fake, "team/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{})
	hold := make(chan struct{})
	fake.SetFault(img.Dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Hold: hold})
	errs := make(chan error, n)
	for i := range n {
		method := http.MethodGet
		if i%4 == 3 {
			method = http.MethodHead
		}
		go func() { errs <- askTag(m, method, "team/app", "v1", img) }()
	}
	testwait.Until(t, "every client to join the first lookup", func() bool {
		return scrape(t, m.URL+"/metrics")["ecr_mirror_tag_lookups_joined_total"] == n-1
	})
	close(hold)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if c := fake.Counters(); c.ManifestHead != 1 || c.ManifestGetByTag != 1 || c.ManifestGetByDigest != 0 {
		t.Errorf("ECR saw %d HEADs, %d GETs by tag, %d by digest; want 1, 1, 0", c.ManifestHead, c.ManifestGetByTag, c.ManifestGetByDigest)
	}
	if got := strings.Count(m.Logs.String(), "cache=joined"); got < n/4-1 {
		t.Errorf("the request log has %d cache=joined answers, want at least the %d HEADs that joined", got, n/4-1)
	}
}

// With TAG_FRESHNESS, a tag pulled a moment ago is answered from its
// record without asking ECR, even after it moved upstream (up to the
// window late); without it, every pull asks and sees the move.
func TestTagFreshnessSparesECR(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		freshness  string
		wantFresh  float64
		wantUpdate bool // the pull after the move sees it
	}{
		{name: "TAG_FRESHNESS=1h", freshness: "1h", wantFresh: 2},
		{name: "TAG_FRESHNESS=0", freshness: "0", wantUpdate: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := fakeecr.Start(t, fakeecr.Options{})
			img, moved := newRawImage(71, nil), newRawImage(72, nil)
			putRawImage(fake, "team/app", "v1", img)
			m := startMirror(t, fake, mirrorOpts{env: map[string]string{"TAG_FRESHNESS": tt.freshness}})
			if err := askTag(m, http.MethodGet, "team/app", "v1", img); err != nil {
				t.Fatal(err)
			}
			before := fake.Counters()
			if err := askTag(m, http.MethodHead, "team/app", "v1", img); err != nil {
				t.Fatal(err)
			}
			putRawImage(fake, "team/app", "v1", moved)
			want := img
			if tt.wantUpdate {
				want = moved
			}
			if err := askTag(m, http.MethodGet, "team/app", "v1", want); err != nil {
				t.Fatal(err)
			}
			after := fake.Counters()
			asked := after.ManifestHead + after.ManifestGetByTag - before.ManifestHead - before.ManifestGetByTag
			if fresh := tt.wantFresh > 0; fresh != (asked == 0) {
				t.Errorf("ECR was asked %d times for the tag after the first pull", asked)
			}
			if got := scrape(t, m.URL+"/metrics")["ecr_mirror_tag_fresh_answers_total"]; got != tt.wantFresh {
				t.Errorf("tag_fresh_answers_total = %v, want %v", got, tt.wantFresh)
			}
			if got := scrape(t, m.URL+"/metrics")[`ecr_mirror_cache_requests_total{outcome="fresh"}`]; got != tt.wantFresh {
				t.Errorf(`cache_requests_total{outcome="fresh"} = %v, want %v`, got, tt.wantFresh)
			}
		})
	}
}

// The client whose pull started a tag lookup hanging up fails none of
// the clients that joined it: the lookup goes on and answers them.
func TestTagLookupOutlivesTheClientThatStartedIt(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(73, nil)
	putRawImage(fake, "team/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{})
	hold := make(chan struct{})
	fake.SetFault(img.Dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Hold: hold})
	ctx, hangUp := context.WithCancel(t.Context())
	defer hangUp()
	first := make(chan error, 1)
	go func() { _, err := askTagCtx(ctx, m, http.MethodGet, "team/app", "v1", img); first <- err }()
	testwait.Until(t, "the lookup to reach ECR", func() bool { return fake.Counters().ManifestHead == 1 })
	errs := make(chan error, 2)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		go func() { errs <- askTag(m, method, "team/app", "v1", img) }()
	}
	testwait.Until(t, "two clients to join", func() bool {
		return scrape(t, m.URL+"/metrics")["ecr_mirror_tag_lookups_joined_total"] == 2
	})
	hangUp()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the client that hung up got %v", err)
	}
	testwait.Until(t, "the mirror to see the hang-up", func() bool { return strings.Contains(m.Logs.String(), "context canceled") })
	close(hold)
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if c := fake.Counters(); c.ManifestHead != 1 {
		t.Errorf("ECR saw %d HEADs, want 1", c.ManifestHead)
	}
}

// When the lookup every client joined gets a 503, each of them is served
// the tag's last answer with STALE_IF_ERROR, as a client alone would be.
func TestStaleTagForEveryJoiner(t *testing.T) {
	t.Parallel()
	const n = 8
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(74, nil)
	putRawImage(fake, "team/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"STALE_IF_ERROR": "1h"}})
	if err := askTag(m, http.MethodGet, "team/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	before := fake.Counters()
	hold := make(chan struct{})
	fake.SetFault(img.Dgst, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusServiceUnavailable, Hold: hold})
	errs := make(chan error, n)
	for i := range n {
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodHead
		}
		go func() {
			hdr, err := askTagCtx(t.Context(), m, method, "team/app", "v1", img)
			if err == nil && hdr.Get("Warning") == "" {
				err = fmt.Errorf("%s: no Warning on the stale answer", method)
			}
			errs <- err
		}()
	}
	testwait.Until(t, "every client to join the first lookup", func() bool {
		return scrape(t, m.URL+"/metrics")["ecr_mirror_tag_lookups_joined_total"] == n-1
	})
	close(hold)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := scrape(t, m.URL+"/metrics")["ecr_mirror_stale_answers_total"]; got != n {
		t.Errorf("stale_answers_total = %v, want %d", got, n)
	}
	if c := fake.Counters(); c.ManifestHead-before.ManifestHead != 1 || c.ManifestGetByTag != before.ManifestGetByTag {
		t.Errorf("ECR saw %d HEADs and %d GETs by tag during the outage, want 1 and 0",
			c.ManifestHead-before.ManifestHead, c.ManifestGetByTag-before.ManifestGetByTag)
	}
}

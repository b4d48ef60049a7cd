package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Shutting down in the middle of a download (SIGTERM cancels run's
// context) leaves a consistent cache: nothing half-written indexed or
// left in tmp/, and after a restart the same pull succeeds.
func TestShutdownMidDownload(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(40, 2<<20)
	dgst := fake.PutBlob("team/app", data)
	// The body stops after 1 MiB for good (the stall clock never moves):
	// a shutdown that waited for the download would never end.
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 20, Times: 1})
	dir := t.TempDir()
	m := startMirror(t, fake, mirrorOpts{dir: dir, env: map[string]string{"SHUTDOWN_GRACE": "300ms"}, stallClock: clockwork.NewFakeClock()})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", m.URL+"/v2/team/app/blobs/"+dgst.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	m.Stop() // returns once the store is closed
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("the cut transfer ended cleanly")
	}
	resp.Body.Close()
	if m.stored(dgst) || len(m.tempFiles(t)) != 0 {
		t.Fatalf("after shutdown: stored %v, temp files %v", m.stored(dgst), m.tempFiles(t))
	}

	m2 := startMirror(t, fake, mirrorOpts{dir: dir})
	if err := fetchBlob(t, m2, "team/app", dgst); err != nil {
		t.Fatalf("pull after restart: %v", err)
	}
}

// Past MAX_DOWNLOADS, a miss is told to come back: 429 TOOMANYREQUESTS
// with Retry-After. Joining a download under way is not refused.
func TestMaxDownloads(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	slow := fake.PutBlob("team/app", testkit.RandomBytes(41, 1<<20))
	other := fake.PutBlob("team/app", testkit.RandomBytes(42, 1000))
	// Half the body, then nothing until the test is done with it.
	hold := make(chan struct{})
	fake.SetFault(slow, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 512 << 10, Hold: hold, Times: 1})
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"MAX_DOWNLOADS": "1"}})

	done := make(chan error, 1)
	go func() { done <- fetchBlob(t, m, "team/app", slow) }()
	testwait.Until(t, "the slow download to start", func() bool { return len(m.tempFiles(t)) == 1 })
	resp, body, err := get(t, "GET", m.URL+"/v2/team/app/blobs/"+other.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	code, msg, _ := registry.ParseErrorBody(body)
	if resp.StatusCode != 429 || code != registry.CodeTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(msg, "limit of 1") {
		t.Fatalf("got %d %s %q (Retry-After %q), want 429 TOOMANYREQUESTS", resp.StatusCode, code, msg, resp.Header.Get("Retry-After"))
	}
	joined := startFetches(t, m, "team/app", slow, 1)
	close(hold)
	if err := joined()[0]; err != nil {
		t.Fatalf("joining the running download: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The slot frees once the slow download is stored.
	testwait.Until(t, "the slot to free", func() bool { return fetchBlob(t, m, "team/app", other) == nil })
}

// Oversized request headers are refused before they reach the mirror.
func TestOversizedHeaderRefused(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{})
	resp, _, err := get(t, "GET", m.URL+"/v2/", http.Header{"X-Junk": {strings.Repeat("x", 200<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

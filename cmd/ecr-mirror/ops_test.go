package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// scrape reads the mirror's metrics in Prometheus text format.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metric line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// Every counter moves by exactly what the requests made it count.
func TestMetricsCountWhatHappened(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	const size = 300_000
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(30, size))
	m := startMirror(t, fake, mirrorOpts{})
	before := scrape(t, m.URL+"/metrics")
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	// A file lands on disk a moment before its index record; the second
	// fetch is a hit only once the record is there.
	testwait.Until(t, "blob indexed", func() bool {
		return m.stored(dgst) && scrape(t, m.URL+"/metrics")[`ecr_mirror_cache_entries`]-before[`ecr_mirror_cache_entries`] == 1
	})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	if resp, _, _ := get(t, "GET", m.URL+"/v2/Bad/blobs/x", nil); resp.StatusCode != 400 {
		t.Fatalf("bad name: %d", resp.StatusCode)
	}
	want := map[string]float64{
		`ecr_mirror_cache_requests_total{outcome="miss"}`:                                                        1,
		`ecr_mirror_cache_requests_total{outcome="hit"}`:                                                         1,
		`ecr_mirror_served_bytes_total{source="upstream"}`:                                                       size,
		`ecr_mirror_served_bytes_total{source="cache"}`:                                                          size,
		`ecr_mirror_downloads_total`:                                                                             1,
		`ecr_mirror_upstream_bytes_total`:                                                                        size,
		`ecr_mirror_http_requests_total{code="200",method="GET",route="blob"}`:                                   2,
		`ecr_mirror_http_requests_total{code="400",method="GET",route="other"}`:                                  1,
		`ecr_mirror_upstream_requests_total{code="200",kind="blob",method="GET",upstream="` + fake.Host() + `"}`: 1,
		`ecr_mirror_cache_stored_bytes`:                                                                          size,
		`ecr_mirror_cache_entries`:                                                                               1,
		`ecr_mirror_digest_mismatches_total`:                                                                     0,
	}
	// A request is counted when its handler returns, which may be just
	// after the client has read the last byte: wait until the counters
	// have moved as far as they should (a wrong count is reported after
	// the wait).
	var after map[string]float64
	for deadline := time.Now().Add(testwait.HangGuard); ; time.Sleep(10 * time.Millisecond) {
		after = scrape(t, m.URL+"/metrics")
		moved := true
		for k, d := range want {
			moved = moved && after[k]-before[k] == d
		}
		if moved || time.Now().After(deadline) {
			break
		}
	}
	for k, d := range want {
		if got := after[k] - before[k]; got != d {
			t.Errorf("%s moved by %v, want %v", k, got, d)
		}
	}
	if after[`ecr_mirror_cache_max_bytes`] != 1<<30 || after[`ecr_mirror_token_expiry_timestamp_seconds`] == 0 {
		t.Errorf("cache_max_bytes %v, token expiry %v", after[`ecr_mirror_cache_max_bytes`], after[`ecr_mirror_token_expiry_timestamp_seconds`])
	}

	// A corrupted download counts a mismatch and a failure.
	bad := fake.PutBlob("team/app", testkit.RandomBytes(31, size))
	fake.SetFault(bad, fakeecr.Fault{Mode: fakeecr.FaultCorrupt, Times: 1})
	if fetchBlob(t, m, "team/app", bad) == nil {
		t.Fatal("corrupt blob served")
	}
	testwait.Until(t, "the failure to be counted", func() bool {
		return scrape(t, m.URL+"/metrics")[`ecr_mirror_download_failures_total`]-after[`ecr_mirror_download_failures_total`] == 1
	})
	if d := scrape(t, m.URL+"/metrics")[`ecr_mirror_digest_mismatches_total`] - after[`ecr_mirror_digest_mismatches_total`]; d != 1 {
		t.Errorf("digest mismatches moved by %v, want 1", d)
	}
}

// /metrics on a listener of its own when METRICS_ADDR says so.
func TestMetricsOnOwnAddress(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"METRICS_ADDR": "127.0.0.1:0"}})
	if resp, _, _ := get(t, "GET", m.URL+"/metrics", nil); resp.StatusCode != 404 {
		t.Fatalf("/metrics on LISTEN_ADDR: %d, want 404 when METRICS_ADDR is set", resp.StatusCode)
	}
}

// /healthz says alive; /readyz flips with what the mirror needs.
func TestProbes(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	fake.SetTokenFault(fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: 400})
	m := startMirror(t, fake, mirrorOpts{})
	probe := func(path string) (int, string) {
		resp, body, err := get(t, "GET", m.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, body := probe("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	code, body := probe("/readyz")
	if code != 503 || !strings.Contains(body, "ECR token: NOT READY") || !strings.Contains(body, "cache directory writable: ok") {
		t.Fatalf("/readyz without a token: %d %q", code, body)
	}
	fake.ClearFaults()
	testwait.Until(t, "ready once a token is fetched", func() bool { code, _ := probe("/readyz"); return code == 200 })

	tmp := filepath.Join(m.Dir, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	code, body = probe("/readyz")
	if code != 503 || !strings.Contains(body, "cache directory writable: NOT READY") {
		t.Fatalf("/readyz with the cache directory gone: %d %q", code, body)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if code, body := probe("/readyz"); code != 200 {
		t.Fatalf("/readyz after the directory came back: %d %q", code, body)
	}
}

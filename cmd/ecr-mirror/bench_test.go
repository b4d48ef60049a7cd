package main

import (
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// The benchmarks measure the mirror against a baseline in the same run
// and report both throughputs and their ratio: the machines they run on
// are shared and noisy, so only ratios mean anything.
//
//	go test -run '^$' -bench . -benchtime 5x ./cmd/ecr-mirror/

// benchClient is a keep-alive client that takes bytes as they come.
func benchClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	return &http.Client{Transport: tr}
}

// timedGet GETs url and discards the body, or hashes it when verify is
// set (as pull clients do), returning how long it took.
func timedGet(b *testing.B, c *http.Client, url string, want int64, verify bool) time.Duration {
	b.Helper()
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	var sink io.Writer = io.Discard
	if verify {
		sink = sha256.New()
	}
	n, err := io.Copy(sink, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || n != want {
		b.Fatalf("GET %s: status %d, %d of %d bytes, %v", url, resp.StatusCode, n, want, err)
	}
	return time.Since(start)
}

// report adds MB/s of the mirror and of the baseline, and their ratio.
func report(b *testing.B, size int64, mirror, base time.Duration, suffix string) {
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(mirror), "mirror-MB/s"+suffix)
	b.ReportMetric(mbps(base), "baseline-MB/s"+suffix)
	b.ReportMetric(base.Seconds()/mirror.Seconds(), "ratio"+suffix)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWarmHit serves a cached 256 MiB blob, against Go's
// http.ServeContent on the same file.
func BenchmarkWarmHit(b *testing.B) {
	const size = 256 << 20
	fake := fakeecr.Start(b, fakeecr.Options{})
	dgst := fake.PutBlob("bench/hit", testkit.RandomBytes(20, size))
	m := startMirror(b, fake, mirrorOpts{})
	if err := fetchBlob(b, m, "bench/hit", dgst); err != nil {
		b.Fatal(err)
	}
	testwait.Until(b, "blob stored", func() bool { return m.stored(dgst) })
	path := m.blobPath(dgst)
	base := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	}))
	defer base.Close()
	c := benchClient()
	mirrorURL := m.URL + "/v2/bench/hit/blobs/" + dgst.String()
	timedGet(b, c, mirrorURL, size, false) // warm the page cache and connections
	timedGet(b, c, base.URL, size, false)
	b.SetBytes(size)
	b.ResetTimer()
	var tm, tb time.Duration
	for i := range b.N {
		// Alternate which goes first, so neither always meets a cold
		// cache or a busy neighbour.
		if i%2 == 0 {
			tm += timedGet(b, c, mirrorURL, size, false)
			tb += timedGet(b, c, base.URL, size, false)
		} else {
			tb += timedGet(b, c, base.URL, size, false)
			tm += timedGet(b, c, mirrorURL, size, false)
		}
	}
	report(b, size, tm, tb, "")
}

// BenchmarkColdMiss fetches an uncached 256 MiB blob through the mirror
// (which downloads, hashes, stores and streams it), against fetching it
// straight from the fake upstream (registry 307 to S3) with the same
// credentials: once with a client that discards the bytes, once with one
// that verifies their digest as pull clients do ("-verified").
//
// The fake serves from memory over loopback, faster than SHA-256 runs on
// one core here; the mirror must hash every byte, so against the
// discarding client the ratio is bounded by sha256-MB/s / baseline-MB/s,
// which is reported too.
func BenchmarkColdMiss(b *testing.B) {
	const size = 256 << 20
	fake := fakeecr.Start(b, fakeecr.Options{})
	data := testkit.RandomBytes(21, size)
	dgst := fake.PutBlob("bench/miss", data)

	tokens := auth.NewSource(func(context.Context) (auth.Token, error) {
		tok, exp := fake.IssueToken()
		return auth.NewToken(tok, exp), nil
	}, auth.Options{})
	direct := benchClient()
	direct.Transport = tokens.Transport(fake.Host(), direct.Transport)
	directURL := fake.URL() + "/v2/bench/miss/blobs/" + dgst.String()
	c := benchClient()
	timedGet(b, direct, directURL, size, false)

	b.SetBytes(size)
	b.ResetTimer()
	var tm, tb, tmv, tbv, th time.Duration
	for i := range 2 * b.N {
		verify := i%2 == 1
		b.StopTimer()
		m := startMirror(b, fake, mirrorOpts{})
		b.StartTimer()
		dm := timedGet(b, c, m.URL+"/v2/bench/miss/blobs/"+dgst.String(), size, verify)
		db := timedGet(b, direct, directURL, size, verify)
		if verify {
			tmv, tbv = tmv+dm, tbv+db
		} else {
			tm, tb = tm+dm, tb+db
		}
		b.StopTimer()
		m.Stop()
		os.RemoveAll(m.Dir)
		b.StartTimer()
	}
	b.StopTimer()
	for range b.N {
		start := time.Now()
		h := sha256.New()
		h.Write(data)
		th += time.Since(start)
	}
	report(b, size, tm, tb, "")
	report(b, size, tmv, tbv, "-verified")
	b.ReportMetric(float64(size)*float64(b.N)/th.Seconds()/1e6, "sha256-MB/s")
}

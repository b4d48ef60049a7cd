package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
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

// Tag benchmark parameters: a farm of tagClients pulling one tag for
// tagBenchFor, behind a WAN that adds tagBenchLatency to every manifest
// request to the fake ECR.
const (
	tagClients      = 64
	tagBenchFor     = 10 * time.Second
	tagBenchLatency = 20 * time.Millisecond
)

// BenchmarkTagLookups has tagClients clients GET one manifest by tag
// through the mirror for tagBenchFor each round, against the fake ECR
// answering every manifest request tagBenchLatency late (fakeecr
// FaultDelay), with the manifest already cached (by digest: no tag
// record yet, so each run starts with a lookup): first with tag lookups
// not merged (the baseline, as before), then merged with TAG_FRESHNESS=0,
// then with TAG_FRESHNESS=30s. It reports client requests per second
// and upstream tag requests (HEADs and GETs by tag) per client request
// for each, and for TAG_FRESHNESS=30s those per 30 s window too:
//
//	go test -run '^$' -bench TagLookups -benchtime 1x ./cmd/ecr-mirror/
func BenchmarkTagLookups(b *testing.B) {
	runs := []struct {
		name string
		opts mirrorOpts
	}{
		{"baseline", mirrorOpts{separateTagLookups: true}},
		{"merged", mirrorOpts{}},
		{"fresh30s", mirrorOpts{env: map[string]string{"TAG_FRESHNESS": "30s"}}},
	}
	fake := fakeecr.Start(b, fakeecr.Options{})
	img := newRawImage(80, nil)
	putRawImage(fake, "bench/tag", "v1", img)
	fake.SetFault(img.Dgst, fakeecr.Fault{Mode: fakeecr.FaultDelay, Delay: tagBenchLatency})
	reqs, upstream := make([]int64, len(runs)), make([]int64, len(runs))
	took := make([]time.Duration, len(runs))
	b.ResetTimer()
	for range b.N {
		for i, r := range runs {
			b.StopTimer()
			r.opts.env = maps.Clone(r.opts.env)
			if r.opts.env == nil {
				r.opts.env = map[string]string{}
			}
			r.opts.env["LOG_LEVEL"] = "warn"
			m := startMirror(b, fake, r.opts)
			// The manifest is cached by digest: the tag has no record yet.
			if err := askTag(m, http.MethodGet, "bench/tag", img.Dgst.String(), img); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			before := fake.Counters()
			n, d := pullTagFor(b, m, img, tagBenchFor)
			after := fake.Counters()
			reqs[i], took[i] = reqs[i]+n, took[i]+d
			upstream[i] += after.ManifestHead + after.ManifestGetByTag - before.ManifestHead - before.ManifestGetByTag
			b.StopTimer()
			m.Stop()
			os.RemoveAll(m.Dir)
			b.StartTimer()
		}
	}
	for i, r := range runs {
		b.ReportMetric(float64(reqs[i])/took[i].Seconds(), r.name+"-req/s")
		b.ReportMetric(float64(upstream[i])/float64(max(reqs[i], 1)), r.name+"-upstream/req")
	}
	windows := math.Ceil(took[2].Seconds() / float64(b.N) / 30)
	b.ReportMetric(float64(upstream[2])/(windows*float64(b.N)), "fresh30s-upstream/window")
	b.ReportMetric(0, "ns/op")
}

// pullTagFor has tagClients clients GET img's tag in a loop for d and
// returns how many requests were answered, and how long they ran.
func pullTagFor(b *testing.B, m *mirror, img rawImage, d time.Duration) (int64, time.Duration) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = tagClients
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	url := m.URL + "/v2/bench/tag/manifests/v1"
	var answered atomic.Int64
	var failed atomic.Value
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range tagClients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Accept", ociManifestType)
				resp, err := c.Do(req)
				if err != nil {
					failed.Store(err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Manifest) {
					failed.Store(fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, len(body), err))
					return
				}
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("a client failed: %v", err)
	}
	return answered.Load(), time.Since(start)
}

package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/s3test"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// sharedImage puts a cold three-layer image in a fake ECR and returns its
// manifest digest and the digests of its config and layers.
func sharedImage(t *testing.T) (*fakeecr.Server, digest.Digest, []digest.Digest) {
	t.Helper()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, err := random.Image(96<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	manifest, blobs := putImage(t, fake, "team/app", "v1", img)
	return fake, manifest, blobs
}

// layerInSharedTier puts a cold image in a fake ECR and has a first
// replica pull one of its layers, which it writes to a new shared tier;
// it returns the fake, the tier and the layer's digest, for a second
// replica to read.
func layerInSharedTier(t *testing.T) (*fakeecr.Server, *sharedTier, digest.Digest) {
	t.Helper()
	fake, _, blobs := sharedImage(t)
	tier := startSharedTier(t)
	a := startMirror(t, fake, tier.opts())
	layer := blobs[0]
	if err := fetchBlob(t, a, "team/app", layer); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the first replica to write the layer to the shared tier", func() bool {
		return slices.Contains(tier.keys(t), tier.key(layer))
	})
	return fake, tier, layer
}

// metric reads one series of m's metrics.
func metric(t *testing.T, m *mirror, series string) float64 {
	t.Helper()
	return scrape(t, m.URL+"/metrics")[series]
}

const sharedPutOK = `ecr_mirror_shared_store_requests_total{op="put",outcome="ok"}`

// A replica with an empty disk pulls what another replica downloaded
// from the shared tier: ECR sees one download per blob for the two, the
// tier one write per digest, and the second replica keeps and verifies
// every digest locally.
func TestReplicasDownloadEachBlobFromECROnceThroughTheSharedTier(t *testing.T) {
	t.Parallel()
	fake, manifest, blobs := sharedImage(t)
	tier := startSharedTier(t)
	a := startMirror(t, fake, tier.opts())
	if _, err := pullImage(t, a, "team/app:v1"); err != nil {
		t.Fatalf("cold pull through replica A: %v", err)
	}
	if got := fake.Counters().BlobGet; got != int64(len(blobs)) {
		t.Fatalf("ECR served %d blob GETs for %d blobs", got, len(blobs))
	}
	want := []string{tier.key(manifest)}
	for _, b := range blobs {
		want = append(want, tier.key(b))
	}
	slices.Sort(want)
	// An object is listed as soon as the bucket has it, a moment before
	// A counts its write: wait for both.
	testwait.Until(t, "A to write the image to the shared tier", func() bool {
		return slices.Equal(tier.keys(t), want) && metric(t, a, sharedPutOK) >= float64(len(want))
	})
	if n := metric(t, a, sharedPutOK); n != float64(len(want)) {
		t.Errorf("A wrote %v objects, want one per digest: %d", n, len(want))
	}

	before := fake.Counters()
	b := startMirror(t, fake, tier.opts())
	if _, err := pullImage(t, b, "team/app:v1"); err != nil {
		t.Fatalf("pull through replica B: %v", err)
	}
	after := fake.Counters()
	if after.BlobGet != before.BlobGet || after.ManifestGetByDigest != before.ManifestGetByDigest {
		t.Errorf("B's pull sent ECR %d blob GETs and %d manifest GETs by digest, want 0: the shared tier has them",
			after.BlobGet-before.BlobGet, after.ManifestGetByDigest-before.ManifestGetByDigest)
	}
	for _, d := range blobs {
		testwait.Until(t, "B to commit "+d.String()+" to its local tier", func() bool { return b.stored(d) })
		if err := fetchBlob(t, b, "team/app", d); err != nil {
			t.Errorf("B serving %s again: %v", d, err)
		}
	}
	if n := metric(t, b, `ecr_mirror_served_bytes_total{source="shared"}`); n <= 0 {
		t.Errorf("B counted %v bytes served from the shared tier", n)
	}
	if n := metric(t, b, sharedPutOK); n != 0 {
		t.Errorf("B wrote %v objects back, want 0: they came from the tier", n)
	}

	// By digest, the manifest comes from the tier too, served as the
	// type ECR declares (one HEAD confirms the repository holds it).
	before = fake.Counters()
	c := startMirror(t, fake, tier.opts())
	if _, err := pullImage(t, c, "team/app@"+manifest.String()); err != nil {
		t.Fatalf("pull by digest through replica C: %v", err)
	}
	after = fake.Counters()
	if after.BlobGet != before.BlobGet || after.ManifestGetByDigest != before.ManifestGetByDigest || after.ManifestGetByTag != before.ManifestGetByTag {
		t.Errorf("C's pull by digest sent ECR %d blob GETs and %d manifest GETs, want 0",
			after.BlobGet-before.BlobGet, after.ManifestGetByDigest-before.ManifestGetByDigest+after.ManifestGetByTag-before.ManifestGetByTag)
	}
}

// A shared-tier object whose bytes do not match its digest is never
// served whole: it is detected, deleted, and the digest is downloaded
// from ECR again at once, verified, and written back; the client's retry
// gets it.
func TestCorruptSharedObjectIsDroppedAndRefetchedFromECR(t *testing.T) {
	t.Parallel()
	fake, tier, layer := layerInSharedTier(t)
	key := tier.key(layer)
	good := readObject(t, tier, key)
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0xff
	putObject(t, tier, key, bad)

	b := startMirror(t, fake, tier.opts())
	before := fake.Counters().BlobGet
	if err := fetchBlob(t, b, "team/app", layer); err == nil {
		t.Fatal("B served the corrupt object whole and verified: the test did not corrupt it")
	}
	testwait.Until(t, "B to delete the corrupt object", func() bool {
		return !slices.Contains(tier.keys(t), key) || bytes.Equal(readObject(t, tier, key), good)
	})
	// The download starts again from ECR at once: B keeps the right bytes.
	testwait.Until(t, "B to download the layer again", func() bool { return b.stored(layer) })
	if kept, err := os.ReadFile(b.blobPath(layer)); err != nil || !bytes.Equal(kept, good) {
		t.Fatalf("B keeps %d bytes (%v), not the layer's", len(kept), err)
	}
	if n := metric(t, b, "ecr_mirror_shared_store_corrupt_total"); n != 1 {
		t.Errorf("counted %v corrupt objects, want 1", n)
	}
	if err := fetchBlob(t, b, "team/app", layer); err != nil {
		t.Fatalf("B after dropping the corrupt object: %v", err)
	}
	if got := fake.Counters().BlobGet - before; got != 1 {
		t.Errorf("ECR served %d GETs of the layer, want 1", got)
	}
	testwait.Until(t, "B to write the verified layer back", func() bool {
		return slices.Contains(tier.keys(t), key) && bytes.Equal(readObject(t, tier, key), good)
	})
}

// With the shared tier down, pulls go on through ECR and nothing fails.
func TestSharedTierDownDegradesToECR(t *testing.T) {
	t.Parallel()
	fake, _, blobs := sharedImage(t)
	tier := startSharedTier(t)
	m := startMirror(t, fake, tier.opts())
	tier.srv.Stop()
	if _, err := pullImage(t, m, "team/app:v1"); err != nil {
		t.Fatalf("pull with the shared tier down: %v", err)
	}
	if got := fake.Counters().BlobGet; got != int64(len(blobs)) {
		t.Errorf("ECR served %d blob GETs for %d blobs", got, len(blobs))
	}
	// The first failed read turns the others away for a while.
	if n := metric(t, m, `ecr_mirror_shared_store_requests_total{op="get",outcome="error"}`); n < 1 || n >= float64(len(blobs)) {
		t.Errorf("counted %v failed shared reads for %d misses, want at least 1 and fewer than the misses", n, len(blobs))
	}
	testwait.Until(t, "the failed shared writes to be counted", func() bool {
		return metric(t, m, `ecr_mirror_shared_store_requests_total{op="head",outcome="error"}`) >= float64(len(blobs)) &&
			metric(t, m, "ecr_mirror_shared_store_write_failures_total") >= float64(len(blobs))
	})
}

// Replicas that download the same digests at once write each to the
// tier once: the conditional create lets one write, the others find it.
func TestConcurrentReplicasWriteEachDigestOnce(t *testing.T) {
	t.Parallel()
	fake, _, blobs := sharedImage(t)
	tier := startSharedTier(t)
	replicas := []*mirror{startMirror(t, fake, tier.opts()), startMirror(t, fake, tier.opts()), startMirror(t, fake, tier.opts())}
	var wg sync.WaitGroup
	for _, m := range replicas {
		wg.Go(func() {
			if _, err := pullImage(t, m, "team/app:v1"); err != nil {
				t.Errorf("pull: %v", err)
			}
		})
	}
	wg.Wait()
	want := len(blobs) + 1
	testwait.Until(t, "every digest in the tier", func() bool { return len(tier.keys(t)) == want })
	// Each object is written by one conditional create; a replica counts
	// its write a moment after the bucket lists the object.
	var written float64
	testwait.Until(t, "the replicas to count their writes", func() bool {
		written = 0
		for _, m := range replicas {
			written += metric(t, m, sharedPutOK)
		}
		return written >= float64(want)
	})
	if written != float64(want) {
		t.Errorf("replicas wrote %v objects for %d digests", written, want)
	}
}

func readObject(t *testing.T, tier *sharedTier, key string) []byte {
	t.Helper()
	out, err := tier.srv.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: &tier.bucket, Key: &key})
	if err != nil {
		return nil
	}
	defer out.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(out.Body); err != nil {
		t.Fatalf("reading s3://%s/%s: %v", tier.bucket, key, err)
	}
	return buf.Bytes()
}

func putObject(t *testing.T, tier *sharedTier, key string, data []byte) {
	t.Helper()
	if _, err := tier.srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &tier.bucket, Key: &key,
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		t.Fatalf("writing s3://%s/%s: %v", tier.bucket, key, err)
	}
}

// The shared tier holds content by digest for every repository, but a
// replica serves it under a repository only once ECR says the repository
// holds it (one HEAD, no body), as for local content.
func TestSharedTierServesARepositoryOnlyWhatECRSaysItHolds(t *testing.T) {
	t.Parallel()
	fake, tier, layer := layerInSharedTier(t)

	b := startMirror(t, fake, tier.opts())
	before := fake.Counters()
	resp, body, err := get(t, "GET", b.URL+"/v2/team/other/blobs/"+layer.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 404 || !bytes.Contains(body, []byte("BLOB_UNKNOWN")) {
		t.Fatalf("a repository ECR does not hold the layer in got %d %.200q, want 404 BLOB_UNKNOWN", resp.StatusCode, body)
	}
	if b.stored(layer) {
		t.Error("B kept the layer for a repository ECR refused")
	}
	if err := fetchBlob(t, b, "team/app", layer); err != nil {
		t.Fatalf("the repository that holds it: %v", err)
	}
	after := fake.Counters()
	if after.BlobGet != before.BlobGet || after.BlobHead-before.BlobHead != 2 {
		t.Errorf("ECR saw %d blob GETs and %d HEADs, want 0 and 2 (one confirmation per repository)",
			after.BlobGet-before.BlobGet, after.BlobHead-before.BlobHead)
	}
}

// Clients asking a replica for the same digest at once share one read of
// the shared tier, as they share one ECR download.
func TestConcurrentClientsShareOneSharedTierRead(t *testing.T) {
	t.Parallel()
	fake, tier, layer := layerInSharedTier(t)

	b := startMirror(t, fake, tier.opts())
	before := fake.Counters().BlobGet
	for i, err := range startFetches(t, b, "team/app", layer, 8)() {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if n := metric(t, b, `ecr_mirror_shared_store_requests_total{op="get",outcome="ok"}`); n != 1 {
		t.Errorf("8 concurrent clients made %v shared-tier reads, want 1", n)
	}
	if got := fake.Counters().BlobGet - before; got != 0 {
		t.Errorf("ECR served %d GETs of the layer, want 0", got)
	}
}

// A shared-tier read cut short goes on from ECR where it stopped (a Range
// GET): the client gets the whole blob, verified.
func TestSharedTierReadCutShortGoesOnFromECR(t *testing.T) {
	t.Parallel()
	fake, tier, layer := layerInSharedTier(t)

	// B reaches the bucket through a proxy that cuts every object body
	// after its first half.
	target, err := url.Parse(tier.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.StatusCode == http.StatusOK && resp.ContentLength > 1 {
			resp.Body = &cutBody{ReadCloser: resp.Body, left: resp.ContentLength / 2}
		}
		return nil
	}
	cutter := httptest.NewServer(rp)
	t.Cleanup(cutter.Close)
	opts := tier.opts()
	cut := tier.srv.AWS()
	cut.BaseEndpoint = aws.String(cutter.URL)
	opts.edit = func(c *settings.Config) { c.SharedStoreAWS = &cut }
	b := startMirror(t, fake, opts)

	before := fake.Counters().BlobGet
	if err := fetchBlob(t, b, "team/app", layer); err != nil {
		t.Fatalf("B with its shared read cut short: %v", err)
	}
	if got := fake.Counters().BlobGet - before; got != 1 {
		t.Errorf("ECR served %d GETs of the layer, want 1 (the rest, by Range)", got)
	}
	testwait.Until(t, "B to commit the layer", func() bool { return b.stored(layer) })
	if !strings.Contains(b.Logs.String(), "shared store read cut short") {
		t.Error("B's shared read was not cut: the test tested nothing")
	}
}

// cutBody fails a body after left bytes, as a dropped connection would.
type cutBody struct {
	io.ReadCloser
	left int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n, err := c.ReadCloser.Read(p[:min(int64(len(p)), c.left)])
	c.left -= int64(n)
	return n, err
}

// A shared tier that accepts connections and never answers holds a miss
// only until UPSTREAM_STALL_TIMEOUT: the download then goes to ECR.
func TestHungSharedTierFallsBackToECRAfterTheStallTimeout(t *testing.T) {
	t.Parallel()
	fake, _, blobs := sharedImage(t)
	hole := blackHole(t)
	clk := clockwork.NewFakeClock()
	opts := mirrorOpts{env: map[string]string{"SHARED_STORE": "s3://tier/mirror", "SHARED_STORE_PATH_STYLE": "true", "UPSTREAM_STALL_TIMEOUT": "30s"},
		stallClock: clk}
	cfgAWS := s3test.AWSConfig(hole)
	opts.edit = func(c *settings.Config) { c.SharedStoreAWS = &cfgAWS }
	m := startMirror(t, fake, opts)
	layer := blobs[0]
	done := make(chan error, 1)
	go func() { done <- fetchBlob(t, m, "team/app", layer) }()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.HangGuard)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("the miss never waited on the shared tier: %v", err)
	}
	if fake.Counters().BlobGet != 0 {
		t.Fatal("ECR was asked before the shared tier gave up")
	}
	clk.Advance(30 * time.Second)
	if err := <-done; err != nil {
		t.Fatalf("pull with the shared tier hung: %v", err)
	}
	if got := fake.Counters().BlobGet; got != 1 {
		t.Errorf("ECR served %d GETs of the layer, want 1", got)
	}
}

// blackHole is the URL of a listener that accepts connections and never
// answers.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// The binary reaches the bucket through the AWS SDK's own settings
// (AWS_ENDPOINT_URL_S3 and the access keys), in a region of its own
// (SHARED_STORE_REGION; AWS_REGION is ECR's): a second process with an
// empty cache pulls a blob the first one downloaded without asking ECR
// for its body, and neither logs the secret key.
func TestProcessesShareTheBucketThroughTheSDKSettings(t *testing.T) {
	t.Parallel()
	fake, _, blobs := sharedImage(t)
	tier := startSharedTier(t)
	bin := mirrorBinary(t)
	env := []string{"SHARED_STORE=s3://" + tier.bucket + "/" + tier.prefix, "SHARED_STORE_PATH_STYLE=true", "SHARED_STORE_REGION=" + s3test.Region, "LOG_LEVEL=debug",
		"AWS_ENDPOINT_URL_S3=" + tier.srv.URL, "AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey}
	layer := blobs[0]
	first := startProcess(t, bin, fake, t.TempDir(), env...)
	if err := fetchBlob(t, &mirror{URL: "http://" + first.addr}, "team/app", layer); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the first process to write the layer to the bucket", func() bool {
		if strings.Contains(first.logs.String(), "shared store write failed") {
			t.Fatalf("the first process could not write to the bucket:\n%s", first.logs.String())
		}
		return slices.Contains(tier.keys(t), tier.key(layer))
	})
	second := startProcess(t, bin, fake, t.TempDir(), env...)
	before := fake.Counters().BlobGet
	if err := fetchBlob(t, &mirror{URL: "http://" + second.addr}, "team/app", layer); err != nil {
		t.Fatal(err)
	}
	if got := fake.Counters().BlobGet - before; got != 0 {
		t.Errorf("the second process sent ECR %d GETs of the layer, want 0", got)
	}
	for _, p := range []*process{first, second} {
		if strings.Contains(p.logs.String(), s3test.SecretKey) {
			t.Error("a process logged the S3 secret key")
		}
	}
}

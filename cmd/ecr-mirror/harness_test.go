package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/s3test"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

func TestMain(m *testing.M) {
	// The real AWS SDK runs in these tests: give it fake static keys and
	// keep it away from any profile or instance metadata on this machine.
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIAFAKEFAKEFAKEFAKE",
		"AWS_SECRET_ACCESS_KEY":       "fake-secret-key-never-logged",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_PROFILE":                 "",
		"AWS_SESSION_TOKEN":           "",
		"AWS_ENDPOINT_URL_ECR":        "",
		"AWS_ENDPOINT_URL":            "",
	} {
		os.Setenv(k, v)
	}
	code := m.Run()
	if binary.path != "" {
		os.RemoveAll(filepath.Dir(binary.path))
	}
	os.Exit(code)
}

// clock is a settable clock for the fake ECR, so tests can expire its
// tokens without sleeping.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// mirror is an ecr-mirror server run in-process, exactly as main runs it.
type mirror struct {
	URL  string // http://127.0.0.1:port
	Host string // 127.0.0.1:port
	// Extra are the other registry listeners' addresses (host:port), in
	// run's order: NAMESPACE_LISTENERS, PULL_THROUGHS prefix:port ones,
	// then FORWARD_PROXY_ADDR.
	Extra []string
	Dir   string
	Logs  *testkit.SyncBuffer
	stop  func()
}

type mirrorOpts struct {
	dir     string            // default: a new temp dir
	maxSize string            // CACHE_MAX_SIZE; default 1g
	env     map[string]string // more settings, by variable
	// stallClock, when set, times UPSTREAM_STALL_TIMEOUT: stalls fire
	// only when the test advances it (waitStalled, then Advance).
	stallClock clockwork.Clock
	// separateTagLookups turns off the merging of concurrent tag
	// lookups: the tag benchmark's baseline.
	separateTagLookups bool
	// edit, when set, changes the parsed configuration before the mirror
	// starts (what no setting can say in a test, such as the region of
	// an upstream on a loopback address).
	edit func(*settings.Config)
}

// mirrorConfig is the configuration startMirror runs a mirror with: the
// fake as its upstream and token API, o's settings over it.
func mirrorConfig(t testing.TB, fake *fakeecr.Server, o mirrorOpts) *settings.Config {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.maxSize == "" {
		o.maxSize = "1g"
	}
	env := map[string]string{
		"UPSTREAM":             fake.URL(),
		"AWS_REGION":           "eu-west-1",
		"AWS_ENDPOINT_URL_ECR": fake.TokenURL(),
		"LISTEN_ADDR":          "127.0.0.1:0",
		"CACHE_DIR":            o.dir,
		"CACHE_MAX_SIZE":       o.maxSize,
		"LOG_LEVEL":            "debug",
	}
	for k, v := range o.env {
		env[k] = v
	}
	cfg, err := settings.Parse(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StallClock = o.stallClock
	cfg.SeparateTagLookups = o.separateTagLookups
	if o.edit != nil {
		o.edit(cfg)
	}
	return cfg
}

// startMirror runs the server against fake through the real config
// parser. Stop it with m.Stop (also done at cleanup).
func startMirror(t testing.TB, fake *fakeecr.Server, o mirrorOpts) *mirror {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	cfg := mirrorConfig(t, fake, o)
	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan []net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, log, func(a []net.Addr) { addrc <- a }) }()
	var addrs []net.Addr
	select {
	case addrs = <-addrc:
	case err := <-done:
		cancel()
		t.Fatalf("mirror did not start: %v\n%s", err, logs)
	}
	var once sync.Once
	m := &mirror{URL: "http://" + addrs[0].String(), Host: addrs[0].String(), Dir: o.dir, Logs: logs}
	for _, a := range addrs[1:] {
		m.Extra = append(m.Extra, a.String())
	}
	m.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("mirror stopped with error: %v", err)
			}
		})
	}
	t.Cleanup(m.stop)
	return m
}

// Stop shuts the mirror down and waits until its store is closed.
func (m *mirror) Stop() { m.stop() }

// blobPath is where the store keeps dgst.
func (m *mirror) blobPath(dgst digest.Digest) string {
	return filepath.Join(m.Dir, "blobs", "sha256", dgst.Encoded()[:2], dgst.Encoded())
}

// stored reports whether the store has a committed file for dgst.
func (m *mirror) stored(dgst digest.Digest) bool {
	_, err := os.Stat(m.blobPath(dgst))
	return err == nil
}

// storedBytes sums the sizes of committed files.
func (m *mirror) storedBytes(t testing.TB) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(filepath.Join(m.Dir, "blobs"), func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			total += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// tempFiles lists what is left in the store's temp directory.
func (m *mirror) tempFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(m.Dir, "tmp"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// get fetches a URL and returns the response with its whole body.
func get(t testing.TB, method, u string, hdr http.Header) (*http.Response, []byte, error) {
	t.Helper()
	return send(t, method, u, hdr, nil)
}

// fetchBlob GETs a blob through the mirror and checks status and digest;
// it returns the transfer error, if any.
func fetchBlob(t testing.TB, m *mirror, repo string, dgst digest.Digest) error {
	t.Helper()
	resp, err := http.Get(m.URL + "/v2/" + repo + "/blobs/" + dgst.String())
	if err != nil {
		return err
	}
	return readBlob(resp, dgst)
}

// startFetches starts n clients GETting a blob through the mirror and
// returns once every one has its response (status and headers): a client
// following a download has them as soon as the download has bytes for
// it. wait then returns what fetchBlob would have for each.
func startFetches(t testing.TB, m *mirror, repo string, dgst digest.Digest, n int) (wait func() []error) {
	t.Helper()
	errs := make([]error, n)
	answered := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			resp, err := http.Get(m.URL + "/v2/" + repo + "/blobs/" + dgst.String())
			answered <- struct{}{}
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = readBlob(resp, dgst)
		})
	}
	for range n {
		<-answered
	}
	return func() []error { wg.Wait(); return errs }
}

// readBlob reads a blob response and checks status and digest.
func readBlob(resp *http.Response, dgst digest.Digest) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dgst.String() {
		return fmt.Errorf("complete body of %d bytes has digest %s, want %s", n, got, dgst)
	}
	return nil
}

// waitStalled waits until the mirror's one download has written exactly
// offset bytes to its temp file and waits on upstream for more: the fake
// sent those and holds the rest back (FaultStall). Only a read that waits
// on upstream runs the stall clock, so once the bytes are on disk the
// next stall timer armed is that read's. Advancing clk by the stall
// timeout then fires it.
func waitStalled(t testing.TB, m *mirror, clk *clockwork.FakeClock, offset int64) {
	t.Helper()
	testwait.Until(t, fmt.Sprintf("the download to reach byte %d", offset), func() bool {
		names := m.tempFiles(t)
		if len(names) != 1 {
			return false
		}
		info, err := os.Stat(filepath.Join(m.Dir, "tmp", names[0]))
		return err == nil && info.Size() == offset
	})
	ctx, cancel := context.WithTimeout(context.Background(), testwait.HangGuard)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("the download never waited on upstream at byte %d: %v", offset, err)
	}
}

// pullImage pulls an image through the mirror with go-containerregistry,
// reading every layer (whose digests ggcr verifies) and the config.
func pullImage(t testing.TB, m *mirror, ref string) (v1.Image, error) {
	t.Helper()
	r, err := name.ParseReference(m.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		return nil, err
	}
	if err := readWhole(img); err != nil {
		return nil, err
	}
	return img, nil
}

// pullOverTLS pulls ref from a TLS mirror at host, trusting roots
// (HTTP/2 allowed), and checks the manifest's digest is want and every
// blob's (readWhole). It returns the transport, for more requests.
func pullOverTLS(t *testing.T, host, ref string, roots *x509.CertPool, want digest.Digest) *http.Transport {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	tr.ForceAttemptHTTP2 = true
	r, err := name.ParseReference(host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithTransport(tr))
	if err != nil {
		t.Fatalf("pull of %s over TLS: %v", ref, err)
	}
	if d, err := img.Digest(); err != nil || d.String() != want.String() {
		t.Fatalf("digest %s (%v), want %s", d, err, want)
	}
	if err := readWhole(img); err != nil {
		t.Fatalf("pull of %s over TLS: %v", ref, err)
	}
	return tr
}

// readWhole reads an image's config and every layer to its end, through
// ggcr, which verifies each digest.
func readWhole(img v1.Image) error {
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
	}
	return nil
}

// putImage stores a ggcr image in the fake under repo:tag and returns the
// digests of its manifest, config and layers.
func putImage(t testing.TB, fake *fakeecr.Server, repo, tag string, img v1.Image) (manifest digest.Digest, blobs []digest.Digest) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, fake.PutBlob(repo, b))
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, fake.PutBlob(repo, cfg))
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return fake.PutManifest(repo, tag, string(mt), raw), blobs
}

// rawImage is a small OCI image built by hand, with its exact bytes.
type rawImage struct {
	Config, Layer, Manifest []byte
	ConfigDgst, LayerDgst   digest.Digest
	Dgst                    digest.Digest // of Manifest
}

// newRawImage builds an image whose bytes depend on seed: one layer, a
// config, and an OCI manifest naming them (plus subject, when not empty).
func newRawImage(seed uint64, subject *rawImage) rawImage {
	img := rawImage{Layer: testkit.RandomBytes(seed, 512)}
	img.Config = []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","author":"seed-%d","rootfs":{"type":"layers","diff_ids":[]}}`, seed))
	img.ConfigDgst, img.LayerDgst = digest.FromBytes(img.Config), digest.FromBytes(img.Layer)
	subj := ""
	if subject != nil {
		subj = fmt.Sprintf(`,"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d}`, subject.Dgst, len(subject.Manifest))
	}
	img.Manifest = []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]%s}`,
		img.ConfigDgst, len(img.Config), img.LayerDgst, len(img.Layer), subj))
	img.Dgst = digest.FromBytes(img.Manifest)
	return img
}

// putRawImage stores img's blobs and manifest in the fake under repo, tagged
// tag unless tag is empty.
func putRawImage(fake *fakeecr.Server, repo, tag string, img rawImage) {
	fake.PutBlob(repo, img.Config)
	fake.PutBlob(repo, img.Layer)
	fake.PutManifest(repo, tag, "application/vnd.oci.image.manifest.v1+json", img.Manifest)
}

// send fetches a URL with a request body (nil: none) and returns the
// response with its whole body.
func send(t testing.TB, method, u string, hdr http.Header, body []byte) (*http.Response, []byte, error) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// pushRawImage pushes img's blobs (POST, then PUT with the digest) and
// its manifest as repo:ref through the mirror with plain requests, and
// returns the answer to the manifest PUT.
func pushRawImage(t testing.TB, m *mirror, repo, ref string, img rawImage) *http.Response {
	t.Helper()
	for _, blob := range [][]byte{img.Config, img.Layer} {
		resp, body, err := send(t, http.MethodPost, m.URL+"/v2/"+repo+"/blobs/uploads/", nil, nil)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("starting an upload: %v %v %s", err, resp, body)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		q := loc.Query()
		q.Set("digest", digest.FromBytes(blob).String())
		loc.RawQuery = q.Encode()
		resp, body, err = send(t, http.MethodPut, m.URL+loc.RequestURI(), http.Header{"Content-Type": {"application/octet-stream"}}, blob)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("finishing an upload: %v %v %s", err, resp, body)
		}
	}
	resp, body, err := send(t, http.MethodPut, m.URL+"/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {"application/vnd.oci.image.manifest.v1+json"}}, img.Manifest)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("pushing the manifest: %v %v %s", err, resp, body)
	}
	return resp
}

// startOCIUpstream starts a fake that serves the registry API without
// credentials: a plain OCI registry, for an oci upstream.
func startOCIUpstream(t testing.TB) *fakeecr.Server {
	t.Helper()
	return fakeecr.Start(t, fakeecr.Options{Anonymous: true})
}

// withUpstreams adds to env (nil: none) the settings of a mirror whose
// default upstream is the fake ECR ecr and whose second is the plain
// registry oci, also served on a listener of its own (m.listener(0)).
func withUpstreams(ecr, oci *fakeecr.Server, env map[string]string) map[string]string {
	out := map[string]string{
		"UPSTREAM":            "ecr:" + ecr.URL() + ",oci:" + oci.URL(),
		"NAMESPACE_LISTENERS": "127.0.0.1:0=" + oci.Host(),
	}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// listener is m as its i-th NAMESPACE_LISTENERS listener serves it.
func (m *mirror) listener(i int) *mirror {
	on := *m
	on.URL, on.Host = "http://"+m.Extra[i], m.Extra[i]
	return &on
}

// sharedTier is a versitygw bucket replicas share as SHARED_STORE.
type sharedTier struct {
	srv            *s3test.Server
	bucket, prefix string
}

// startSharedTier starts versitygw with one bucket for SHARED_STORE.
func startSharedTier(t testing.TB) *sharedTier {
	t.Helper()
	srv := s3test.Start(t)
	srv.CreateBucket(t, "tier")
	return &sharedTier{srv: srv, bucket: "tier", prefix: "mirror"}
}

// opts is a mirror's options with its own CACHE_DIR over the tier.
func (s *sharedTier) opts() mirrorOpts {
	aws := s.srv.AWS()
	return mirrorOpts{
		env:  map[string]string{"SHARED_STORE": "s3://" + s.bucket + "/" + s.prefix, "SHARED_STORE_PATH_STYLE": "true"},
		edit: func(c *settings.Config) { c.SharedStoreAWS = &aws },
	}
}

// keys are the objects in the tier, by digest.
func (s *sharedTier) keys(t testing.TB) []string {
	return s.srv.Keys(t, s.bucket, s.prefix+"/blobs/")
}

// key is the object key of dgst.
func (s *sharedTier) key(dgst digest.Digest) string {
	return s.prefix + "/blobs/sha256/" + dgst.Encoded()
}

// records are the tier's records in dir (used/ or pins/), by key.
func (s *sharedTier) records(t testing.TB, dir string) []string {
	return s.srv.Keys(t, s.bucket, s.prefix+"/"+dir+"/")
}

// lastModified is key's LastModified, by the bucket's clock.
func (s *sharedTier) lastModified(t testing.TB, key string) time.Time {
	t.Helper()
	out, err := s.srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		t.Fatalf("HEAD s3://%s/%s: %v", s.bucket, key, err)
	}
	return aws.ToTime(out.LastModified)
}

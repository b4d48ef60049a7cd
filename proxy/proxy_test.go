package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// testEnv is a Proxy wired as cmd/ecr-mirror wires it: a fake ECR
// upstream, a real store in a temp dir, the auth transport, and the
// registry handler in front, served over loopback.
type testEnv struct {
	fake  *fakeecr.Server
	dir   string
	store *cache.Store
	proxy *Proxy
	srv   *httptest.Server
	logs  *testkit.SyncBuffer // the proxy's log (and the handler's, with handlerLog)
	// stallClock times the proxy's stall timeouts: they fire only when a
	// test advances it (stallAt), never because the machine was busy.
	stallClock *clockwork.FakeClock
}

type envOptions struct {
	manifestLimit int64
	// modify, when set, puts a reverse proxy in front of the fake registry
	// (the mirror's upstream becomes the reverse proxy) that passes every
	// registry response through modify. S3 is still reached directly.
	modify func(*http.Response) error
	// handlerLog sends the registry handler's request log to logs too.
	handlerLog bool
	// edge holds the fake's options and the settings of resumption and
	// the bandwidth cap.
	edge edgeOptions
	// upstream, when set, rewrites the upstream URL the mirror is given
	// (the fake by another name); dial then replaces the transport's
	// dialer and lookup the redirect policy's resolver (redirect tests).
	upstream func(*url.URL)
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	lookup   func(ctx context.Context, host string) ([]netip.Addr, error)
	// dir is the store's directory (a small filesystem, say); default a
	// new temp dir. wrap, when set, wraps the served handler.
	dir  string
	wrap func(http.Handler) http.Handler
	// wrapStore, when set, decorates the store the proxy is given (a
	// counting Store, say); testEnv.store stays the one underneath.
	wrapStore func(*cache.Store) Store
	// staleIfError and tagFreshness are Options'; tagClock, when set,
	// dates the tag records and tells their age.
	staleIfError, tagFreshness time.Duration
	tagClock                   clockwork.Clock
	// notMain makes the proxy another upstream than the main one: links
	// and tag records without a host are not its own.
	notMain bool
	// shared, when set, is the limits the proxy shares with others.
	shared *Shared
	// upstreamAuth, when set, replaces the ECR token transport around the
	// upstream client's base (another registry's auth, say).
	upstreamAuth func(fake *fakeecr.Server, host string, rt http.RoundTripper) http.RoundTripper
	// sharedStore, when set, is the shared blob tier (memShared, say).
	sharedStore SharedBlobs
	// peers, when set, are the other replicas (memPeers, say).
	peers Peers
	// usedManifest is Options.UsedManifest.
	usedManifest func(digest.Digest)
}

func newEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	fake := fakeecr.Start(t, o.edge.fake)

	upstream := fake.URL()
	if o.modify != nil {
		target, err := url.Parse(fake.URL())
		if err != nil {
			t.Fatal(err)
		}
		rpTransport := http.DefaultTransport.(*http.Transport).Clone()
		rpTransport.DisableCompression = true
		rp := &httputil.ReverseProxy{
			Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(target) },
			ModifyResponse: o.modify,
			Transport:      rpTransport,
		}
		front := httptest.NewServer(rp)
		t.Cleanup(front.Close)
		t.Cleanup(rpTransport.CloseIdleConnections)
		upstream = front.URL
	}
	upURL, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	if o.upstream != nil {
		o.upstream(upURL)
	}

	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	store, err := cache.Open(cache.Options{Dir: dir, MaxSize: 1 << 30, AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	src := auth.NewSource(func(context.Context) (auth.Token, error) {
		tok, exp := fake.IssueToken()
		return auth.NewToken(tok, exp), nil
	}, auth.Options{})
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DisableCompression = true
	base.DialContext = o.dial
	policy := NewRedirectPolicy(upURL)
	if o.lookup != nil {
		policy.lookup = o.lookup
	}
	client := policy.Client(base, func(rt http.RoundTripper) http.RoundTripper { return src.Transport(upURL.Host, rt) })
	if o.upstreamAuth != nil {
		client = policy.Client(base, func(rt http.RoundTripper) http.RoundTripper { return o.upstreamAuth(fake, upURL.Host, rt) })
	}
	t.Cleanup(client.CloseIdleConnections)

	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	stallClock := clockwork.NewFakeClock()
	var ps Store = store
	if o.wrapStore != nil {
		ps = o.wrapStore(store)
	}
	p, err := New(Options{Upstream: upURL, MainUpstream: !o.notMain, Client: client, Store: ps, Logger: log, ManifestLimit: o.manifestLimit,
		Retries: o.edge.retries, StallTimeout: o.edge.stall, StallClock: stallClock, MaxRate: o.edge.maxRate, Shared: o.shared,
		StaleIfError: o.staleIfError, TagFreshness: o.tagFreshness, SharedStore: o.sharedStore, Peers: o.peers, UsedManifest: o.usedManifest})
	if err != nil {
		t.Fatal(err)
	}
	if o.tagClock != nil {
		p.clock = o.tagClock
	}
	// A few milliseconds between resumptions, not seconds.
	p.resume.backoff, p.resume.maxBackoff = time.Millisecond, 4*time.Millisecond
	t.Cleanup(p.Close) // before the store closes (cleanups run last first)

	var hlog *slog.Logger
	if o.handlerLog {
		hlog = log
	}
	var h http.Handler = registry.NewHandler(p, hlog)
	if o.wrap != nil {
		h = o.wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testEnv{fake: fake, dir: dir, store: store, proxy: p, srv: srv, logs: logs, stallClock: stallClock}
}

// waitStalled waits until the download of dgst waits on upstream with
// exactly offset bytes written: the fake sent those and holds the rest
// back (FaultStall). Only a Read that is waiting on upstream runs the
// stall clock, so once the bytes are written the next timer armed is that
// Read's. fireStall then fires it.
func (e *testEnv) waitStalled(t *testing.T, dgst digest.Digest, offset int64) {
	t.Helper()
	testwait.Until(t, fmt.Sprintf("the download to reach byte %d", offset), func() bool {
		fl := e.proxy.flight(dgst)
		if fl == nil {
			return false
		}
		select {
		case <-fl.ready:
			return fl.w != nil && fl.w.Written() == offset
		default:
			return false
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), testwait.HangGuard)
	defer cancel()
	if err := e.stallClock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("the download never waited on upstream at byte %d: %v", offset, err)
	}
}

// fireStall lets the stall timeout pass.
func (e *testEnv) fireStall() { e.stallClock.Advance(e.proxy.stallTimeout) }

// do sends a request to the mirror and reads the whole body. err is the
// transport or body error; the response is returned even when reading
// its body failed.
func (e *testEnv) do(t *testing.T, ctx context.Context, method, path string, hdr http.Header) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// mustDo is do that fails the test on a transport or body error.
func (e *testEnv) mustDo(t *testing.T, method, path string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := e.do(t, t.Context(), method, path, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, body
}

// tempFiles lists the store's tmp/ directory.
func (e *testEnv) tempFiles(t *testing.T) []string {
	t.Helper()
	return listDir(t, filepath.Join(e.dir, "tmp"))
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, de := range entries {
		names = append(names, de.Name())
	}
	return names
}

// blobFile is where the store keeps dgst once committed.
func (e *testEnv) blobFile(dgst digest.Digest) string {
	return filepath.Join(e.dir, "blobs", "sha256", dgst.Encoded()[:2], dgst.Encoded())
}

// assertNotStored fails unless dgst is neither indexed nor on disk, and
// tmp/ is empty.
func (e *testEnv) assertNotStored(t *testing.T, dgst digest.Digest) {
	t.Helper()
	if info, err := e.store.Stat(dgst); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("store.Stat(%s) = %+v, %v; want ErrNotFound", dgst, info, err)
	}
	if _, err := os.Stat(e.blobFile(dgst)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("blob file of %s exists (stat error %v)", dgst, err)
	}
	if tmp := e.tempFiles(t); len(tmp) != 0 {
		t.Errorf("tmp/ holds %v, want nothing", tmp)
	}
}

// testManifest is an OCI image manifest naming made-up blobs; the fake
// serves manifests as opaque bytes, so the blobs need not exist.
func testManifest(seed uint64) []byte {
	cfg := digest.FromBytes(testkit.RandomBytes(seed, 32))
	layer := digest.FromBytes(testkit.RandomBytes(seed+1000, 32))
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":32},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":32}]}`, cfg, layer)
}

const (
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	ociIndex    = "application/vnd.oci.image.index.v1+json"
)

// fetchResult is what a background client GET got.
type fetchResult struct {
	status int
	body   []byte
	err    error
}

// tagResult is what a tag request to the proxy got, its body read whole.
type tagResult struct {
	c    *registry.Content
	body []byte
	err  error
}

// askTag asks the proxy for a manifest by tag in the background, on ctx,
// as the registry handler would; the answer arrives on the channel.
// Calling the proxy rather than going through HTTP lets a test end a
// client's context and know the proxy has seen it.
func (e *testEnv) askTag(ctx context.Context, req registry.Request) <-chan tagResult {
	done := make(chan tagResult, 1)
	go func() {
		c, err := e.proxy.Manifest(ctx, &req)
		r := tagResult{c: c, err: err}
		if err == nil && c.Body != nil {
			r.body, r.err = io.ReadAll(c.Body)
			c.Body.Close()
		}
		done <- r
	}()
	return done
}

// tagReq is a request for team/app:v1 with one Accept value.
func tagReq(head bool, accept string) registry.Request {
	return registry.Request{Name: "team/app", Tag: "v1", Head: head, Accept: []string{accept}}
}

// startDownload GETs a blob through the mirror in the background and
// returns once the proxy has a flight for it. The result arrives on the
// channel when the GET ends.
func (e *testEnv) startDownload(t *testing.T, repo string, dgst digest.Digest) <-chan fetchResult {
	t.Helper()
	done := make(chan fetchResult, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v2/"+repo+"/blobs/"+dgst.String(), nil)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			done <- fetchResult{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		done <- fetchResult{status: resp.StatusCode, body: body, err: err}
	}()
	testwait.Until(t, "the download to start", func() bool { return e.proxy.flight(dgst) != nil })
	return done
}

// A Range request for a blob whose download is in flight is answered 206
// from that download: the right bytes, the right Content-Range, and no
// upstream range request (one S3 GET in all).
func TestRangeServedFromFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const size = 256 << 10
	data := testkit.RandomBytes(1, size)
	dgst := e.fake.PutBlob("team/app", data)
	// Half the body, then nothing until every range below has joined
	// the download.
	hold := make(chan struct{})
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: size / 2, Hold: hold, Times: 1})
	first := e.startDownload(t, "team/app", dgst)

	tests := []struct {
		name, header  string
		start, end    int  // want data[start:end]
		unsatisfiable bool // want 416
	}{
		{name: "closed", header: "bytes=1000-1999", start: 1000, end: 2000},
		{name: "first byte", header: "bytes=0-0", start: 0, end: 1},
		{name: "open ended", header: "bytes=200000-", start: 200000, end: size},
		{name: "end past size", header: "bytes=262000-999999", start: 262000, end: size},
		{name: "suffix", header: "bytes=-100", start: size - 100, end: size},
		{name: "suffix longer than blob", header: "bytes=-999999", start: 0, end: size},
		{name: "past the end", header: "bytes=262144-", unsatisfiable: true},
	}
	// All at once, while the download runs (not as parallel subtests,
	// which may wait for a free slot until it has ended).
	type answer struct {
		resp *http.Response
		body []byte
		err  error
	}
	answers := make([]answer, len(tests))
	var wg sync.WaitGroup
	for i, tt := range tests {
		wg.Go(func() {
			a := &answers[i]
			a.resp, a.body, a.err = e.do(t, t.Context(), http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), http.Header{"Range": {tt.header}})
		})
	}
	testwait.Until(t, "every range to join the download", func() bool { return e.proxy.Stats().Coalesced.Load() == int64(len(tests)) })
	close(hold)
	wg.Wait()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := answers[i].resp, answers[i].body, answers[i].err
			if err != nil {
				t.Fatal(err)
			}
			if tt.unsatisfiable {
				code, _, _ := registry.ParseErrorBody(body)
				if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || code != registry.CodeRangeInvalid {
					t.Errorf("got %d %s, want 416 RANGE_INVALID: %s", resp.StatusCode, code, body)
				}
				if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes */%d", size); got != want {
					t.Errorf("Content-Range %q, want %q", got, want)
				}
				return
			}
			if resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("status %d, want 206: %s", resp.StatusCode, body)
			}
			wantCR := fmt.Sprintf("bytes %d-%d/%d", tt.start, tt.end-1, size)
			if got := resp.Header.Get("Content-Range"); got != wantCR {
				t.Errorf("Content-Range %q, want %q", got, wantCR)
			}
			if !bytes.Equal(body, data[tt.start:tt.end]) {
				t.Errorf("got %d bytes, want data[%d:%d] (%d bytes)", len(body), tt.start, tt.end, tt.end-tt.start)
			}
			if got := resp.Header.Get("Docker-Content-Digest"); got != dgst.String() {
				t.Errorf("Docker-Content-Digest %q", got)
			}
		})
	}

	r := <-first
	if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Fatalf("the client that started the download got status %d, %d bytes, error %v", r.status, len(r.body), r.err)
	}
	e.proxy.Wait()
	c := e.fake.Counters()
	if c.S3Get[dgst] != 1 || len(c.S3RangeGet) != 0 || c.BlobGet != 1 {
		t.Errorf("upstream saw %d full S3 GETs, ranged %v, %d registry blob GETs; want 1, none, 1", c.S3Get[dgst], c.S3RangeGet, c.BlobGet)
	}
	st := e.proxy.Stats()
	if n := st.UpstreamRangeGet.Load(); n != 0 {
		t.Errorf("proxy made %d upstream range requests", n)
	}
	if n := st.Coalesced.Load(); n != int64(len(tests)) {
		t.Errorf("%d requests joined the download, want all %d ranges (the rest came from elsewhere)", n, len(tests))
	}
	if n := st.Hits.Load(); n != 0 {
		t.Errorf("%d requests were served from the store: the download had finished, so the test proved nothing", n)
	}
	if _, err := e.store.Stat(dgst); err != nil {
		t.Errorf("blob not stored after the download: %v", err)
	}
}

// A HEAD for a blob whose download is in flight is answered from the
// flight: right size and digest, no upstream HEAD, and without waiting for
// the body.
func TestHeadCoalescedWithFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const size = 256 << 10
	data := testkit.RandomBytes(2, size)
	dgst := e.fake.PutBlob("team/app", data)
	// Half the body, then nothing until the HEADs are answered.
	hold := make(chan struct{})
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: size / 2, Hold: hold, Times: 1})
	first := e.startDownload(t, "team/app", dgst)

	resp, body := e.mustDo(t, http.MethodHead, "/v2/team/app/blobs/"+dgst.String(), nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD status %d, %d body bytes", resp.StatusCode, len(body))
	}
	if resp.ContentLength != size || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Errorf("HEAD answered Content-Length %d, digest %q; want %d, %s", resp.ContentLength, resp.Header.Get("Docker-Content-Digest"), size, dgst)
	}
	c, err := e.proxy.Blob(context.Background(), &registry.Request{Name: "team/app", Dgst: dgst, Head: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Outcome != OutcomeCoalesced || c.Size != size || c.Dgst != dgst || c.Body != nil {
		t.Errorf("Blob(HEAD) = %+v, want coalesced, size %d, no body", c, size)
	}
	if e.proxy.flight(dgst) == nil {
		t.Error("the download ended before the HEADs were answered: they waited for the body, or the test proved nothing")
	}
	close(hold)

	r := <-first
	if r.err != nil || !bytes.Equal(r.body, data) {
		t.Fatalf("downloading client: %d bytes, %v", len(r.body), r.err)
	}
	e.proxy.Wait()
	fc := e.fake.Counters()
	if fc.BlobHead != 0 || fc.S3Head != 0 || fc.BlobGet != 1 || fc.S3Get[dgst] != 1 {
		t.Errorf("upstream saw %d blob HEADs, %d S3 HEADs, %d blob GETs, %d S3 GETs; want 0, 0, 1, 1", fc.BlobHead, fc.S3Head, fc.BlobGet, fc.S3Get[dgst])
	}
	if n := e.proxy.Stats().Coalesced.Load(); n != 2 {
		t.Errorf("Stats.Coalesced = %d, want 2", n)
	}
}

// Upstream failures reach the client as OCI errors with the right status,
// never with a presigned URL, and leave nothing in the store.
func TestUpstreamErrorsMapped(t *testing.T) {
	t.Parallel()
	addRetryAfter := func(resp *http.Response) error {
		if resp.StatusCode == http.StatusTooManyRequests {
			resp.Header.Set("Retry-After", "7")
		}
		return nil
	}
	tests := []struct {
		name   string
		modify func(*http.Response) error
		// setup breaks upstream and returns the path to request.
		setup      func(e *testEnv, blob, manifest digest.Digest) string
		method     string
		status     int
		code       registry.Code
		retryAfter string
		msg        string // the error message contains it
	}{
		{
			name: "blob 429 with Retry-After", modify: addRetryAfter,
			setup: func(e *testEnv, blob, _ digest.Digest) string {
				e.fake.SetFault(blob, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusTooManyRequests})
				return "/v2/team/app/blobs/" + blob.String()
			},
			status: http.StatusTooManyRequests, code: registry.CodeTooManyRequests, retryAfter: "7", msg: "Rate exceeded",
		},
		{
			name: "tag 429 with Retry-After", modify: addRetryAfter,
			setup: func(e *testEnv, _, manifest digest.Digest) string {
				e.fake.SetFault(manifest, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusTooManyRequests})
				return "/v2/team/app/manifests/v1"
			},
			status: http.StatusTooManyRequests, code: registry.CodeTooManyRequests, retryAfter: "7",
		},
		{
			name: "blob 500",
			setup: func(e *testEnv, blob, _ digest.Digest) string {
				e.fake.SetFault(blob, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusInternalServerError})
				return "/v2/team/app/blobs/" + blob.String()
			},
			status: http.StatusBadGateway, code: registry.CodeUnavailable, msg: "500",
		},
		{
			name: "manifest by digest 500",
			setup: func(e *testEnv, _, manifest digest.Digest) string {
				e.fake.SetFault(manifest, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusInternalServerError})
				return "/v2/team/app/manifests/" + manifest.String()
			},
			status: http.StatusBadGateway, code: registry.CodeUnavailable, msg: "500",
		},
		{
			name: "S3 503",
			setup: func(e *testEnv, blob, _ digest.Digest) string {
				e.fake.SetFault(blob, fakeecr.Fault{Mode: fakeecr.FaultStatus, Status: http.StatusServiceUnavailable, Endpoint: fakeecr.EndpointS3})
				return "/v2/team/app/blobs/" + blob.String()
			},
			status: http.StatusBadGateway, code: registry.CodeUnavailable, msg: "503",
		},
		{
			name: "unknown blob",
			setup: func(*testEnv, digest.Digest, digest.Digest) string {
				return "/v2/team/app/blobs/" + digest.FromString("nope").String()
			},
			status: http.StatusNotFound, code: registry.CodeBlobUnknown,
		},
		{
			name:   "unknown tag",
			setup:  func(*testEnv, digest.Digest, digest.Digest) string { return "/v2/team/app/manifests/nope" },
			status: http.StatusNotFound, code: registry.CodeManifestUnknown,
		},
		{
			name:   "unknown repository",
			setup:  func(*testEnv, digest.Digest, digest.Digest) string { return "/v2/team/nope/manifests/v1" },
			status: http.StatusNotFound, code: registry.CodeNameUnknown,
		},
		{
			name: "upstream down",
			setup: func(e *testEnv, blob, _ digest.Digest) string {
				e.fake.SetDown(true)
				return "/v2/team/app/blobs/" + blob.String()
			},
			status: http.StatusBadGateway, code: registry.CodeUnavailable, msg: "unreachable",
		},
		{
			name: "tag with upstream down",
			setup: func(e *testEnv, _, _ digest.Digest) string {
				e.fake.SetDown(true)
				return "/v2/team/app/manifests/v1"
			},
			status: http.StatusBadGateway, code: registry.CodeUnavailable, msg: "unreachable",
		},
		{
			// The failing request is the presigned one: its URL must be
			// redacted from the message.
			name: "S3 down",
			setup: func(e *testEnv, blob, _ digest.Digest) string {
				e.fake.SetFault(blob, fakeecr.Fault{Mode: fakeecr.FaultDown, Endpoint: fakeecr.EndpointS3})
				return "/v2/team/app/blobs/" + blob.String()
			},
			status: http.StatusBadGateway, code: registry.CodeUnavailable, msg: "unreachable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{modify: tt.modify})
			blob := e.fake.PutBlob("team/app", testkit.RandomBytes(3, 4096))
			manifest := e.fake.PutManifest("team/app", "v1", ociManifest, testManifest(3))
			path := tt.setup(e, blob, manifest)

			resp, body := e.mustDo(t, http.MethodGet, path, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			code, msg, ok := registry.ParseErrorBody(body)
			if !ok || code != tt.code {
				t.Fatalf("body %s, want OCI error %s", body, tt.code)
			}
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q does not contain %q", msg, tt.msg)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			// Redacted URLs keep scheme, host and path; the presigned
			// query holds the credentials.
			for _, leak := range []string{"X-Amz", "Signature", "?"} {
				if strings.Contains(string(body), leak) {
					t.Errorf("error body leaks %q: %s", leak, body)
				}
			}
			if resp.Header.Get("Docker-Content-Digest") != "" {
				t.Errorf("an error carries Docker-Content-Digest %q", resp.Header.Get("Docker-Content-Digest"))
			}
			e.proxy.Wait()
			e.assertNotStored(t, blob)
			e.assertNotStored(t, manifest)
		})
	}
}

// A manifest over Options.ManifestLimit is refused, whether its size is
// declared or not, and nothing of it is stored.
func TestManifestOverLimitRefused(t *testing.T) {
	t.Parallel()
	// chunked makes the upstream manifest GET arrive without a
	// Content-Length, so only the bytes tell the size.
	chunked := func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/manifests/") {
			resp.Header.Del("Content-Length")
			resp.ContentLength = -1
		}
		return nil
	}
	tests := []struct {
		name    string
		byTag   bool
		chunked bool
	}{
		{name: "by tag", byTag: true},
		{name: "by digest", byTag: false},
		{name: "by tag, no Content-Length", byTag: true, chunked: true},
		{name: "by digest, no Content-Length", byTag: false, chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := envOptions{manifestLimit: 64}
			if tt.chunked {
				o.modify = chunked
			}
			e := newEnv(t, o)
			raw := testManifest(4)
			if len(raw) <= 64 {
				t.Fatalf("test manifest is only %d bytes", len(raw))
			}
			dgst := e.fake.PutManifest("team/app", "big", ociManifest, raw)
			path := "/v2/team/app/manifests/" + dgst.String()
			if tt.byTag {
				path = "/v2/team/app/manifests/big"
			}

			resp, body, err := e.do(t, t.Context(), http.MethodGet, path, nil)
			switch {
			case bytes.Equal(body, raw):
				t.Fatal("the client received the whole oversized manifest")
			case resp != nil && resp.StatusCode == http.StatusOK && err == nil:
				t.Fatalf("a %d byte manifest over the 64 byte limit was served whole (%d bytes)", len(raw), len(body))
			}
			// With a declared size, or by tag (read whole, then checked),
			// the client gets a clean error. A manifest by digest of
			// unknown size is streamed from its download, which fails
			// once the limit is hit: the response is cut off (or, if the
			// download failed before the client started to follow it, a
			// 502; see TestFailedFlightNotJoined).
			if tt.chunked && !tt.byTag && err == nil && resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d and a clean transfer, want 502 or a broken transfer", resp.StatusCode)
			}
			if !tt.chunked || tt.byTag {
				if resp == nil {
					t.Fatalf("GET: %v", err)
				}
				code, msg, _ := registry.ParseErrorBody(body)
				if resp.StatusCode != http.StatusBadGateway || code != registry.CodeManifestInvalid || !strings.Contains(msg, "limit") {
					t.Errorf("got %d %s %q, want 502 MANIFEST_INVALID about the limit", resp.StatusCode, code, msg)
				}
			}
			e.proxy.Wait()
			e.assertNotStored(t, dgst)
		})
	}
}

// A tag whose upstream HEAD names no digest is still served, by a GET by
// tag, and the manifest is stored under the digest of its bytes.
func TestTagWithoutDigestOnHead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		stripOn []string // methods whose Docker-Content-Digest is removed
	}{
		{name: "HEAD lacks digest", stripOn: []string{http.MethodHead}},
		{name: "HEAD and GET lack digest", stripOn: []string{http.MethodHead, http.MethodGet}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{modify: func(resp *http.Response) error {
				for _, m := range tt.stripOn {
					if resp.Request.Method == m {
						resp.Header.Del("Docker-Content-Digest")
					}
				}
				return nil
			}})
			raw := testManifest(5)
			dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)

			for i := range 2 {
				resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/v1", nil)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, raw) {
					t.Fatalf("GET %d: status %d, %d bytes (want %d equal bytes): %s", i, resp.StatusCode, len(body), len(raw), body)
				}
				if got := resp.Header.Get("Docker-Content-Digest"); got != dgst.String() {
					t.Errorf("GET %d: Docker-Content-Digest %q, want %s", i, got, dgst)
				}
				if got := resp.Header.Get("Content-Type"); got != ociManifest {
					t.Errorf("GET %d: Content-Type %q", i, got)
				}
			}
			resp, _ := e.mustDo(t, http.MethodHead, "/v2/team/app/manifests/v1", nil)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != dgst.String() || resp.ContentLength != int64(len(raw)) {
				t.Errorf("HEAD: status %d, digest %q, length %d", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), resp.ContentLength)
			}
			info, err := e.store.Stat(dgst)
			if err != nil || info.Size != int64(len(raw)) || info.MediaType != ociManifest {
				t.Fatalf("store.Stat(%s) = %+v, %v", dgst, info, err)
			}
			// Without a digest upstream, every lookup needs the body.
			c := e.fake.Counters()
			if c.ManifestHead != 3 || c.ManifestGetByTag != 3 || c.ManifestGetByDigest != 0 {
				t.Errorf("upstream saw %d HEADs, %d GETs by tag, %d by digest; want 3, 3, 0", c.ManifestHead, c.ManifestGetByTag, c.ManifestGetByDigest)
			}
			// Stored by digest: a GET by digest is a hit.
			resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/"+dgst.String(), nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, raw) {
				t.Fatalf("GET by digest: status %d", resp.StatusCode)
			}
			if c2 := e.fake.Counters(); c2.ManifestGetByDigest != 0 || c2.ManifestHead != c.ManifestHead {
				t.Errorf("GET by digest went upstream (%d GETs, %d HEADs)", c2.ManifestGetByDigest, c2.ManifestHead-c.ManifestHead)
			}
		})
	}
}

// A tag naming a digest the store holds is revalidated with a HEAD only;
// the body comes from the store.
func TestTagBodyFromStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	raw := testManifest(6)
	dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
	if err := e.store.Put(dgst, ociManifest, raw); err != nil {
		t.Fatal(err)
	}
	hdr := http.Header{"Accept": {ociManifest}}

	resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/v1", hdr)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, raw) {
		t.Fatalf("GET by tag: status %d, %d bytes: %s", resp.StatusCode, len(body), body)
	}
	if resp.Header.Get("Docker-Content-Digest") != dgst.String() || resp.Header.Get("Content-Type") != ociManifest {
		t.Errorf("headers %v", resp.Header)
	}
	resp, _ = e.mustDo(t, http.MethodHead, "/v2/team/app/manifests/v1", hdr)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(raw)) || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Errorf("HEAD by tag: status %d, length %d, digest %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Docker-Content-Digest"))
	}
	c := e.fake.Counters()
	if c.ManifestGetByTag != 0 || c.ManifestGetByDigest != 0 {
		t.Errorf("the body was fetched upstream (%d GETs by tag, %d by digest)", c.ManifestGetByTag, c.ManifestGetByDigest)
	}
	if c.ManifestHead != 2 {
		t.Errorf("upstream saw %d manifest HEADs, want 2 (every tag request revalidates)", c.ManifestHead)
	}
	if got := c.Requests; len(got) > 0 && got[0].Accept != ociManifest {
		t.Errorf("the HEAD upstream carried Accept %q, want the client's %q", got[0].Accept, ociManifest)
	}
	if n := e.proxy.Stats().Hits.Load(); n != 1 {
		t.Errorf("Stats.Hits = %d, want 1", n)
	}
}

// Close abandons a download in flight: its temp file goes, nothing is
// indexed (not even after reopening the store), and the client following
// it gets a broken transfer, not a complete body.
func TestCloseAbandonsDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const size = 1 << 20
	data := testkit.RandomBytes(7, size)
	dgst := e.fake.PutBlob("team/app", data)
	// The body stops after 64 KiB until the mirror gives up on it.
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 64 << 10, Times: 1})
	// The client is following the download once it has its first bytes.
	resp, err := e.srv.Client().Get(e.srv.URL + "/v2/team/app/blobs/" + dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, head); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, reading the first bytes: %v", resp.StatusCode, err)
	}
	fl := e.proxy.flight(dgst)
	if fl == nil {
		t.Fatal("no download in flight")
	}
	if tmp := e.tempFiles(t); len(tmp) != 1 {
		t.Fatalf("tmp/ holds %v during the download, want one file", tmp)
	}

	// A Close that waited for the download (stalled, with its stall
	// clock standing still) would never return.
	e.proxy.Close()
	e.assertNotStored(t, dgst)

	rest, err := io.ReadAll(resp.Body)
	got := append(head, rest...)
	if err == nil {
		t.Fatalf("the client's transfer ended cleanly after %d of %d bytes", len(got), size)
	}
	if len(got) >= size {
		t.Fatal("the client got a complete body from an abandoned download")
	}
	if !bytes.Equal(got, data[:len(got)]) {
		t.Error("the client got wrong bytes before the transfer broke")
	}

	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := cache.Open(cache.Options{Dir: e.dir, MaxSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if info, err := reopened.Stat(dgst); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("reopened store has the abandoned blob: %+v, %v", info, err)
	}
	if st := reopened.Stats(); st.Entries != 0 {
		t.Errorf("reopened store has %d entries, want 0", st.Entries)
	}
	if files := listDir(t, filepath.Join(e.dir, "blobs", "sha256")); len(files) != 0 {
		t.Errorf("blobs/sha256 holds %v", files)
	}
}

// BUG: when an upstream request is canceled while it waits for S3 (a
// client hanging up during a range request, or Close during a download),
// transportError returns the *url.Error unredacted, and its text, holding
// the presigned S3 URL with X-Amz-Signature and X-Amz-Security-Token, is
// logged by the proxy ("download failed") and the handler ("request").
func TestCanceledUpstreamRequestLogsNoPresignedURL(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	// holdS3 makes S3 wait a minute before answering any GET of the blob.
	holdS3 := fakeecr.Fault{Mode: fakeecr.FaultSlow, Delay: time.Minute, Endpoint: fakeecr.EndpointS3}
	tests := []struct {
		name   string
		cancel func(t *testing.T, e *testEnv, dgst digest.Digest)
	}{
		{
			name: "Close while the download waits for S3",
			cancel: func(t *testing.T, e *testEnv, dgst digest.Digest) {
				e.fake.SetFault(dgst, holdS3)
				e.startDownload(t, "team/app", dgst)
				testwait.Until(t, "the download to reach S3", func() bool { return e.fake.Counters().S3Get[dgst] == 1 })
				e.proxy.Close()
			},
		},
		{
			name: "client hangs up while its range request waits for S3",
			cancel: func(t *testing.T, e *testEnv, dgst digest.Digest) {
				// The first S3 GET of the blob (the background download)
				// answers at once and sends its body slowly; later ones
				// (the range request) wait. A fault for the digest wins
				// over one for every digest, and clears itself.
				e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultSlow, Rate: size / 8, Times: 1, Endpoint: fakeecr.EndpointS3})
				e.fake.SetFault("", holdS3)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					// Near the end: not downloaded yet, so asked upstream.
					e.do(t, ctx, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), http.Header{"Range": {"bytes=-10"}})
				}()
				testwait.Until(t, "the range request to reach S3", func() bool { return e.fake.Counters().S3RangeGet[dgst] == 1 })
				if e.fake.Counters().S3Get[dgst] != 1 {
					t.Fatal("the background download did not start")
				}
				cancel()
				<-done
				testwait.Until(t, "the request log", func() bool { return strings.Contains(e.logs.String(), "msg=request") })
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{handlerLog: true})
			dgst := e.fake.PutBlob("team/app", testkit.RandomBytes(8, size))
			tt.cancel(t, e, dgst)
			for _, line := range strings.Split(e.logs.String(), "\n") {
				for _, secret := range []string{"X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential"} {
					if strings.Contains(line, secret) {
						msg, _, _ := strings.Cut(line, " error=")
						t.Errorf("a log line holds %s: %s ...", secret, msg)
					}
				}
			}
		})
	}
}

// A 206 from upstream whose Content-Range has an unknown total
// ("bytes 0-9/*") never reaches the client as "bytes 0-9/-1", which is
// not a valid Content-Range (RFC 9110 §14.4).
func TestRangeFromUpstreamUnknownTotal(t *testing.T) {
	t.Parallel()
	data := testkit.RandomBytes(9, 100)
	dgst := digest.FromBytes(data)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-9" {
			w.Header().Set("Content-Range", "bytes 0-9/*")
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:10])
			return
		}
		w.Write(data)
	}))
	t.Cleanup(up.Close)
	upURL, _ := url.Parse(up.URL)
	store, err := cache.Open(cache.Options{Dir: t.TempDir(), MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	p, err := New(Options{Upstream: upURL, Client: up.Client(), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	srv := httptest.NewServer(registry.NewHandler(p, nil))
	t.Cleanup(srv.Close)

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/team/app/blobs/"+dgst.String(), nil)
	req.Header.Set("Range", "bytes=0-9")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[:10]) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := resp.Header.Get("Content-Range"); got != "bytes 0-9/100" && got != "bytes 0-9/*" {
		t.Errorf("Content-Range %q, want %q (or %q)", got, "bytes 0-9/100", "bytes 0-9/*")
	}
}

// A request that arrives after a download failed verification, while the
// failed flight is still in the map (from the failed Commit until download
// removes it), must not join it: it starts a new download and gets the
// right bytes. The window is too short to hit reliably, so the test builds
// that state directly.
func TestFailedFlightNotJoined(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	data := testkit.RandomBytes(10, 4096)
	dgst := e.fake.PutBlob("team/app", data)

	w, err := e.store.Create(dgst, int64(len(data)), "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	corrupt := bytes.Clone(data)
	corrupt[len(corrupt)/2] ^= 0xff
	if _, err := w.Write(corrupt); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("Commit of corrupt bytes: %v", err)
	}
	// What download leaves between fill returning and the map delete.
	fl := &flight{dgst: dgst, ready: make(chan struct{}), done: make(chan struct{}), w: w, mediaType: "application/octet-stream"}
	close(fl.ready)
	e.proxy.mu.Lock()
	e.proxy.flights[dgst] = fl
	e.proxy.mu.Unlock()
	t.Cleanup(func() {
		e.proxy.mu.Lock()
		delete(e.proxy.flights, dgst)
		e.proxy.mu.Unlock()
		close(fl.done)
	})

	resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("got %d with %d bytes, want 200 with the blob's %d bytes", resp.StatusCode, len(body), len(data))
	}
	if n := e.fake.Counters().S3Get[dgst]; n != 1 {
		t.Fatalf("S3 GETs = %d, want 1 (a new download)", n)
	}
}

package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// pushEnv is a testEnv whose handler passes pushes through, with the
// upload staging files in a directory of the test's own.
type pushEnv struct {
	*testEnv
	push    *httptest.Server // the mirror, push on
	staging string
}

func newPushEnv(t *testing.T, o envOptions) *pushEnv {
	t.Helper()
	e := newEnv(t, o)
	srv := httptest.NewServer(registry.NewHandler(e.proxy, nil, registry.WithPush(true)))
	t.Cleanup(srv.Close)
	staging := t.TempDir()
	e.proxy.uploads().dir = staging
	return &pushEnv{testEnv: e, push: srv, staging: staging}
}

// send makes a request to the push-enabled mirror; a body of nil sends
// none, a plain io.Reader is sent chunked.
func (e *pushEnv) send(t *testing.T, method, target string, body io.Reader, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	if strings.HasPrefix(target, "/") {
		target = e.push.URL + target
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := e.push.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// onMirror fails unless loc is a URL on the mirror that names neither the
// fake's registry nor its S3.
func (e *pushEnv) onMirror(t *testing.T, loc string) {
	t.Helper()
	if !strings.HasPrefix(loc, e.push.URL+"/v2/") {
		t.Fatalf("Location %q is not on the mirror %s", loc, e.push.URL)
	}
	for _, up := range []string{e.fake.Host(), strings.TrimPrefix(e.fake.S3URL(), "http://")} {
		if strings.Contains(loc, up) {
			t.Fatalf("Location %q names the upstream %s", loc, up)
		}
	}
}

// start POSTs a new upload and returns the mirror URL to continue it.
func (e *pushEnv) start(t *testing.T, repo string) string {
	t.Helper()
	resp, body := e.send(t, "POST", "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	e.onMirror(t, loc)
	return loc
}

// wantCode fails unless an answer is status with OCI error code.
func wantCode(t *testing.T, resp *http.Response, body []byte, status int, code registry.Code) {
	t.Helper()
	got, msg, _ := registry.ParseErrorBody(body)
	if resp.StatusCode != status || got != code {
		t.Fatalf("got %d %s %q, want %d %s", resp.StatusCode, got, msg, status, code)
	}
}

// assertCached fails unless dgst is stored, served by the mirror as a hit
// with the right bytes, and the staging directory is empty.
func (e *pushEnv) assertCached(t *testing.T, repo string, dgst digest.Digest, data []byte) {
	t.Helper()
	info, err := e.store.Stat(dgst)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("store.Stat(%s) = %+v, %v; want the pushed blob", dgst, info, err)
	}
	before := e.fake.Counters()
	resp, body := e.send(t, "GET", "/v2/"+repo+"/blobs/"+dgst.String(), nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET after push: %d, %d bytes", resp.StatusCode, len(body))
	}
	after := e.fake.Counters()
	if after.BlobGet != before.BlobGet || after.S3Get[dgst] != 0 {
		t.Fatalf("the pull after the push went upstream (blob GETs %d -> %d, S3 GETs %d)", before.BlobGet, after.BlobGet, after.S3Get[dgst])
	}
	if files := listDir(t, e.staging); len(files) != 0 {
		t.Fatalf("staging dir holds %v", files)
	}
}

// Every way a blob can be uploaded ends with it upstream and, once
// upstream answered 201, verified in the cache, with every Location the
// client saw on the mirror.
func TestPushBlobAdmitted(t *testing.T) {
	t.Parallel()
	data := testkit.RandomBytes(41, 3<<20+17)
	dgst := digest.FromBytes(data)
	a, b := data[:1<<20], data[1<<20:]
	ranged := func(off int, p []byte) http.Header {
		return http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, off+len(p)-1)}, "Content-Type": {"application/octet-stream"}}
	}
	chunked := func(p []byte) io.Reader { return io.MultiReader(bytes.NewReader(p)) } // no length
	tests := []struct {
		name string
		// patches are sent in order, then a PUT with final (nil: no body).
		patches []func() (io.Reader, http.Header)
		final   io.Reader
		// monolithic POSTs the whole blob with ?digest= instead.
		monolithic bool
	}{
		{name: "chunks with Content-Range", patches: []func() (io.Reader, http.Header){
			func() (io.Reader, http.Header) { return bytes.NewReader(a), ranged(0, a) },
			func() (io.Reader, http.Header) { return bytes.NewReader(b), ranged(len(a), b) },
		}},
		{name: "one streamed chunk without a length", patches: []func() (io.Reader, http.Header){
			func() (io.Reader, http.Header) { return chunked(data), nil },
		}},
		{name: "last chunk in the PUT", patches: []func() (io.Reader, http.Header){
			func() (io.Reader, http.Header) { return bytes.NewReader(a), nil },
		}, final: bytes.NewReader(b)},
		{name: "whole blob in the PUT", final: bytes.NewReader(data)},
		{name: "whole blob in the PUT, streamed", final: chunked(data)},
		{name: "monolithic POST", monolithic: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newPushEnv(t, envOptions{})
			if tt.monolithic {
				resp, body := e.send(t, "POST", "/v2/team/app/blobs/uploads/?digest="+dgst.String(), bytes.NewReader(data), nil)
				if resp.StatusCode != http.StatusCreated {
					t.Fatalf("POST: %d %s", resp.StatusCode, body)
				}
				e.onMirror(t, resp.Header.Get("Location"))
			} else {
				loc := e.start(t, "team/app")
				for i, patch := range tt.patches {
					body, hdr := patch()
					resp, got := e.send(t, "PATCH", loc, body, hdr)
					if resp.StatusCode != http.StatusAccepted {
						t.Fatalf("PATCH %d: %d %s", i, resp.StatusCode, got)
					}
					loc = resp.Header.Get("Location")
					e.onMirror(t, loc)
				}
				resp, _ := e.send(t, "GET", loc, nil, nil)
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("upload status: %d", resp.StatusCode)
				}
				if _, err := e.store.Stat(dgst); !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("blob in the cache before the upload was finished (%v)", err)
				}
				resp, body := e.send(t, "PUT", loc+"?digest="+dgst.String(), tt.final, nil)
				if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
					t.Fatalf("PUT: %d %s", resp.StatusCode, body)
				}
				e.onMirror(t, resp.Header.Get("Location"))
			}
			if !e.fake.HasBlob("team/app", dgst) {
				t.Fatal("upstream does not have the pushed blob")
			}
			e.assertCached(t, "team/app", dgst, data)
		})
	}
}

// A final PUT upstream refuses (the digest does not match the bytes)
// passes upstream's error on and admits nothing.
func TestPushDigestMismatchAdmitsNothing(t *testing.T) {
	t.Parallel()
	data := testkit.RandomBytes(42, 1<<20)
	real := digest.FromBytes(data)
	wrong := digest.FromString("not these bytes")
	tests := []struct {
		name  string
		patch bool // the bytes go in a PATCH, else in the final request
		post  bool // a monolithic POST
	}{
		{name: "chunked", patch: true},
		{name: "whole blob in the PUT"},
		{name: "monolithic POST", post: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newPushEnv(t, envOptions{})
			var resp *http.Response
			var body []byte
			if tt.post {
				resp, body = e.send(t, "POST", "/v2/team/app/blobs/uploads/?digest="+wrong.String(), bytes.NewReader(data), nil)
			} else {
				loc := e.start(t, "team/app")
				var final io.Reader = bytes.NewReader(data)
				if tt.patch {
					r, _ := e.send(t, "PATCH", loc, bytes.NewReader(data), nil)
					loc, final = r.Header.Get("Location"), nil
				}
				resp, body = e.send(t, "PUT", loc+"?digest="+wrong.String(), final, nil)
			}
			wantCode(t, resp, body, http.StatusBadRequest, registry.CodeDigestInvalid)
			for _, d := range []digest.Digest{real, wrong} {
				if _, err := e.store.Stat(d); !errors.Is(err, cache.ErrNotFound) {
					t.Errorf("store holds %s after a refused upload (%v)", d, err)
				}
				if e.fake.HasBlob("team/app", d) {
					t.Errorf("upstream holds %s", d)
				}
			}
			if tmp := e.tempFiles(t); len(tmp) != 0 {
				t.Errorf("cache tmp/ holds %v", tmp)
			}
			if files := listDir(t, e.staging); len(files) != 0 {
				t.Errorf("staging dir holds %v", files)
			}
		})
	}
}

// Mounts pass through: 201 when upstream has the blob, else an upload
// starts; Locations are on the mirror either way.
func TestPushMount(t *testing.T) {
	t.Parallel()
	e := newPushEnv(t, envOptions{})
	dgst := e.fake.PutBlob("team/base", testkit.RandomBytes(43, 1000))
	resp, body := e.send(t, "POST", "/v2/team/app/blobs/uploads/?mount="+dgst.String()+"&from=team/base", nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mount: %d %s", resp.StatusCode, body)
	}
	if loc := resp.Header.Get("Location"); loc != e.push.URL+"/v2/team/app/blobs/"+dgst.String() {
		t.Fatalf("mount Location %q", loc)
	}
	if !e.fake.HasBlob("team/app", dgst) {
		t.Fatal("upstream did not mount the blob")
	}
	resp, _ = e.send(t, "POST", "/v2/team/app/blobs/uploads/?mount="+digest.FromString("x").String()+"&from=team/base", nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("mount of an unknown blob: %d, want 202", resp.StatusCode)
	}
	e.onMirror(t, resp.Header.Get("Location"))
}

// A pushed manifest is stored under its digest with its media type: pulls
// by digest and by tag right after are served from the cache.
func TestPushManifestCached(t *testing.T) {
	t.Parallel()
	e := newPushEnv(t, envOptions{})
	const mt = "application/vnd.oci.image.manifest.v1+json"
	cfg := e.fake.PutBlob("team/app", []byte("{}"))
	layer := e.fake.PutBlob("team/app", testkit.RandomBytes(44, 100))
	manifest := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":100}]}`, mt, cfg, layer)
	dgst := digest.FromBytes(manifest)

	e.send(t, "GET", "/v2/team/app/tags/list", nil, nil) // the mirror now holds a token...
	e.fake.ExpireTokens()                                // ...which the PUT finds expired: refreshed, replayed
	resp, body := e.send(t, "PUT", "/v2/team/app/manifests/v1", bytes.NewReader(manifest), http.Header{"Content-Type": {mt}})
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	if e.fake.Counters().Denied == 0 {
		t.Fatal("the token never expired; the replay is untested")
	}
	e.onMirror(t, resp.Header.Get("Location"))
	if info, err := e.store.Stat(dgst); err != nil || info.MediaType != mt {
		t.Fatalf("store.Stat = %+v, %v; want the manifest as %s", info, err, mt)
	}
	before := e.fake.Counters()
	for _, ref := range []string{dgst.String(), "v1"} {
		resp, body = e.send(t, "GET", "/v2/team/app/manifests/"+ref, nil, nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, manifest) || resp.Header.Get("Content-Type") != mt {
			t.Fatalf("GET %s: %d %q", ref, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if after := e.fake.Counters(); after.ManifestGetByDigest != before.ManifestGetByDigest || after.ManifestGetByTag != before.ManifestGetByTag {
		t.Fatal("a pull right after the push downloaded the manifest")
	}

	// Upstream refusals pass on, and nothing is stored.
	orphan := []byte(strings.Replace(string(manifest), layer.String(), digest.FromString("never pushed").String(), 1))
	resp, body = e.send(t, "PUT", "/v2/team/app/manifests/v2", bytes.NewReader(orphan), http.Header{"Content-Type": {mt}})
	wantCode(t, resp, body, http.StatusBadRequest, registry.CodeBlobUploadUnknown)
	if _, err := e.store.Stat(digest.FromBytes(orphan)); !errors.Is(err, cache.ErrNotFound) {
		t.Fatal("a manifest upstream refused was stored")
	}
}

// Upstream's errors reach the client as upstream gave them; a chunk out of
// order ends the copy of its upload, which is then not admitted.
func TestPushUpstreamErrors(t *testing.T) {
	t.Parallel()
	e := newPushEnv(t, envOptions{})
	resp, body := e.send(t, "PATCH", "/v2/team/app/blobs/uploads/no-such-upload", strings.NewReader("x"), nil)
	wantCode(t, resp, body, http.StatusNotFound, registry.CodeBlobUploadUnknown)

	data := testkit.RandomBytes(45, 4096)
	dgst := digest.FromBytes(data)
	loc := e.start(t, "team/app")
	resp, _ = e.send(t, "PATCH", loc, bytes.NewReader(data[:1000]), nil)
	loc = resp.Header.Get("Location")
	resp, body = e.send(t, "PATCH", loc, bytes.NewReader(data[2000:]), http.Header{"Content-Range": {fmt.Sprintf("2000-%d", len(data)-1)}})
	wantCode(t, resp, body, http.StatusRequestedRangeNotSatisfiable, registry.CodeBlobUploadInvalid)
	if resp.Header.Get("Range") != "0-999" {
		t.Errorf("416 Range %q, want upstream's 0-999", resp.Header.Get("Range"))
	}
	// The client recovers with the right chunk; the push succeeds, but
	// the mirror no longer vouches for the upload's bytes.
	resp, _ = e.send(t, "PATCH", loc, bytes.NewReader(data[1000:]), http.Header{"Content-Range": {fmt.Sprintf("1000-%d", len(data)-1)}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("resumed PATCH: %d", resp.StatusCode)
	}
	resp, _ = e.send(t, "PUT", resp.Header.Get("Location")+"?digest="+dgst.String(), nil, nil)
	if resp.StatusCode != http.StatusCreated || !e.fake.HasBlob("team/app", dgst) {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	if _, err := e.store.Stat(dgst); !errors.Is(err, cache.ErrNotFound) {
		t.Fatal("an upload whose copy was broken off was admitted")
	}
}

// A streamed chunk refused for an expired token cannot be replayed: the
// client gets DENIED and retries; the push completes, uncached.
func TestPushChunkAfterTokenExpiry(t *testing.T) {
	t.Parallel()
	e := newPushEnv(t, envOptions{})
	data := testkit.RandomBytes(46, 100<<10)
	loc := e.start(t, "team/app")
	e.fake.ExpireTokens()
	resp, body := e.send(t, "PATCH", loc, bytes.NewReader(data), nil)
	wantCode(t, resp, body, http.StatusForbidden, registry.CodeDenied)
	resp, body = e.send(t, "PATCH", loc, bytes.NewReader(data), nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("retried PATCH: %d %s", resp.StatusCode, body)
	}
	dgst := digest.FromBytes(data)
	if resp, _ = e.send(t, "PUT", resp.Header.Get("Location")+"?digest="+dgst.String(), nil, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	if _, err := e.store.Stat(dgst); !errors.Is(err, cache.ErrNotFound) {
		t.Fatal("admitted an upload whose first chunk was refused")
	}
}

// An upstream that answers with relative Locations works the same; one
// that sends the upload to another host is refused, the URL never shown.
func TestPushLocationForms(t *testing.T) {
	t.Parallel()
	t.Run("relative", func(t *testing.T) {
		t.Parallel()
		var fakeURL string
		e := newPushEnv(t, envOptions{modify: func(r *http.Response) error {
			if loc := r.Header.Get("Location"); strings.HasPrefix(loc, fakeURL) {
				r.Header.Set("Location", strings.TrimPrefix(loc, fakeURL))
			}
			return nil
		}})
		fakeURL = e.fake.URL()
		data := testkit.RandomBytes(47, 5000)
		loc := e.start(t, "team/app")
		resp, _ := e.send(t, "PATCH", loc, bytes.NewReader(data), nil)
		e.onMirror(t, resp.Header.Get("Location"))
		resp, _ = e.send(t, "PUT", resp.Header.Get("Location")+"?digest="+digest.FromBytes(data).String(), nil, nil)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT: %d", resp.StatusCode)
		}
		e.assertCached(t, "team/app", digest.FromBytes(data), data)
	})
	t.Run("another host", func(t *testing.T) {
		t.Parallel()
		e := newPushEnv(t, envOptions{modify: func(r *http.Response) error {
			if r.Header.Get("Location") != "" {
				r.Header.Set("Location", "https://bucket.s3.example/upload?X-Amz-Signature=secret")
			}
			return nil
		}})
		resp, body := e.send(t, "POST", "/v2/team/app/blobs/uploads/", nil, nil)
		wantCode(t, resp, body, http.StatusBadGateway, registry.CodeUnavailable)
		if resp.Header.Get("Location") != "" || strings.Contains(string(body), "s3.example") || strings.Contains(e.logs.String(), "secret") {
			t.Fatalf("the foreign URL leaked: Location %q body %s", resp.Header.Get("Location"), body)
		}
	})
}

func TestUpstreamPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, base, loc, want string // want "" means refused
	}{
		{name: "absolute", base: "https://r.example", loc: "https://r.example/v2/a/b/blobs/uploads/u1", want: "/v2/a/b/blobs/uploads/u1"},
		{name: "query kept", base: "https://r.example", loc: "https://r.example/v2/a/blobs/uploads/u1?_state=x%2By&n=1", want: "/v2/a/blobs/uploads/u1?_state=x%2By&n=1"},
		{name: "relative", base: "https://r.example", loc: "/v2/a/blobs/uploads/u1", want: "/v2/a/blobs/uploads/u1"},
		{name: "default port", base: "https://r.example", loc: "https://R.EXAMPLE:443/v2/a/blobs/x", want: "/v2/a/blobs/x"},
		{name: "base path", base: "http://r.example:5000/prefix", loc: "/prefix/v2/a/blobs/x", want: "/v2/a/blobs/x"},
		{name: "outside the base path", base: "http://r.example:5000/prefix", loc: "/v2/a/blobs/x"},
		{name: "other host", base: "https://r.example", loc: "https://s3.example/v2/a/blobs/x"},
		{name: "other port", base: "https://r.example", loc: "https://r.example:8443/v2/a/blobs/x"},
		{name: "other scheme", base: "https://r.example", loc: "http://r.example/v2/a/blobs/x"},
		{name: "user info", base: "https://r.example", loc: "https://u:p@r.example/v2/a/blobs/x"},
		{name: "presigned", base: "https://r.example", loc: "/v2/a/blobs/x?X-Amz-Signature=s"},
		{name: "not the API", base: "https://r.example", loc: "/uploads/x"},
		{name: "unparseable", base: "https://r.example", loc: "%zz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base, _ := url.Parse(tt.base)
			p := &Proxy{up: upstream{base: base}}
			req, _ := url.Parse(tt.base + "/v2/a/blobs/uploads/")
			got, ok := p.upstreamPath(req, tt.loc)
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("upstreamPath(%q) = %q, %v; want %q", tt.loc, got, ok, tt.want)
			}
		})
	}
}

func TestConfirms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rng   string
		total int64
		want  bool
	}{
		{"0-99", 100, true},
		{"0-98", 100, false},
		{"bytes=0-99", 100, true},
		{"0-0", 0, true},
		{"0-0", 1, true},
		{"", 5, true},
		{"5-99", 100, false},
		{"garbage", 100, false},
	}
	for _, tt := range tests {
		if got := confirms(tt.rng, tt.total); got != tt.want {
			t.Errorf("confirms(%q, %d) = %v, want %v", tt.rng, tt.total, got, tt.want)
		}
	}
}

// Existence checks ask upstream about the repository: a blob in the cache
// that the repository lacks is not there for a pusher.
func TestPushHeadAsksUpstream(t *testing.T) {
	t.Parallel()
	e := newPushEnv(t, envOptions{})
	data := testkit.RandomBytes(48, 2000)
	dgst := e.fake.PutBlob("team/base", data)
	if err := e.store.Put(dgst, "application/octet-stream", data); err != nil {
		t.Fatal(err)
	}
	head := func(repo string) (*registry.PushResponse, error) {
		return e.proxy.Push(context.Background(), &registry.PushRequest{Method: "HEAD", Kind: registry.KindBlob,
			Name: repo, Path: "blobs/" + dgst.String(), Dgst: dgst})
	}
	var rerr *registry.Error
	if _, err := head("team/app"); !errors.As(err, &rerr) || rerr.HTTPStatus() != http.StatusNotFound {
		t.Fatalf("HEAD in a repository without the blob: %v, want 404", err)
	}
	resp, err := head("team/base")
	if err != nil || resp.Status != 200 || resp.Header.Get("Content-Length") != "2000" || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Fatalf("HEAD in the repository with it: %+v, %v", resp, err)
	}
}

// Where an upload request's bytes are copied, by method and session: a
// whole blob whose digest is known goes to a cache entry (unless stored
// already), a chunk that continues the session to its staging file, and a
// chunk that does not ends the session.
func TestUploadCopyTarget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	stored := testkit.RandomBytes(61, 100)
	storedDgst := digest.FromBytes(stored)
	if err := e.store.Put(storedDgst, pushedBlobType, stored); err != nil {
		t.Fatal(err)
	}
	fresh := digest.FromBytes(testkit.RandomBytes(62, 100))
	const (
		none    = "nowhere"
		entry   = "cache entry"
		staging = "staging file"
	)
	tests := []struct {
		name     string
		method   string
		dgst     digest.Digest
		chunk    *registry.Span
		session  int64 // bytes staged in the session; -1: no session
		noBody   bool
		want     string
		wantDrop bool
	}{
		{name: "monolithic POST", method: http.MethodPost, dgst: fresh, session: -1, want: entry},
		{name: "monolithic POST of a stored blob", method: http.MethodPost, dgst: storedDgst, session: -1, want: none},
		{name: "POST without digest", method: http.MethodPost, session: -1, want: none},
		{name: "PATCH continuing", method: http.MethodPatch, chunk: &registry.Span{Start: 5, Length: 5}, session: 5, want: staging},
		{name: "PATCH streamed", method: http.MethodPatch, session: 5, want: staging},
		{name: "PATCH out of order", method: http.MethodPatch, chunk: &registry.Span{Start: 9, Length: 5}, session: 5, want: none, wantDrop: true},
		{name: "PATCH without session", method: http.MethodPatch, session: -1, want: none},
		{name: "PATCH without body", method: http.MethodPatch, session: 5, noBody: true, want: none},
		{name: "PUT of the whole blob", method: http.MethodPut, dgst: fresh, session: 0, want: entry},
		{name: "PUT of the whole blob, stored", method: http.MethodPut, dgst: storedDgst, session: 0, want: none},
		{name: "PUT of the last chunk", method: http.MethodPut, dgst: fresh, session: 5, want: staging},
		{name: "PUT out of order", method: http.MethodPut, dgst: fresh, chunk: &registry.Span{Start: 2, Length: 5}, session: 5, want: none, wantDrop: true},
		{name: "PUT without session", method: http.MethodPut, dgst: fresh, session: -1, want: none},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := newUploadTable(1<<20, e.proxy.log, t.TempDir())
			p := &Proxy{store: e.proxy.store, log: e.proxy.log, uploadTable: tb}
			req := &registry.PushRequest{Method: tc.method, Kind: registry.KindUpload, Dgst: tc.dgst, Chunk: tc.chunk,
				ContentLength: 5, Body: strings.NewReader("hello")}
			if tc.noBody {
				req.Body, req.ContentLength = nil, 0
			}
			c := &uploadCall{p: p, req: req, path: fmt.Sprintf("r/blobs/uploads/%d", i)}
			if tc.session >= 0 {
				tb.start(c.path)
				if c.u = tb.acquire(c.path); c.u == nil {
					t.Fatal("no session")
				}
				if tc.session > 0 {
					if err := c.u.stage(make([]byte, tc.session)); err != nil {
						t.Fatal(err)
					}
					c.u.size = tc.session
				}
				defer tb.release(c.u)
			}
			held := c.u
			c.pickCopy()
			got := none
			switch {
			case c.copyTo != nil && c.entry != nil:
				got = entry
				defer c.entry.Abort(nil)
			case c.copyTo != nil && c.u != nil:
				got = staging
			case c.copyTo != nil:
				t.Fatal("copying with neither an entry nor a session")
			}
			if got != tc.want {
				t.Fatalf("bytes go to the %s, want the %s", got, tc.want)
			}
			if dropped := held != nil && held.dropped; dropped != tc.wantDrop {
				t.Fatalf("session dropped = %v, want %v", dropped, tc.wantDrop)
			}
		})
	}
}

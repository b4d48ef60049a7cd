package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
)

// fakeBackend answers from a map of contents; streamed bodies can fail.
type fakeBackend struct {
	blobs     map[digest.Digest][]byte
	failAfter int // stream this many bytes then fail; 0: serve from a file
	dir       string
	lastReq   *Request
	tagsBody  string // upstream tags/list body; "": one tag, "a"
	failFirst error  // when set, a blob body's first Read fails with it
}

type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("upstream went away")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func (b *fakeBackend) Blob(_ context.Context, req *Request) (*Content, error) {
	b.lastReq = req
	data, ok := b.blobs[req.Dgst]
	if !ok {
		return nil, Errorf(CodeBlobUnknown, "blob unknown")
	}
	c := &Content{Dgst: req.Dgst, MediaType: "application/octet-stream", Size: int64(len(data))}
	if req.Head {
		return c, nil
	}
	if b.failAfter > 0 {
		c.Body = io.NopCloser(&failingReader{r: bytes.NewReader(data), n: b.failAfter})
		return c, nil
	}
	if b.failFirst != nil {
		c.Body = io.NopCloser(iotest.ErrReader(b.failFirst))
		return c, nil
	}
	path := filepath.Join(b.dir, req.Dgst.Encoded())
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	c.Body = f
	return c, nil
}

func (b *fakeBackend) Manifest(_ context.Context, req *Request) (*Content, error) {
	b.lastReq = req
	return nil, Errorf(CodeManifestUnknown, "manifest unknown")
}

func (b *fakeBackend) Tags(_ context.Context, name string, _ string) (*TagList, error) {
	if b.tagsBody != "" {
		return &TagList{Body: []byte(b.tagsBody), NextQuery: "last=a&n=1"}, nil
	}
	return &TagList{Body: []byte(`{"name":"` + name + `","tags":["a"]}`), NextQuery: "last=a&n=1"}, nil
}

func newTestServer(t *testing.T, b *fakeBackend) *httptest.Server {
	t.Helper()
	b.dir = t.TempDir()
	srv := httptest.NewServer(NewHandler(b, nil))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func errorCode(t *testing.T, body []byte) Code {
	t.Helper()
	code, _, ok := ParseErrorBody(body)
	if !ok {
		t.Fatalf("body is not an OCI error: %q", body)
	}
	return code
}

// wantAnswer fails t unless the answer has status and, when code is set,
// is an OCI error with that code, or else has the body want.
func wantAnswer(t *testing.T, resp *http.Response, body []byte, status int, code Code, want string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %q", resp.StatusCode, status, body)
	}
	if code != "" {
		if got := errorCode(t, body); got != code {
			t.Fatalf("code %s, want %s", got, code)
		}
	} else if string(body) != want {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func TestHandler(t *testing.T) {
	data := []byte("0123456789abcdefghij")
	dgst := digest.FromBytes(data)
	b := &fakeBackend{blobs: map[digest.Digest][]byte{dgst: data}}
	srv := newTestServer(t, b)
	blobURL := srv.URL + "/v2/team/app/blobs/" + dgst.String()

	tests := []struct {
		name       string
		method     string
		url        string
		hdr        map[string]string
		status     int
		body       string
		code       Code
		wantHeader map[string]string
	}{
		{name: "base", method: "GET", url: srv.URL + "/v2/", status: 200, body: "{}",
			wantHeader: map[string]string{"Docker-Distribution-Api-Version": "registry/2.0"}},
		{name: "blob", method: "GET", url: blobURL, status: 200, body: string(data),
			wantHeader: map[string]string{"Docker-Content-Digest": dgst.String(), "Content-Length": "20", "Etag": `"` + dgst.String() + `"`, "Content-Type": "application/octet-stream"}},
		{name: "blob head", method: "HEAD", url: blobURL, status: 200,
			wantHeader: map[string]string{"Content-Length": "20", "Docker-Content-Digest": dgst.String()}},
		{name: "range", method: "GET", url: blobURL, hdr: map[string]string{"Range": "bytes=2-5"}, status: 206, body: "2345",
			wantHeader: map[string]string{"Content-Range": "bytes 2-5/20"}},
		{name: "suffix range", method: "GET", url: blobURL, hdr: map[string]string{"Range": "bytes=-3"}, status: 206, body: "hij"},
		{name: "multi range serves whole", method: "GET", url: blobURL, hdr: map[string]string{"Range": "bytes=0-1,4-5"}, status: 200, body: string(data)},
		{name: "unsatisfiable range", method: "GET", url: blobURL, hdr: map[string]string{"Range": "bytes=20-"}, status: 416, code: CodeRangeInvalid,
			wantHeader: map[string]string{"Content-Range": "bytes */20"}},
		{name: "malformed range", method: "GET", url: blobURL, hdr: map[string]string{"Range": "bytes=x-y"}, status: 416, code: CodeRangeInvalid},
		{name: "if-none-match", method: "GET", url: blobURL, hdr: map[string]string{"If-None-Match": `"` + dgst.String() + `"`}, status: 304},
		{name: "unknown blob", method: "GET", url: srv.URL + "/v2/team/app/blobs/" + testDigest, status: 404, code: CodeBlobUnknown},
		{name: "bad digest", method: "GET", url: srv.URL + "/v2/team/app/blobs/sha256:nothex", status: 400, code: CodeDigestInvalid},
		{name: "bad name", method: "GET", url: srv.URL + "/v2/Team/App/manifests/latest", status: 400, code: CodeNameInvalid},
		{name: "manifest unknown", method: "GET", url: srv.URL + "/v2/team/app/manifests/latest", status: 404, code: CodeManifestUnknown},
		{name: "push refused", method: "PUT", url: srv.URL + "/v2/team/app/manifests/latest", status: 405, code: CodeUnsupported},
		{name: "upload refused", method: "POST", url: srv.URL + "/v2/team/app/blobs/uploads/", status: 405, code: CodeUnsupported},
		{name: "not registry path", method: "GET", url: srv.URL + "/etc/passwd", status: 404, code: CodeNameUnknown},
		{name: "tags", method: "GET", url: srv.URL + "/v2/team/app/tags/list?n=1", status: 200, body: `{"name":"team/app","tags":["a"]}`,
			wantHeader: map[string]string{"Link": "<" + srv.URL + `/v2/team/app/tags/list?last=a&n=1>; rel="next"`}},
		{name: "tags bad n", method: "GET", url: srv.URL + "/v2/team/app/tags/list?n=x", status: 400, code: CodePaginationNumber},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := do(t, tt.method, tt.url, tt.hdr)
			if err != nil {
				t.Fatal(err)
			}
			wantAnswer(t, resp, body, tt.status, tt.code, tt.body)
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestHandlerAcceptParsed(t *testing.T) {
	b := &fakeBackend{}
	srv := newTestServer(t, b)
	_, _, err := do(t, "GET", srv.URL+"/v2/a/manifests/v1", map[string]string{
		"Accept": "application/vnd.oci.image.index.v1+json;q=0.9, application/vnd.docker.distribution.manifest.v2+json",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
	if got := b.lastReq.Accept; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Accept = %q, want %q", got, want)
	}
}

// A body that fails mid-stream must reach the client as a failed
// transfer, never as a complete response.
func TestHandlerAbortsFailedStream(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1<<20)
	dgst := digest.FromBytes(data)
	b := &fakeBackend{blobs: map[digest.Digest][]byte{dgst: data}, failAfter: 1000}
	srv := newTestServer(t, b)
	resp, body, err := do(t, "GET", srv.URL+"/v2/a/blobs/"+dgst.String(), nil)
	if err == nil {
		t.Fatalf("transfer succeeded with status %d and %d bytes; want a failed transfer", resp.StatusCode, len(body))
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("client error: %v", err)
	}
}

// A body that fails before its first byte (a download that failed before
// any reached this client) is answered with an error status, never with a
// connection cut before the status line, which a client would retry blind.
func TestHandlerAnswersBodyFailingAtOnce(t *testing.T) {
	t.Parallel()
	data := []byte("a small blob")
	dgst := digest.FromBytes(data)
	tests := []struct {
		name   string
		err    error
		status int
		code   Code
	}{
		{name: "download failed", err: errors.New("digest mismatch"), status: 502, code: CodeUnavailable},
		{name: "backend's own answer", err: Errorf(CodeBlobUnknown, "gone"), status: 404, code: CodeBlobUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, &fakeBackend{blobs: map[digest.Digest][]byte{dgst: data}, failFirst: tt.err})
			resp, body, err := do(t, "GET", srv.URL+"/v2/a/blobs/"+dgst.String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			wantAnswer(t, resp, body, tt.status, tt.code, "")
			for _, h := range []string{"Docker-Content-Digest", "ETag", "Content-Range"} {
				if v := resp.Header.Get(h); v != "" {
					t.Errorf("error answer carries %s %q", h, v)
				}
			}
			if bytes.Contains(body, []byte("digest mismatch")) {
				t.Errorf("the internal cause reached the client: %s", body)
			}
		})
	}
}

func TestWriteErrorHidesInternalErrors(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, httptest.NewRequest("GET", "/v2/", nil), errors.New("open /secret/path: permission denied"))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "secret") {
		t.Fatalf("got %d %q", rec.Code, rec.Body.String())
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
}

// A tags/list page reaches the client as the spec words it, whatever the
// upstream sent: named as the client asked, tags always a list, n=0 empty
// and without Link, a body that is no tag list a 502.
func TestTagsListIsRewrittenForTheClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, upstream, query string
		status                int
		body                  string
		code                  Code
		link                  bool
	}{
		{name: "upstream name replaced", upstream: `{"name":"docker-hub/team/app","tags":["a"]}`, status: 200, body: `{"name":"team/app","tags":["a"]}`, link: true},
		{name: "null tags", upstream: `{"name":"team/app","tags":null}`, status: 200, body: `{"name":"team/app","tags":[]}`, link: true},
		{name: "no tags field", upstream: `{"name":"team/app"}`, status: 200, body: `{"name":"team/app","tags":[]}`, link: true},
		{name: "n zero", upstream: `{"name":"team/app","tags":["a"]}`, query: "?n=0", status: 200, body: `{"name":"team/app","tags":[]}`},
		{name: "not a tag list", upstream: `<html>`, status: 502, code: CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, &fakeBackend{tagsBody: tt.upstream})
			resp, body, err := do(t, "GET", srv.URL+"/v2/team/app/tags/list"+tt.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantAnswer(t, resp, body, tt.status, tt.code, tt.body)
			if tt.code != "" {
				return
			}
			if got := resp.Header.Get("Link") != ""; got != tt.link {
				t.Errorf("Link %q, want one: %v", resp.Header.Get("Link"), tt.link)
			}
		})
	}
}

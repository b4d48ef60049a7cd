package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// pushBackend records the pushes it gets and answers with resp.
type pushBackend struct {
	mu   sync.Mutex
	reqs []*PushRequest
	body []byte // the last request's body, read whole
	resp *PushResponse
}

func (b *pushBackend) Blob(context.Context, *Request) (*Content, error) {
	return nil, Errorf(CodeBlobUnknown, "blob unknown")
}

func (b *pushBackend) Manifest(context.Context, *Request) (*Content, error) {
	return nil, Errorf(CodeManifestUnknown, "manifest unknown")
}

func (b *pushBackend) Tags(context.Context, string, string) (*TagList, error) {
	return nil, Errorf(CodeNameUnknown, "repository unknown")
}

func (b *pushBackend) Push(_ context.Context, req *PushRequest) (*PushResponse, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reqs = append(b.reqs, req)
	b.body = body
	if b.resp != nil {
		return b.resp, nil
	}
	return &PushResponse{Status: http.StatusAccepted, Header: http.Header{}}, nil
}

func (b *pushBackend) last(t *testing.T) *PushRequest {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reqs) == 0 {
		t.Fatal("the backend got no push")
	}
	return b.reqs[len(b.reqs)-1]
}

func (b *pushBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

// send makes a request with a body (nil: none) and headers.
func send(t *testing.T, method, url string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// A transport of its own: httptest.Server.Close, which parallel tests
	// call, breaks http.DefaultTransport's idle connections.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 10 * time.Second}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// With push off, every write is 405 UNSUPPORTED naming the setting, and
// the backend never hears of it.
func TestPushOff(t *testing.T) {
	t.Parallel()
	b := &pushBackend{}
	srv := httptest.NewServer(NewHandler(b, nil))
	t.Cleanup(srv.Close)
	for _, tt := range []struct{ method, path string }{
		{"POST", "/v2/team/app/blobs/uploads/"},
		{"PATCH", "/v2/team/app/blobs/uploads/abc"},
		{"PUT", "/v2/team/app/blobs/uploads/abc?digest=" + testDigest},
		{"GET", "/v2/team/app/blobs/uploads/abc"},
		{"PUT", "/v2/team/app/manifests/v1"},
		{"DELETE", "/v2/team/app/manifests/v1"},
		{"DELETE", "/v2/team/app/blobs/" + testDigest},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			resp, body := send(t, tt.method, srv.URL+tt.path, strings.NewReader("data"), nil)
			code, msg, ok := ParseErrorBody(body)
			if resp.StatusCode != http.StatusMethodNotAllowed || !ok || code != CodeUnsupported || !strings.Contains(msg, "PUSH=true") {
				t.Fatalf("got %d %s %q, want 405 UNSUPPORTED naming PUSH", resp.StatusCode, code, msg)
			}
		})
	}
	if n := b.count(); n != 0 {
		t.Fatalf("the backend got %d pushes with push off", n)
	}
}

// With push on, what the registry package can check is refused before
// the backend is asked.
func TestPushValidation(t *testing.T) {
	t.Parallel()
	b := &pushBackend{}
	srv := httptest.NewServer(NewHandler(b, nil, WithPush(true)))
	t.Cleanup(srv.Close)
	uploads := srv.URL + "/v2/team/app/blobs/uploads/"
	manifestURL := srv.URL + "/v2/team/app/manifests/"
	json := map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
	big := `{"x":"` + strings.Repeat("a", MaxManifestSize) + `"}`
	tests := []struct {
		name, method, url string
		body              string
		hdr               map[string]string
		chunked           bool // send the body without a Content-Length
		status            int
		code              Code
		msg               string // the message contains it
	}{
		{name: "bad digest", method: "PUT", url: uploads + "abc?digest=sha256:nothex", status: 400, code: CodeDigestInvalid},
		{name: "md5 digest", method: "POST", url: uploads + "?digest=md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, code: CodeDigestInvalid},
		{name: "finish without digest", method: "PUT", url: uploads + "abc", status: 400, code: CodeDigestInvalid},
		{name: "bad mount", method: "POST", url: uploads + "?mount=sha256:abc&from=team/base", status: 400, code: CodeDigestInvalid},
		{name: "bad from", method: "POST", url: uploads + "?mount=" + testDigest + "&from=Team/Base", status: 400, code: CodeNameInvalid},
		{name: "bad upload id", method: "PATCH", url: uploads + "bad%20id", body: "x", status: 404, code: CodeBlobUploadUnknown},
		{name: "traversal in upload id", method: "PATCH", url: uploads + "..%2F..%2Fetc", body: "x", status: 400, code: CodeNameInvalid},
		{name: "PATCH without upload id", method: "PATCH", url: uploads, body: "x", status: 405, code: CodeUnsupported},
		{name: "POST with an upload id", method: "POST", url: uploads + "abc", status: 405, code: CodeUnsupported},
		{name: "bad Content-Range", method: "PATCH", url: uploads + "abc", body: "xyz", hdr: map[string]string{"Content-Range": "3-1"}, status: 416, code: CodeRangeInvalid},
		{name: "Content-Range and length disagree", method: "PATCH", url: uploads + "abc", body: "xyz", hdr: map[string]string{"Content-Range": "0-9"}, status: 416, code: CodeRangeInvalid},
		{name: "delete upload", method: "DELETE", url: uploads + "abc", status: 405, code: CodeUnsupported, msg: "cache"},
		{name: "delete manifest", method: "DELETE", url: manifestURL + "v1", status: 405, code: CodeUnsupported, msg: "cache"},
		{name: "PUT of a blob", method: "PUT", url: srv.URL + "/v2/team/app/blobs/" + testDigest, body: "x", status: 405, code: CodeUnsupported},
		{name: "manifest without Content-Type", method: "PUT", url: manifestURL + "v1", body: "{}", status: 400, code: CodeManifestInvalid},
		{name: "manifest with a bad Content-Type", method: "PUT", url: manifestURL + "v1", body: "{}", hdr: map[string]string{"Content-Type": "a/b; ="}, status: 400, code: CodeManifestInvalid},
		// Expect: the answer comes before the body is sent, which the
		// handler refuses to read; the connection is closed after it.
		{name: "manifest too large", method: "PUT", url: manifestURL + "v1", body: big, status: 413, code: CodeManifestInvalid,
			hdr: map[string]string{"Content-Type": json["Content-Type"], "Expect": "100-continue"}},
		{name: "manifest too large, chunked", method: "PUT", url: manifestURL + "v1", body: big, hdr: json, chunked: true, status: 413, code: CodeManifestInvalid},
		{name: "manifest not JSON", method: "PUT", url: manifestURL + "v1", body: "{nope", hdr: json, status: 400, code: CodeManifestInvalid},
		{name: "manifest digest mismatch", method: "PUT", url: manifestURL + testDigest, body: "{}", hdr: json, status: 400, code: CodeDigestInvalid},
		{name: "bad tag", method: "PUT", url: manifestURL + ".v1", body: "{}", hdr: json, status: 400, code: CodeTagInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
				if tt.chunked {
					body = io.MultiReader(body) // hides the length
				}
			}
			resp, got := send(t, tt.method, tt.url, body, tt.hdr)
			code, msg, ok := ParseErrorBody(got)
			if resp.StatusCode != tt.status || !ok || code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Fatalf("got %d %s %q, want %d %s", resp.StatusCode, code, msg, tt.status, tt.code)
			}
		})
	}
	if n := b.count(); n != 0 {
		t.Fatalf("the backend got %d invalid pushes", n)
	}
}

// Valid pushes reach the backend with what it needs, bodies streamed, and
// its answer reaches the client with Location on the mirror.
func TestPushForwarded(t *testing.T) {
	t.Parallel()
	dgst := digest.FromString("blob")
	manifest := []byte(`{"schemaVersion":2}`)
	mdgst := digest.FromBytes(manifest)
	tests := []struct {
		name, method, path string
		body               []byte
		hdr                map[string]string
		resp               *PushResponse
		want               PushRequest // Body and Header checked apart
		wantHeader         map[string]string
	}{
		{
			name: "start", method: "POST", path: "/v2/team/app/blobs/uploads/",
			hdr:        map[string]string{"Content-Type": "application/json", "Authorization": "Basic c2VjcmV0"},
			resp:       &PushResponse{Status: 202, Header: http.Header{"Location": {"/v2/team/app/blobs/uploads/u-1"}, "Range": {"0-0"}}},
			want:       PushRequest{Method: "POST", Kind: KindUpload, Name: "team/app", Path: "blobs/uploads/"},
			wantHeader: map[string]string{"Location": "{srv}/v2/team/app/blobs/uploads/u-1", "Range": "0-0", "Content-Length": "0"},
		},
		{
			name: "mount", method: "POST", path: "/v2/team/app/blobs/uploads/?mount=" + dgst.String() + "&from=team/base",
			resp: &PushResponse{Status: 201, Header: http.Header{"Location": {"/v2/team/app/blobs/" + dgst.String()}}},
			want: PushRequest{Method: "POST", Kind: KindUpload, Name: "team/app", Path: "blobs/uploads/", Mount: dgst, From: "team/base",
				RawQuery: "mount=" + dgst.String() + "&from=team/base"},
			wantHeader: map[string]string{"Location": "{srv}/v2/team/app/blobs/" + dgst.String()},
		},
		{
			name: "chunk", method: "PATCH", path: "/v2/team/app/blobs/uploads/u-1?_state=abc", body: []byte("0123456789"),
			hdr:  map[string]string{"Content-Range": "10-19", "Content-Type": "application/octet-stream"},
			resp: &PushResponse{Status: 202, Header: http.Header{"Location": {"/v2/team/app/blobs/uploads/u-1?_state=def"}, "Range": {"0-19"}}},
			want: PushRequest{Method: "PATCH", Kind: KindUpload, Name: "team/app", Path: "blobs/uploads/u-1", UploadID: "u-1",
				RawQuery: "_state=abc", Chunk: &Span{Start: 10, Length: 10}, ContentLength: 10},
			wantHeader: map[string]string{"Location": "{srv}/v2/team/app/blobs/uploads/u-1?_state=def", "Range": "0-19"},
		},
		{
			name: "finish", method: "PUT", path: "/v2/team/app/blobs/uploads/u-1?digest=" + dgst.String(),
			resp: &PushResponse{Status: 201, Header: http.Header{"Location": {"/v2/team/app/blobs/" + dgst.String()}, "Docker-Content-Digest": {dgst.String()}}},
			want: PushRequest{Method: "PUT", Kind: KindUpload, Name: "team/app", Path: "blobs/uploads/u-1", UploadID: "u-1",
				Dgst: dgst, RawQuery: "digest=" + dgst.String()},
			wantHeader: map[string]string{"Docker-Content-Digest": dgst.String()},
		},
		{
			name: "status", method: "GET", path: "/v2/team/app/blobs/uploads/u-1",
			resp: &PushResponse{Status: 204, Header: http.Header{"Range": {"0-19"}}},
			want: PushRequest{Method: "GET", Kind: KindUpload, Name: "team/app", Path: "blobs/uploads/u-1", UploadID: "u-1"},
		},
		{
			name: "manifest", method: "PUT", path: "/v2/team/app/manifests/" + mdgst.String(), body: manifest,
			hdr:  map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
			resp: &PushResponse{Status: 201, Header: http.Header{"Location": {"/v2/team/app/manifests/" + mdgst.String()}}},
			want: PushRequest{Method: "PUT", Kind: KindManifest, Name: "team/app", Path: "manifests/" + mdgst.String(), Dgst: mdgst,
				ContentLength: int64(len(manifest)), Manifest: manifest},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := &pushBackend{resp: tt.resp}
			srv := httptest.NewServer(NewHandler(b, nil, WithPush(true)))
			t.Cleanup(srv.Close)
			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
			}
			resp, _ := send(t, tt.method, srv.URL+tt.path, body, tt.hdr)
			if resp.StatusCode != tt.resp.Status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.resp.Status)
			}
			got := b.last(t)
			if got.Kind == KindUpload && tt.body != nil && !bytes.Equal(b.body, tt.body) {
				t.Errorf("body %q, want %q", b.body, tt.body)
			}
			if got.Header.Get("Authorization") != "" {
				t.Error("the client's Authorization reached the backend")
			}
			if ct := tt.hdr["Content-Type"]; got.Header.Get("Content-Type") != ct {
				t.Errorf("Content-Type %q, want %q", got.Header.Get("Content-Type"), ct)
			}
			if g, w := describe(got), describe(&tt.want); g != w {
				t.Errorf("request\n got %s\nwant %s", g, w)
			}
			for k, v := range tt.wantHeader {
				v = strings.ReplaceAll(v, "{srv}", srv.URL)
				if resp.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, resp.Header.Get(k), v)
				}
			}
		})
	}
}

// describe renders the fields of a PushRequest a test compares.
func describe(r *PushRequest) string {
	chunk := "-"
	if r.Chunk != nil {
		chunk = fmt.Sprintf("%d+%d", r.Chunk.Start, r.Chunk.Length)
	}
	return fmt.Sprintf("%s %s name=%s path=%s id=%s digest=%s tag=%s mount=%s from=%s query=%s chunk=%s length=%d manifest=%q",
		r.Method, r.Kind, r.Name, r.Path, r.UploadID, r.Dgst, r.Tag, r.Mount, r.From, r.RawQuery, chunk, r.ContentLength, r.Manifest)
}

// With a namespace mapping, the backend gets the ECR repository and the
// client gets Locations under its own name, its ns kept.
func TestPushNamespaces(t *testing.T) {
	t.Parallel()
	ns, err := NewNamespaces(map[string]string{"docker.io": "docker-hub"}, "ecr.example")
	if err != nil {
		t.Fatal(err)
	}
	b := &pushBackend{resp: &PushResponse{Status: 202, Header: http.Header{
		"Location": {"/v2/docker-hub/library/nginx/blobs/uploads/u-1?_state=x"}}}}
	srv := httptest.NewServer(NewHandler(b, nil, WithPush(true), WithNamespaces(ns, "")))
	t.Cleanup(srv.Close)
	resp, _ := send(t, "POST", srv.URL+"/v2/nginx/blobs/uploads/?ns=docker.io&mount="+testDigest+"&from=busybox", nil, nil)
	if resp.StatusCode != 202 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := b.last(t)
	if got.Name != "docker-hub/library/nginx" || got.From != "docker-hub/library/busybox" || strings.Contains(got.RawQuery, "ns=") ||
		!strings.Contains(got.RawQuery, "from=docker-hub%2Flibrary%2Fbusybox") {
		t.Fatalf("backend got name %q from %q query %q", got.Name, got.From, got.RawQuery)
	}
	want := srv.URL + "/v2/nginx/blobs/uploads/u-1?_state=x&ns=docker.io"
	if loc := resp.Header.Get("Location"); loc != want {
		t.Fatalf("Location %q, want %q", loc, want)
	}
	// The next request, as the client makes it, reaches the same upload.
	resp, _ = send(t, "PATCH", want, strings.NewReader("abc"), nil)
	if got := b.last(t); resp.StatusCode != 202 || got.Name != "docker-hub/library/nginx" || got.UploadID != "u-1" || got.RawQuery != "_state=x" {
		t.Fatalf("PATCH: %d, backend got %s", resp.StatusCode, describe(got))
	}
}

// A backend answer with a Location that is not a path on the upstream
// never reaches the client.
func TestPushForeignLocationRefused(t *testing.T) {
	t.Parallel()
	for _, loc := range []string{"https://s3.example/bucket/x?X-Amz-Signature=s", "//other.example/v2/x", "blobs/uploads/x"} {
		b := &pushBackend{resp: &PushResponse{Status: 202, Header: http.Header{"Location": {loc}}}}
		srv := httptest.NewServer(NewHandler(b, nil, WithPush(true)))
		resp, body := send(t, "POST", srv.URL+"/v2/team/app/blobs/uploads/", nil, nil)
		srv.Close()
		if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(body), loc) || resp.Header.Get("Location") != "" {
			t.Errorf("Location %q: got %d %q, Location %q", loc, resp.StatusCode, body, resp.Header.Get("Location"))
		}
	}
}

// Push on with a backend that cannot push: 405, not a crash.
func TestPushBackendWithoutPusher(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(NewHandler(&fakeBackend{}, nil, WithPush(true)))
	t.Cleanup(srv.Close)
	resp, body := send(t, "POST", srv.URL+"/v2/team/app/blobs/uploads/", nil, nil)
	if code, _, _ := ParseErrorBody(body); resp.StatusCode != 405 || code != CodeUnsupported {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
}

// Existence checks (HEAD of a blob or of a manifest by digest) are the
// Pusher's with push on: pushHead says so, and serveWrite passes them.
func TestPushHead(t *testing.T) {
	t.Parallel()
	dgst := digest.Digest(testDigest)
	b := &pushBackend{resp: &PushResponse{Status: 200, Header: http.Header{"Content-Length": {"42"}, "Docker-Content-Digest": {testDigest}}}}
	on := NewHandler(b, nil, WithPush(true))
	off := NewHandler(b, nil)
	tests := []struct {
		h      *Handler
		method string
		route  Route
		want   bool
	}{
		{on, "HEAD", Route{Kind: KindBlob, Name: "a", Dgst: dgst}, true},
		{on, "HEAD", Route{Kind: KindManifest, Name: "a", Dgst: dgst}, true},
		{on, "HEAD", Route{Kind: KindManifest, Name: "a", Tag: "v1"}, false}, // tags are revalidated upstream anyway
		{on, "GET", Route{Kind: KindBlob, Name: "a", Dgst: dgst}, false},
		{off, "HEAD", Route{Kind: KindBlob, Name: "a", Dgst: dgst}, false},
		{NewHandler(&fakeBackend{}, nil, WithPush(true)), "HEAD", Route{Kind: KindBlob, Name: "a", Dgst: dgst}, false},
	}
	for _, tt := range tests {
		if got := tt.h.pushHead(httptest.NewRequest(tt.method, "/v2/a/blobs/"+testDigest, nil), tt.route, tt.h.backend); got != tt.want {
			t.Errorf("pushHead(%s %v, push %v) = %v, want %v", tt.method, tt.route, tt.h.opts.push, got, tt.want)
		}
	}
	rec := &recorder{ResponseWriter: httptest.NewRecorder()}
	r := httptest.NewRequest("HEAD", "/v2/team/app/blobs/"+testDigest, nil)
	if err := on.serveWrite(rec, r, Route{Kind: KindBlob, Name: "team/app", Dgst: dgst}); err != nil {
		t.Fatal(err)
	}
	got := b.last(t)
	if got.Kind != KindBlob || got.Method != "HEAD" || got.Dgst != dgst || got.Path != "blobs/"+testDigest || got.Name != "team/app" {
		t.Fatalf("backend got %s", describe(got))
	}
	if res := rec.ResponseWriter.(*httptest.ResponseRecorder); res.Code != 200 || res.Header().Get("Content-Length") != "42" {
		t.Fatalf("answered %d, Content-Length %q", res.Code, res.Header().Get("Content-Length"))
	}
}

// A chunk reaches the backend while the client is still sending it: the
// handler streams upload bodies.
func TestPushBodyStreams(t *testing.T) {
	t.Parallel()
	first := make(chan struct{})
	b := &streamBackend{first: first}
	srv := httptest.NewServer(NewHandler(b, nil, WithPush(true)))
	t.Cleanup(srv.Close)
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("first"))
		<-first // the backend has read it: only then send the rest
		pw.Write([]byte(" and the rest"))
		pw.Close()
	}()
	resp, _ := send(t, "PATCH", srv.URL+"/v2/team/app/blobs/uploads/u-1", pr, nil)
	if resp.StatusCode != 202 || b.got != "first and the rest" {
		t.Fatalf("status %d, backend read %q", resp.StatusCode, b.got)
	}
}

// streamBackend reads a push body, telling when its first bytes came.
type streamBackend struct {
	pushBackend
	first chan struct{}
	got   string
}

func (b *streamBackend) Push(_ context.Context, req *PushRequest) (*PushResponse, error) {
	if req.ContentLength != -1 {
		return nil, Errorf(CodeUnknown, "want a chunked body, got length %d", req.ContentLength)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(req.Body, buf); err != nil {
		return nil, err
	}
	close(b.first)
	rest, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	b.got = string(buf) + string(rest)
	return &PushResponse{Status: 202, Header: http.Header{}}, nil
}

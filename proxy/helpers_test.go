package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

func TestNextQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, link, want string
	}{
		{name: "absolute", link: `<https://r.example/v2/team/app/tags/list?last=b&n=2>; rel="next"`, want: "last=b&n=2"},
		{name: "relative", link: `</v2/team/app/tags/list?n=1&last=x>; rel="next"`, want: "n=1&last=x"},
		{name: "escaped query kept raw", link: `</v2/a/tags/list?last=v1.0%2Bb&n=5>; rel="next"`, want: "last=v1.0%2Bb&n=5"},
		{name: "next after prev", link: `<https://r/v2/a/tags/list?last=a>; rel="prev", <https://r/v2/a/tags/list?last=c&n=2>; rel="next"`, want: "last=c&n=2"},
		{name: "next before prev", link: `<https://r/v2/a/tags/list?last=c>; rel="next", <https://r/v2/a/tags/list?last=a>; rel="prev"`, want: "last=c"},
		{name: "more params", link: `<https://r/v2/a/tags/list?last=c>; type="application/json"; rel="next"`, want: "last=c"},
		{name: "spaces", link: `  <https://r/v2/a/tags/list?last=c>  ;  rel="next"  `, want: "last=c"},
		{name: "no next", link: `<https://r/v2/a/tags/list?last=a>; rel="prev"`, want: ""},
		{name: "next without query", link: `<https://r/v2/a/tags/list>; rel="next"`, want: ""},
		{name: "empty", link: "", want: ""},
		{name: "no params", link: "<https://r/v2/a/tags/list?last=c>", want: ""},
		{name: "garbage", link: "garbage;;,,<<>>", want: ""},
		{name: "unparseable URL", link: `<:nope?last=c>; rel="next"`, want: ""},
		{name: "bad escape", link: `<https://r/%zz?last=c>; rel="next"`, want: ""},
		{name: "unparseable then good", link: `<:nope?last=a>; rel="next", <https://r/v2/a/tags/list?last=c>; rel="next"`, want: "last=c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := nextQuery(tt.link); got != tt.want {
				t.Errorf("nextQuery(%q) = %q, want %q", tt.link, got, tt.want)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in         string
		start, len int64
		size       int64
		wantErr    bool
	}{
		{in: "bytes 0-99/1000", start: 0, len: 100, size: 1000},
		{in: "bytes 999-999/1000", start: 999, len: 1, size: 1000},
		{in: "bytes 100-199/*", start: 100, len: 100, size: -1},
		{in: "bytes 0-0/1", start: 0, len: 1, size: 1},
		{in: "bytes */1000", wantErr: true}, // the 416 form: no range
		{in: "bytes 5-2/10", wantErr: true},
		{in: "bytes -1-5/10", wantErr: true},
		{in: "bytes a-b/10", wantErr: true},
		{in: "bytes 0-99", wantErr: true},
		{in: "bytes 0/100", wantErr: true},
		{in: "bytes=0-99/100", wantErr: true},
		{in: "items 0-99/100", wantErr: true},
		{in: "0-99/100", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			span, size, err := parseContentRange(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseContentRange(%q) = %+v, %d, nil; want an error", tt.in, span, size)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseContentRange(%q): %v", tt.in, err)
			}
			if want := (registry.Span{Start: tt.start, Length: tt.len}); span != want || size != tt.size {
				t.Errorf("parseContentRange(%q) = %+v, %d; want %+v, %d", tt.in, span, size, want, tt.size)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{
			in:   "https://bucket.s3.amazonaws.com/sha256/abc?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIA%2F20260101&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok",
			want: "https://bucket.s3.amazonaws.com/sha256/abc",
		},
		{in: "https://user:secret@r.example:8443/v2/a/blobs/x?q=1#frag", want: "https://r.example:8443/v2/a/blobs/x"},
		{in: "https://user@r.example/p", want: "https://r.example/p"},
		{in: "http://127.0.0.1:5000/v2/", want: "http://127.0.0.1:5000/v2/"},
		{in: "https://r.example/a%20b?x=y", want: "https://r.example/a%20b"},
		{in: "::not a url", want: "(unparseable URL)"},
		{in: "https://r.example/%zz?X-Amz-Signature=s", want: "(unparseable URL)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got := redactURL(tt.in)
			if got != tt.want {
				t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
			for _, secret := range []string{"X-Amz", "secret", "deadbeef"} {
				if strings.Contains(got, secret) {
					t.Errorf("redactURL(%q) = %q keeps %q", tt.in, got, secret)
				}
			}
		})
	}
}

func TestStatusError(t *testing.T) {
	t.Parallel()
	oci := func(code, msg string) string {
		return fmt.Sprintf(`{"errors":[{"code":%q,"message":%q}]}`, code, msg)
	}
	tests := []struct {
		name       string
		status     int
		kind       kind
		header     http.Header
		body       string
		wantStatus int
		wantCode   registry.Code
		wantMsg    []string // the message contains each
		retryAfter string
	}{
		{name: "401 bare", status: 401, kind: "blob", wantStatus: 403, wantCode: registry.CodeDenied, wantMsg: []string{"(401)"}},
		{name: "401 OCI", status: 401, kind: "manifest", body: oci("UNAUTHORIZED", "Not Authorized"), wantStatus: 403, wantCode: registry.CodeDenied, wantMsg: []string{"(401)"}},
		{name: "403 bare", status: 403, kind: "blob", wantStatus: 403, wantCode: registry.CodeDenied, wantMsg: []string{"(403)"}},
		{name: "403 OCI", status: 403, kind: "manifest", body: oci("DENIED", "User is not authorized to perform ecr:BatchGetImage"), wantStatus: 403, wantCode: registry.CodeDenied, wantMsg: []string{"(403)"}},
		{name: "404 blob bare", status: 404, kind: "blob", wantStatus: 404, wantCode: registry.CodeBlobUnknown, wantMsg: []string{"not found upstream"}},
		{name: "404 manifest bare", status: 404, kind: "manifest", wantStatus: 404, wantCode: registry.CodeManifestUnknown},
		{name: "404 tags bare", status: 404, kind: "tags", wantStatus: 404, wantCode: registry.CodeNameUnknown},
		{name: "404 non-OCI body", status: 404, kind: "blob", body: "<Error><Code>NoSuchKey</Code></Error>", wantStatus: 404, wantCode: registry.CodeBlobUnknown},
		{name: "404 OCI passed on", status: 404, kind: "manifest", body: oci("NAME_UNKNOWN", "The repository with name 'x' does not exist"), wantStatus: 404, wantCode: registry.CodeNameUnknown, wantMsg: []string{"does not exist"}},
		{name: "429 with Retry-After", status: 429, kind: "blob", header: http.Header{"Retry-After": {"30"}}, body: oci("TOOMANYREQUESTS", "Rate exceeded"), wantStatus: 429, wantCode: registry.CodeTooManyRequests, wantMsg: []string{"Rate exceeded"}, retryAfter: "30"},
		{name: "429 bare", status: 429, kind: "manifest", wantStatus: 429, wantCode: registry.CodeTooManyRequests, wantMsg: []string{"Too Many Requests"}},
		{name: "400 OCI passed on", status: 400, kind: "manifest", body: oci("DIGEST_INVALID", "bad digest"), wantStatus: 400, wantCode: registry.CodeDigestInvalid, wantMsg: []string{"bad digest"}},
		{name: "400 bare", status: 400, kind: "blob", wantStatus: 502, wantCode: registry.CodeUnavailable, wantMsg: []string{"400"}},
		{name: "500 bare", status: 500, kind: "blob", wantStatus: 502, wantCode: registry.CodeUnavailable, wantMsg: []string{"answered 500", "Internal Server Error"}},
		{name: "500 OCI", status: 500, kind: "manifest", body: oci("UNKNOWN", "boom"), wantStatus: 502, wantCode: registry.CodeUnavailable, wantMsg: []string{"500", "boom"}},
		{name: "503 S3 XML", status: 503, kind: "blob", body: "<Error><Code>SlowDown</Code></Error>", wantStatus: 502, wantCode: registry.CodeUnavailable, wantMsg: []string{"503"}},
		{name: "504", status: 504, kind: "tags", wantStatus: 502, wantCode: registry.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := &http.Response{StatusCode: tt.status, Header: tt.header}
			if resp.Header == nil {
				resp.Header = http.Header{}
			}
			e := statusError(http.MethodGet, "team/app/blobs/sha256:x", tt.kind, resp, []byte(tt.body))
			if e.HTTPStatus() != tt.wantStatus || e.Code != tt.wantCode {
				t.Errorf("got %d %s (%q), want %d %s", e.HTTPStatus(), e.Code, e.Message, tt.wantStatus, tt.wantCode)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(e.Message, m) {
					t.Errorf("message %q does not contain %q", e.Message, m)
				}
			}
			if got := e.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
		})
	}
}

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestTransportError(t *testing.T) {
	t.Parallel()
	const presigned = "https://s3.example/bucket/sha256/abc?X-Amz-Credential=ASIA&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok"
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantMsg    string
	}{
		{name: "reset", err: &url.Error{Op: "Get", URL: presigned, Err: errors.New("connection reset by peer")}, wantStatus: 502, wantMsg: "unreachable"},
		{name: "timeout", err: &url.Error{Op: "Get", URL: presigned, Err: timeoutErr{}}, wantStatus: 504, wantMsg: "did not answer in time"},
		{name: "deadline", err: fmt.Errorf("reading body: %w", context.DeadlineExceeded), wantStatus: 504, wantMsg: "did not answer in time"},
		{name: "plain", err: errors.New("unexpected EOF"), wantStatus: 502, wantMsg: "unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := transportError(http.MethodGet, "team/app/blobs/sha256:abc", tt.err)
			var e *registry.Error
			if !errors.As(err, &e) {
				t.Fatalf("transportError returned %T %v, want *registry.Error", err, err)
			}
			if e.HTTPStatus() != tt.wantStatus || e.Code != registry.CodeUnavailable || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("got %d %s %q, want %d UNAVAILABLE saying %q", e.HTTPStatus(), e.Code, e.Message, tt.wantStatus, tt.wantMsg)
			}
			for _, secret := range []string{"X-Amz", "deadbeef"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q leaks %q", err, secret)
				}
			}
		})
	}

	// A canceled request is not an upstream failure: callers must still
	// see context.Canceled.
	canceled := &url.Error{Op: "Get", URL: "https://r.example/v2/", Err: context.Canceled}
	if err := transportError(http.MethodGet, "x", canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("transportError(canceled) = %v, want it to wrap context.Canceled", err)
	}
}

// memShared is an in-memory shared blob tier whose reads and writes can
// be made to fail.
type memShared struct {
	mu      sync.Mutex
	objects map[digest.Digest][]byte
	openErr error // returned by Open when set
	// sizeUnknown: Open says -1 for the size, as for an object sent
	// without Content-Length.
	sizeUnknown bool
	putErr      error // returned by Put when set
	delErr      error // returned by Delete when set (nothing deleted)
	opens       int
	puts        int
	deletes     []digest.Digest
	putTypes    map[digest.Digest]string
}

func newMemShared() *memShared {
	return &memShared{objects: map[digest.Digest][]byte{}, putTypes: map[digest.Digest]string{}}
}

// ctxBody is a body that fails once its request's context is done, as
// an object store's response body does.
type ctxBody struct {
	ctx context.Context
	r   io.Reader
}

func (b ctxBody) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	return b.r.Read(p)
}

func (b ctxBody) Close() error { return nil }

func (m *memShared) Open(ctx context.Context, dgst digest.Digest) (*sharedstore.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opens++
	if m.openErr != nil {
		return nil, m.openErr
	}
	b, ok := m.objects[dgst]
	if !ok {
		return nil, fmt.Errorf("s3://mem/%s: %w", dgst, sharedstore.ErrNotFound)
	}
	size := int64(len(b))
	if m.sizeUnknown {
		size = -1
	}
	return &sharedstore.Object{Body: ctxBody{ctx: ctx, r: bytes.NewReader(b)}, Size: size, MediaType: m.putTypes[dgst]}, nil
}

func (m *memShared) Put(_ context.Context, dgst digest.Digest, size int64, mediaType string, r io.ReaderAt) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts++
	if m.putErr != nil {
		return m.putErr
	}
	b := make([]byte, size)
	if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	m.objects[dgst], m.putTypes[dgst] = b, mediaType
	return nil
}

func (m *memShared) Delete(_ context.Context, dgst digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deletes = append(m.deletes, dgst)
	if m.delErr != nil {
		return m.delErr
	}
	delete(m.objects, dgst)
	return nil
}

// opened is how many times Open was called.
func (m *memShared) opened() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.opens
}

// object returns the tier's bytes for dgst (nil: none).
func (m *memShared) object(dgst digest.Digest) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.objects[dgst]
}

// memMeta is a shared tier in memory that shares metadata too
// (SharedMeta): links, tag records and referrers records.
type memMeta struct {
	*memShared
	links     map[string]bool // registry/name@digest
	tags      map[string]sharedstore.TagRecord
	referrers map[string]sharedstore.ReferrersRecord
	tagPuts   int
	getTagErr error // returned by GetTag when set
}

func newMemMeta() *memMeta {
	return &memMeta{memShared: newMemShared(), links: map[string]bool{}, tags: map[string]sharedstore.TagRecord{},
		referrers: map[string]sharedstore.ReferrersRecord{}}
}

func memTagKey(repo sharedstore.Repo, tag, accept string) string {
	return repo.Registry + "/" + repo.Name + ":" + tag + " " + accept
}

func (m *memMeta) PutLink(_ context.Context, repo sharedstore.Repo, dgst digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.links[repo.Registry+"/"+repo.Name+"@"+dgst.String()] = true
	return nil
}

func (m *memMeta) Linked(_ context.Context, repo sharedstore.Repo, dgst digest.Digest) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.links[repo.Registry+"/"+repo.Name+"@"+dgst.String()], nil
}

func (m *memMeta) PutTag(_ context.Context, repo sharedstore.Repo, tag, accept string, rec sharedstore.TagRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tagPuts++
	m.tags[memTagKey(repo, tag, accept)] = rec
	return nil
}

func (m *memMeta) GetTag(_ context.Context, repo sharedstore.Repo, tag, accept string) (sharedstore.TagRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.getTagErr != nil {
		return sharedstore.TagRecord{}, m.getTagErr
	}
	rec, ok := m.tags[memTagKey(repo, tag, accept)]
	if !ok {
		return rec, fmt.Errorf("%s:%s: %w", repo.Name, tag, sharedstore.ErrNotFound)
	}
	return rec, nil
}

func (m *memMeta) PutReferrers(_ context.Context, k sharedstore.ReferrersKey, rec sharedstore.ReferrersRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.referrers[fmt.Sprint(k)] = rec
	return nil
}

func (m *memMeta) GetReferrers(_ context.Context, k sharedstore.ReferrersKey) (sharedstore.ReferrersRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.referrers[fmt.Sprint(k)]
	if !ok {
		return rec, fmt.Errorf("%v: %w", k, sharedstore.ErrNotFound)
	}
	return rec, nil
}

// tagPutCount is how many tag records were written.
func (m *memMeta) tagPutCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tagPuts
}

// onlyTag is the one tag record the tier holds.
func (m *memMeta) onlyTag(t *testing.T) sharedstore.TagRecord {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.tags) != 1 {
		t.Fatalf("the tier holds %d tag records, want 1", len(m.tags))
	}
	for _, rec := range m.tags {
		return rec
	}
	return sharedstore.TagRecord{}
}

// setTag puts rec as the only tag record of the main test repository's
// team/app:v1, for accept, under host.
func (m *memMeta) setTag(host, accept string, rec sharedstore.TagRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tags[memTagKey(sharedstore.Repo{Registry: host, Name: "team/app"}, "v1", accept)] = rec
}

// memPeers stands for the other replicas: the owner's answers by digest,
// which can be made to fail, to be cut short or to be wrong.
type memPeers struct {
	mu        sync.Mutex
	content   map[digest.Digest][]byte
	mediaType string
	err       error         // returned by Fetch when set
	cutAt     int           // > 0: the body fails after this many bytes
	fetched   func()        // when set, called on each Fetch (the owner acting meanwhile)
	block     chan struct{} // when set, Fetch waits until it is closed
	asked     []PeerRequest
}

func newMemPeers() *memPeers { return &memPeers{content: map[digest.Digest][]byte{}} }

func (m *memPeers) Fetch(ctx context.Context, req PeerRequest) (*PeerContent, error) {
	if m.block != nil {
		select {
		case <-m.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked = append(m.asked, req)
	if m.fetched != nil {
		m.fetched()
	}
	if m.err != nil {
		return nil, m.err
	}
	b, ok := m.content[req.Dgst]
	if !ok {
		return nil, fmt.Errorf("peer answered 404 for %s", req.Dgst)
	}
	var body io.Reader = bytes.NewReader(b)
	if m.cutAt > 0 {
		body = io.MultiReader(bytes.NewReader(b[:m.cutAt]), errReader{errors.New("connection reset by peer")})
	}
	return &PeerContent{Body: io.NopCloser(body), Size: int64(len(b)), MediaType: m.mediaType}, nil
}

// requests returns what the peers were asked.
func (m *memPeers) requests() []PeerRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]PeerRequest(nil), m.asked...)
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

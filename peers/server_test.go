package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

const testRegistry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"

// stubBackend serves content by digest in one repository and records
// the requests it got, and whether each was marked as a peer's.
type stubBackend struct {
	mu      sync.Mutex
	repo    string
	content map[digest.Digest][]byte
	cutAt   int // > 0: bodies fail after this many bytes
	// hold, when set with cutAt, makes bodies wait on it after cutAt
	// bytes instead of failing: an owner that sends nothing more.
	hold     chan struct{}
	requests []*registry.Request
	peer     []bool
}

func (b *stubBackend) serve(ctx context.Context, req *registry.Request, mediaType string) (*registry.Content, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = append(b.requests, req)
	b.peer = append(b.peer, proxy.IsPeerRequest(ctx))
	data, ok := b.content[req.Dgst]
	if !ok || req.Name != b.repo {
		return nil, registry.Errorf(registry.CodeBlobUnknown, "blob unknown to registry")
	}
	c := &registry.Content{Dgst: req.Dgst, MediaType: mediaType, Size: int64(len(data)), Outcome: "hit"}
	var body io.Reader = bytes.NewReader(data)
	if b.cutAt > 0 {
		body = io.MultiReader(bytes.NewReader(data[:b.cutAt]), errorReader{hold: b.hold})
	}
	if !req.Head {
		c.Body = io.NopCloser(body)
	}
	return c, nil
}

// errorReader fails, once hold (if any) is closed.
type errorReader struct{ hold chan struct{} }

func (r errorReader) Read([]byte) (int, error) {
	if r.hold != nil {
		<-r.hold
	}
	return 0, errors.New("upstream reset")
}

func (b *stubBackend) Blob(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	return b.serve(ctx, req, "application/octet-stream")
}

func (b *stubBackend) Manifest(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	return b.serve(ctx, req, "application/vnd.oci.image.manifest.v1+json")
}

func (b *stubBackend) Tags(context.Context, string, string) (*registry.TagList, error) {
	return nil, errors.New("not for peers")
}

func (b *stubBackend) calls() (n int, allPeer bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	allPeer = true
	for _, p := range b.peer {
		allPeer = allPeer && p
	}
	return len(b.requests), allPeer
}

// startOwner serves the peer API over a stub backend holding data.
func startOwner(t *testing.T, data []byte) (*httptest.Server, *stubBackend, digest.Digest) {
	t.Helper()
	dgst := digest.FromBytes(data)
	b := &stubBackend{repo: "team/app", content: map[digest.Digest][]byte{dgst: data}}
	srv := httptest.NewServer(NewServer(NewSigner(testSecret, nil), map[string]registry.Backend{testRegistry: b}, nil))
	t.Cleanup(srv.Close)
	return srv, b, dgst
}

// Unsigned or wrongly signed requests get 401 UNAUTHORIZED and reach no
// proxy; bad input gets 400 with an OCI error; a signed request is
// answered through the proxy, marked as a peer's.
func TestServerAnswersOnlySignedRequests(t *testing.T) {
	t.Parallel()
	data := testkit.RandomBytes(1, 10_000)
	srv, backend, dgst := startOwner(t, data)
	good := Path(proxy.PeerRequest{Registry: testRegistry, Repo: "team/app", Dgst: dgst})
	tests := []struct {
		name, method, path string
		signer             *Signer // nil: unsigned
		status             int
		code               registry.Code
	}{
		{name: "unsigned", method: http.MethodGet, path: good, status: 401, code: registry.CodeUnauthorized},
		{name: "another secret", method: http.MethodGet, path: good, signer: NewSigner("not-the-peer-secret!", nil), status: 401, code: registry.CodeUnauthorized},
		{name: "unsigned bad path", method: http.MethodGet, path: "/peer/v1/x", status: 401, code: registry.CodeUnauthorized},
		{name: "unknown registry", method: http.MethodGet, path: strings.Replace(good, testRegistry, "other.example", 1), signer: NewSigner(testSecret, nil), status: 400, code: registry.CodeNameInvalid},
		{name: "bad kind", method: http.MethodGet, path: strings.Replace(good, "/blobs/", "/tags/", 1), signer: NewSigner(testSecret, nil), status: 400, code: registry.CodeNameInvalid},
		{name: "bad digest", method: http.MethodGet, path: strings.Replace(good, dgst.String(), "sha256:abc", 1), signer: NewSigner(testSecret, nil), status: 400, code: registry.CodeDigestInvalid},
		{name: "bad repository", method: http.MethodGet, path: strings.Replace(good, "team/app", "Team/../app", 1), signer: NewSigner(testSecret, nil), status: 400, code: registry.CodeNameInvalid},
		{name: "short path", method: http.MethodGet, path: "/peer/v1/" + testRegistry + "/blobs", signer: NewSigner(testSecret, nil), status: 400, code: registry.CodeNameInvalid},
		{name: "POST", method: http.MethodPost, path: good, signer: NewSigner(testSecret, nil), status: 405, code: registry.CodeUnsupported},
		{name: "repository without it", method: http.MethodGet, path: strings.Replace(good, "team/app", "team/other", 1), signer: NewSigner(testSecret, nil), status: 404, code: registry.CodeBlobUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.signer != nil {
				tt.signer.Sign(req)
			}
			before, _ := backend.calls()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Errors []struct{ Code registry.Code }
			}
			if resp.StatusCode != tt.status || json.NewDecoder(resp.Body).Decode(&body) != nil || len(body.Errors) != 1 || body.Errors[0].Code != tt.code {
				t.Fatalf("%s %s: %d %+v, want %d %s", tt.method, tt.path, resp.StatusCode, body, tt.status, tt.code)
			}
			if after, _ := backend.calls(); tt.status != 404 && after != before {
				t.Errorf("the request reached the proxy")
			}
		})
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+good, nil)
	NewSigner(testSecret, nil).Sign(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, data) || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Fatalf("signed GET: %d, %d bytes, %v", resp.StatusCode, len(got), err)
	}
	if _, allPeer := backend.calls(); !allPeer {
		t.Error("a request reached the proxy without the peer mark: its download could ask another peer")
	}
}

// testClient is a Client whose members are owner and this replica,
// self, on 127.0.0.2 (never dialled).
func testClient(t *testing.T, owner string, observe func(string)) *Client {
	t.Helper()
	self := "127.0.0.2:1"
	m, err := NewMembers(t.Context(), MembersOptions{Spec: Spec{Static: []string{owner, self}}, Addr: self, LocalIPs: localIPs("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	return NewClient(ClientOptions{Members: m, Signer: NewSigner(testSecret, nil), Observe: observe})
}

// ownedBy returns data whose digest owner owns among owner and self.
func ownedBy(t *testing.T, c *Client, owner string, wantSelf bool) []byte {
	t.Helper()
	for i := range uint64(1000) {
		data := testkit.RandomBytes(100+i, 50_000)
		if o, self := c.members.Owner(digest.FromBytes(data)); self == wantSelf && (self || o == owner) {
			return data
		}
	}
	t.Fatal("no digest found with the wanted owner")
	return nil
}

// outcomes records what a Client observed.
type outcomes struct {
	mu  sync.Mutex
	got []string
}

func (o *outcomes) add(s string) { o.mu.Lock(); o.got = append(o.got, s); o.mu.Unlock() }
func (o *outcomes) list() string { o.mu.Lock(); defer o.mu.Unlock(); return strings.Join(o.got, ",") }

// The client fetches from the owner, never from itself, counts each
// outcome, and skips an owner that could not be reached.
func TestClientAsksTheOwner(t *testing.T) {
	t.Parallel()
	var data []byte
	b := &stubBackend{repo: "team/app", content: map[digest.Digest][]byte{}}
	srv := httptest.NewServer(NewServer(NewSigner(testSecret, nil), map[string]registry.Backend{testRegistry: b}, nil))
	t.Cleanup(srv.Close)
	owner := srv.Listener.Addr().String()
	var seen outcomes
	c := testClient(t, owner, seen.add)
	data = ownedBy(t, c, owner, false)
	dgst := digest.FromBytes(data)
	req := proxy.PeerRequest{Registry: testRegistry, Repo: "team/app", Dgst: dgst}

	if _, err := c.Fetch(t.Context(), req); err == nil {
		t.Fatal("fetched what the owner lacks")
	}
	b.mu.Lock()
	b.content[dgst] = data
	b.mu.Unlock()
	pc, err := c.Fetch(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(pc.Body)
	pc.Body.Close()
	if err != nil || !bytes.Equal(got, data) || pc.Size != int64(len(data)) || pc.MediaType != "application/octet-stream" {
		t.Fatalf("fetched %d bytes (%v), size %d, type %q", len(got), err, pc.Size, pc.MediaType)
	}
	b.mu.Lock()
	b.cutAt = 1000
	b.mu.Unlock()
	if pc, err = c.Fetch(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(pc.Body); err == nil {
		t.Fatal("a cut body read whole")
	}
	pc.Body.Close()

	mine := ownedBy(t, c, owner, true)
	if _, err := c.Fetch(t.Context(), proxy.PeerRequest{Registry: testRegistry, Repo: "team/app", Dgst: digest.FromBytes(mine)}); !errors.Is(err, proxy.ErrNoPeer) {
		t.Fatalf("fetching what this replica owns: %v, want ErrNoPeer", err)
	}
	if got := seen.list(); got != "not_found,ok,ok,cut" {
		t.Errorf("outcomes %s", got)
	}
	n, _ := b.calls()

	srv.Close() // the owner dies: refused, then skipped
	if _, err := c.Fetch(t.Context(), req); err == nil || errors.Is(err, proxy.ErrNoPeer) {
		t.Fatalf("fetching from a closed owner: %v", err)
	}
	if _, err := c.Fetch(t.Context(), req); !errors.Is(err, proxy.ErrNoPeer) {
		t.Fatalf("fetching again from an owner that just failed: %v, want ErrNoPeer (cooling off)", err)
	}
	if got := seen.list(); got != "not_found,ok,ok,cut,unreachable" {
		t.Errorf("outcomes %s", got)
	}
	if after, _ := b.calls(); after != n || n != 3 {
		t.Errorf("the owner served %d requests, then %d", n, after)
	}
}

// A replica that takes another member for itself and asks itself is
// answered 508 at once, not left waiting on its own download.
func TestServerRefusesItsOwnRequests(t *testing.T) {
	t.Parallel()
	data := testkit.RandomBytes(2, 1000)
	dgst := digest.FromBytes(data)
	b := &stubBackend{repo: "team/app", content: map[digest.Digest][]byte{dgst: data}}
	signer := NewSigner(testSecret, nil)
	srv := httptest.NewServer(NewServer(signer, map[string]registry.Backend{testRegistry: b}, nil))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+Path(proxy.PeerRequest{Registry: testRegistry, Repo: "team/app", Dgst: dgst}), nil)
	signer.Sign(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected {
		t.Errorf("status %d, want 508", resp.StatusCode)
	}
	if n, _ := b.calls(); n != 0 {
		t.Errorf("the request reached the proxy %d times", n)
	}
}

// An owner that sends its headers and then nothing more (wedged: its
// disk or its own download hung) is skipped for the cool-off once the
// asking replica gives up on the body (its stall timeout cancels the
// request), as an owner that does not answer is: it costs one stall, not
// one per miss it owns. A body the owner itself cuts (its upstream
// failed) does not make it cool off.
func TestOwnerWhoseBodyStallsCoolsOff(t *testing.T) {
	t.Parallel()
	b := &stubBackend{repo: "team/app", content: map[digest.Digest][]byte{}, cutAt: 1000, hold: make(chan struct{})}
	srv := httptest.NewServer(NewServer(NewSigner(testSecret, nil), map[string]registry.Backend{testRegistry: b}, nil))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(b.hold) }) // before srv.Close: its handlers end
	owner := srv.Listener.Addr().String()
	var seen outcomes
	c := testClient(t, owner, seen.add)
	data := ownedBy(t, c, owner, false)
	dgst := digest.FromBytes(data)
	b.mu.Lock()
	b.content[dgst] = data
	b.mu.Unlock()
	req := proxy.PeerRequest{Registry: testRegistry, Repo: "team/app", Dgst: dgst}

	ctx, cancel := context.WithCancel(t.Context())
	pc, err := c.Fetch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(pc.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	cancel() // the asking proxy's stall timeout
	if _, err := pc.Body.Read(make([]byte, 10)); err == nil {
		t.Fatal("a canceled body read on")
	}
	pc.Body.Close()
	if _, err := c.Fetch(t.Context(), req); !errors.Is(err, proxy.ErrNoPeer) {
		t.Fatalf("asking again an owner whose body stalled: %v, want ErrNoPeer (cooling off)", err)
	}
	if got := seen.list(); got != "ok,cut" {
		t.Errorf("outcomes %s, want ok,cut", got)
	}
}

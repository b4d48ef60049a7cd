package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Push pass-through.
//
// Every push request is sent on to ECR with the mirror's credentials, its
// body streamed, and ECR's answer comes back with its Location turned
// into a path on the upstream that the handler makes a URL on the mirror.
//
// Uploaded blobs are admitted to the cache as they pass, so that a pull
// right after a push is a hit. Their digest is known only at the PUT that
// ends an upload, while cache.Writer wants it up front; so the bytes of an
// upload session (POST, PATCHes, PUT) are copied, as the upstream request
// reads them, into a staging file of that session (unlinked at once: a
// crash leaves nothing behind), and the PUT that upstream answers 201
// copies the file into a cache.Writer whose Commit verifies the digest.
// When the digest is known while the bytes pass (a monolithic POST
// ?digest=, or a PUT that carries the whole blob) they go straight into a
// cache.Writer. Memory stays bounded either way: bodies stream, and only
// manifests (at most registry.MaxManifestSize) are held whole. Anything
// odd (a chunk out of order, two requests on one session at once, an
// upstream error, a staging write failing) ends the copy of that session;
// the push itself goes on, and nothing of it is admitted.

// Defaults of push pass-through.
const (
	// uploadIdle drops an upload session nobody has used for this long.
	uploadIdle = time.Hour
	// maxUploads caps the sessions tracked at once; past it, uploads
	// still pass through but are not admitted.
	maxUploads = 1024
	// teeSettle is how long a success waits for the upstream request to
	// finish reading the body it copied.
	teeSettle = 10 * time.Second
	// pushedBlobType is the media type recorded for pushed blobs, as a
	// blob GET from ECR answers.
	pushedBlobType = "application/octet-stream"
)

// pushHeaders are the upstream answer's headers a client gets.
var pushHeaders = []string{"Location", "Range", "Docker-Upload-UUID", "Docker-Content-Digest", "OCI-Chunk-Min-Length", "OCI-Subject"}

var _ registry.Pusher = (*Proxy)(nil)

// Push passes a push through to upstream: blob uploads (start, mount,
// chunks, finish, status), manifest PUTs, and existence checks.
func (p *Proxy) Push(ctx context.Context, req *registry.PushRequest) (*registry.PushResponse, error) {
	switch {
	case req.Method == http.MethodHead && (req.Kind == registry.KindBlob || req.Kind == registry.KindManifest):
		return p.pushHead(ctx, req)
	case req.Kind == registry.KindManifest && req.Method == http.MethodPut:
		return p.pushManifest(ctx, req)
	case req.Kind == registry.KindUpload:
		return p.pushUpload(ctx, req)
	}
	return nil, registry.Errorf(registry.CodeUnsupported, "%s on %s endpoints is not passed through", req.Method, req.Kind)
}

// pushHead asks upstream whether the repository holds a blob or a
// manifest: the cache cannot say, since it is shared by all repositories.
func (p *Proxy) pushHead(ctx context.Context, req *registry.PushRequest) (*registry.PushResponse, error) {
	kind, accept := "blob", http.Header(nil)
	if req.Kind == registry.KindManifest {
		kind, accept = "manifest", acceptHeader(nil)
	}
	c, err := p.head(ctx, req.Name, req.Name+"/"+req.Path, req.Dgst, kind, accept)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{"Docker-Content-Digest": {c.Dgst.String()}}
	if c.Size >= 0 {
		hdr.Set("Content-Length", strconv.FormatInt(c.Size, 10))
	}
	if c.MediaType != "" {
		hdr.Set("Content-Type", c.MediaType)
	}
	return &registry.PushResponse{Status: http.StatusOK, Header: hdr}, nil
}

// pushManifest passes a manifest PUT on and, once upstream has it,
// stores it under its digest. The body is in memory, so the request can
// be replayed when the auth transport refreshes an expired token.
func (p *Proxy) pushManifest(ctx context.Context, req *registry.PushRequest) (*registry.PushResponse, error) {
	path := req.Name + "/" + req.Path
	hdr := http.Header{"Content-Type": req.Header.Values("Content-Type")}
	resp, err := p.pushDo(ctx, http.MethodPut, path, req.RawQuery, hdr, bytes.NewReader(req.Manifest), int64(len(req.Manifest)), "manifest")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, pushError(resp, http.MethodPut, path, "manifest")
	}
	out, err := p.pushAnswer(resp, path)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusCreated {
		p.admitManifest(req, resp)
	}
	return out, nil
}

// admitManifest stores a manifest upstream accepted. A failure only costs
// a later download: the push has succeeded.
func (p *Proxy) admitManifest(req *registry.PushRequest, resp *http.Response) {
	dgst := digest.FromBytes(req.Manifest)
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != dgst.String() {
		p.log.Warn("upstream named another digest for a pushed manifest; not cached", "name", req.Name, "digest", dgst, "upstream_digest", h)
		return
	}
	mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	defer p.link(req.Name, dgst) // upstream holds it there now, and what it references
	if _, err := p.store.Stat(dgst); err == nil {
		// Stored already, perhaps as a blob pushed with the same bytes:
		// the manifest's type is the one this verified PUT declared.
		p.retype(dgst, mt)
		return
	}
	if err := p.store.Put(dgst, mt, req.Manifest); err != nil {
		p.log.Warn("caching pushed manifest failed", "name", req.Name, "digest", dgst, "error", err)
		return
	}
	p.log.Debug("pushed manifest cached", "name", req.Name, "digest", dgst, "bytes", len(req.Manifest))
}

// pushUpload passes one request of a blob upload on, copying its bytes
// toward the cache as they pass.
func (p *Proxy) pushUpload(ctx context.Context, req *registry.PushRequest) (*registry.PushResponse, error) {
	t := p.uploads()
	path := req.Name + "/" + req.Path
	var u *upload // this request's session, held until it returns
	if req.UploadID != "" {
		if u = t.acquire(path); u != nil {
			defer t.release(u)
		}
	}

	// Where the bytes passing are copied: a cache entry when their digest
	// is known now, else the session's staging file.
	var entry *cache.Writer
	var copyTo func([]byte) error
	switch {
	case req.Body == nil:
	case req.Dgst != "" && (req.Method == http.MethodPost || req.Method == http.MethodPut && u != nil && u.empty()):
		if entry = p.newEntry(req.Dgst, req.ContentLength); entry != nil {
			copyTo = func(b []byte) error { _, err := entry.Write(b); return err }
		}
	case u != nil && req.Method != http.MethodPost && (req.Chunk == nil || req.Chunk.Start == u.size):
		copyTo = u.stage
	case u != nil:
		t.drop(u) // a chunk that does not continue what was staged
		u = nil
	}
	var body io.Reader
	var tb *tee
	if req.Body != nil {
		tb = newTee(req.Body, copyTo)
		body = tb
	}
	abandon := func() {
		if tb != nil {
			tb.stop()
		}
		if entry != nil {
			entry.Abort(nil)
		}
		if u != nil {
			t.drop(u) // upstream's state is unknown now: stop copying
		}
	}

	resp, err := p.pushDo(ctx, req.Method, path, req.RawQuery, req.Header, body, req.ContentLength, "upload")
	if err != nil {
		abandon()
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		abandon()
		return nil, pushError(resp, req.Method, path, "upload")
	}
	out, err := p.pushAnswer(resp, path)
	if err != nil {
		abandon()
		return nil, err
	}
	var copied int64
	complete := tb == nil
	if tb != nil {
		copied, complete = tb.finish(ctx)
	}
	created := resp.StatusCode == http.StatusCreated
	if created {
		if h := resp.Header.Get("Docker-Content-Digest"); h != "" && req.Dgst != "" && h != req.Dgst.String() {
			p.log.Warn("upstream named another digest for a pushed blob; not cached", "name", req.Name, "digest", req.Dgst, "upstream_digest", h)
			created = false
		}
		p.linkCreated(req, resp)
	}

	switch req.Method {
	case http.MethodPost:
		if resp.StatusCode == http.StatusAccepted {
			if loc := out.Header.Get("Location"); loc != "" {
				t.start(uploadKey(loc))
			}
		}
	case http.MethodPatch:
		switch {
		case u == nil:
		case tb != nil && (copyTo == nil || !complete), !confirms(resp.Header.Get("Range"), u.size+copied):
			t.drop(u) // the staging file no longer matches what upstream holds
		default:
			u.size += copied
		}
	case http.MethodPut:
		if entry == nil && u != nil && created && complete && (tb == nil || copyTo != nil) {
			u.size += copied
			p.admitStaged(u, req.Dgst)
		}
		if u != nil {
			t.drop(u) // the upload is over, admitted or not
		}
	}
	if entry != nil {
		p.commitEntry(entry, created && complete)
	}
	return out, nil
}

// linkCreated links the blob an upload or a mount created to its
// repository: the digest upstream named, else the one the client did.
func (p *Proxy) linkCreated(req *registry.PushRequest, resp *http.Response) {
	dgst, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		dgst = req.Dgst
	}
	if dgst != "" && dgst.Validate() == nil && dgst.Algorithm() == digest.SHA256 {
		p.link(req.Name, dgst)
	}
}

// newEntry starts a cache entry for a blob whose bytes are about to pass,
// or returns nil when the store has it already or cannot take it.
func (p *Proxy) newEntry(dgst digest.Digest, size int64) *cache.Writer {
	if _, err := p.store.Stat(dgst); err == nil {
		return nil
	}
	w, err := p.store.Create(dgst, max(size, -1), pushedBlobType)
	if err != nil {
		p.log.Warn("caching pushed blob failed", "digest", dgst, "error", err)
		return nil
	}
	return w
}

// commitEntry ends a cache entry written from a pushed body: committed
// (Commit verifies the digest) when upstream stored the blob and every
// byte was copied, else aborted.
func (p *Proxy) commitEntry(w *cache.Writer, ok bool) {
	if !ok {
		w.Abort(nil)
		return
	}
	if _, err := w.Commit(); err != nil {
		p.log.Warn("caching pushed blob failed", "digest", w.Digest(), "error", err)
		return
	}
	p.log.Debug("pushed blob cached", "digest", w.Digest(), "bytes", w.Written())
}

// admitStaged copies a finished upload's staging file into the store;
// Commit verifies the digest. It runs before the client gets its 201, so
// that a pull right after the push is a hit.
func (p *Proxy) admitStaged(u *upload, dgst digest.Digest) {
	if _, err := p.store.Stat(dgst); err == nil {
		return
	}
	w, err := p.store.Create(dgst, u.size, pushedBlobType)
	if err != nil {
		p.log.Warn("caching pushed blob failed", "digest", dgst, "error", err)
		return
	}
	src := io.Reader(strings.NewReader(""))
	if u.f != nil {
		src = io.NewSectionReader(u.f, 0, u.size)
	}
	buf := p.bufs.Get().(*[]byte)
	_, err = io.CopyBuffer(w, struct{ io.Reader }{src}, *buf)
	p.bufs.Put(buf)
	if err != nil {
		w.Abort(err)
		p.log.Warn("caching pushed blob failed", "digest", dgst, "error", err)
		return
	}
	p.commitEntry(w, true)
}

// confirms reports whether an upload's Range answer ("0-<last>") says
// upstream holds total bytes. ECR, like distribution, answers "0-0" for
// an empty upload; no Range at all confirms nothing and is taken on trust.
func confirms(rng string, total int64) bool {
	if rng == "" {
		return true
	}
	rng = strings.TrimPrefix(rng, "bytes=")
	first, last, ok := strings.Cut(rng, "-")
	end, err := strconv.ParseInt(last, 10, 64)
	if !ok || first != "0" || err != nil {
		return false
	}
	return end+1 == total || total == 0 && end == 0
}

// uploadKey is the session key of an upload's Location path: the path
// below /v2/, which is also <name>/<path> of the requests that continue it.
func uploadKey(loc string) string {
	path, _, _ := strings.Cut(loc, "?")
	return strings.TrimPrefix(path, "/v2/")
}

// pushDo sends one push request upstream. Redirects are not followed: a
// push answered with one fails rather than send its body elsewhere.
func (p *Proxy) pushDo(ctx context.Context, method, path, rawQuery string, hdr http.Header, body io.Reader, length int64, kind string) (*http.Response, error) {
	target := *p.up.base
	target.Path = strings.TrimSuffix(p.up.base.Path, "/") + "/v2/" + path
	target.RawPath, target.RawQuery = "", rawQuery
	req, err := http.NewRequestWithContext(ctx, method, target.String(), body)
	if err != nil {
		return nil, fmt.Errorf("building upstream request: %w", err)
	}
	if body != nil {
		req.ContentLength = length
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	client := *p.up.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	start := time.Now()
	resp, err := client.Do(req)
	if p.up.observe != nil {
		ev := UpstreamEvent{Method: method, Kind: kind, Duration: time.Since(start)}
		if err != nil {
			ev.Failure = failure(err)
		} else {
			ev.Status = resp.StatusCode
		}
		p.up.observe(ev)
	}
	if err != nil {
		return nil, transportError(method, path, err)
	}
	return resp, nil
}

// pushAnswer is what the client gets of an upstream success: the push
// headers, with Location as a path on the upstream. A Location elsewhere
// (another host, a presigned URL) is never passed on.
func (p *Proxy) pushAnswer(resp *http.Response, path string) (*registry.PushResponse, error) {
	out := &registry.PushResponse{Status: resp.StatusCode, Header: http.Header{}}
	for _, k := range pushHeaders {
		if vs := resp.Header.Values(k); len(vs) > 0 {
			out.Header[k] = vs
		}
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return out, nil
	}
	ref, ok := p.upstreamPath(resp.Request.URL, loc)
	if ok {
		out.Header.Set("Location", ref)
		return out, nil
	}
	out.Header.Del("Location")
	p.log.Warn("upstream answered a push with a Location off the registry; not passed on", "path", path, "status", resp.StatusCode, "location", redactURL(loc))
	if resp.StatusCode == http.StatusAccepted {
		return nil, registry.Errorf(registry.CodeUnavailable, "upstream asked for the upload to continue on another host, which the mirror does not pass on").WithStatus(http.StatusBadGateway)
	}
	return out, nil
}

// upstreamPath resolves a Location against the request it answered and
// returns its path and query when it is on the upstream registry below
// /v2/: "/v2/<name>/blobs/uploads/<id>?...".
func (p *Proxy) upstreamPath(base *url.URL, loc string) (string, bool) {
	u, err := base.Parse(loc)
	if err != nil || u.User != nil || !sameOrigin(u, p.up.base) {
		return "", false
	}
	for k := range u.Query() {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-") {
			return "", false // a presigned URL
		}
	}
	rest, ok := strings.CutPrefix(u.EscapedPath(), strings.TrimSuffix(p.up.base.EscapedPath(), "/")+"/v2/")
	if !ok {
		return "", false
	}
	ref := "/v2/" + rest
	if u.RawQuery != "" {
		ref += "?" + u.RawQuery
	}
	return ref, true
}

// sameOrigin compares scheme, host and port, default ports filled in.
func sameOrigin(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// pushError maps an upstream refusal of a push to what the client sees:
// as for pulls, plus the upload codes for answers without an OCI body.
func pushError(resp *http.Response, method, path, kind string) *registry.Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	s := resp.StatusCode
	if s >= 300 && s < 400 {
		return registry.Errorf(registry.CodeUnavailable, "upstream answered %s %s with a redirect (%d), which the mirror does not follow for pushes", method, path, s).WithStatus(http.StatusBadGateway)
	}
	e := statusError(method, path, kind, resp, body)
	if _, _, parsed := registry.ParseErrorBody(body); !parsed {
		switch {
		case s == http.StatusNotFound && kind == "upload":
			e = registry.Errorf(registry.CodeBlobUploadUnknown, "upload unknown upstream").WithStatus(s)
		case s == http.StatusRequestedRangeNotSatisfiable:
			e = registry.Errorf(registry.CodeRangeInvalid, "upstream refused the chunk's range").WithStatus(s)
		case s == http.StatusRequestEntityTooLarge:
			e = registry.Errorf(registry.CodeSizeInvalid, "upstream refused the size").WithStatus(s)
		}
	}
	if rng := resp.Header.Get("Range"); rng != "" && s == http.StatusRequestedRangeNotSatisfiable {
		e.Header = http.Header{"Range": {rng}}
	}
	return e
}

// uploads returns p's upload sessions.
func (p *Proxy) uploads() *uploadTable { return p.uploadTable }

// errStagingFull says the staging files hold as much as the cache may.
var errStagingFull = errors.New("staging files are at the cache's size budget")

// uploadTable tracks the upload sessions whose bytes are being staged.
type uploadTable struct {
	log   *slog.Logger
	dir   string        // staging files' directory; "": os.TempDir()
	idle  time.Duration // a session unused this long is dropped
	max   int           // sessions at most
	limit int64         // staged bytes at most, all sessions together

	staged atomic.Int64 // bytes in staging files

	mu       sync.Mutex
	sessions map[string]*upload
}

// newUploadTable returns a table whose staging files go to dir (or the
// system's temp dir) and together stay within the store's budget: more
// would not be kept anyway.
func newUploadTable(store *cache.Store, log *slog.Logger, dir string) *uploadTable {
	return &uploadTable{log: log, dir: dir, idle: uploadIdle, max: maxUploads, limit: store.MaxSize(),
		sessions: make(map[string]*upload)}
}

// upload is one upload session's staged bytes.
type upload struct {
	t   *uploadTable
	key string
	// busy is held by the request using the session; the fields below
	// are used under it (stage runs under it too, from the upstream
	// request's body reader, which the tee orders with the request).
	busy     sync.Mutex
	f        *os.File // unlinked staging file; nil until the first byte
	size     int64    // bytes staged and confirmed by upstream
	reserved int64    // bytes counted in t.staged
	dropped  bool
	timer    *time.Timer
	// clash says another request came while busy was held: bytes went
	// past the staging file, which no longer holds the upload.
	clash atomic.Bool
}

// start tracks a new upload session, unless the table is full.
func (t *uploadTable) start(key string) {
	u := &upload{t: t, key: key}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.sessions[key]; old != nil || len(t.sessions) >= t.max {
		if old == nil {
			t.log.Debug("too many uploads in progress; this one will not be cached", "upload", key)
		}
		return
	}
	t.sessions[key] = u
	u.timer = time.AfterFunc(t.idle, func() { t.expire(u) })
}

// acquire returns the session of key, held for the caller, or nil when
// there is none or another request is using it.
func (t *uploadTable) acquire(key string) *upload {
	t.mu.Lock()
	u := t.sessions[key]
	t.mu.Unlock()
	if u == nil {
		return nil
	}
	if !u.busy.TryLock() {
		u.clash.Store(true)
		return nil
	}
	if u.dropped {
		u.busy.Unlock()
		return nil
	}
	return u
}

// release ends a request's hold on u.
func (t *uploadTable) release(u *upload) {
	if u.clash.Load() {
		t.drop(u)
	}
	if !u.dropped {
		u.timer.Reset(t.idle)
	}
	u.busy.Unlock()
}

// drop forgets u and its staged bytes; busy must be held.
func (t *uploadTable) drop(u *upload) {
	if u.dropped {
		return
	}
	u.dropped = true
	u.timer.Stop()
	t.mu.Lock()
	if t.sessions[u.key] == u {
		delete(t.sessions, u.key)
	}
	t.mu.Unlock()
	if u.f != nil {
		u.f.Close()
	}
	t.staged.Add(-u.reserved)
	u.reserved = 0
}

// expire drops a session left idle, or waits again while it is in use.
func (t *uploadTable) expire(u *upload) {
	if !u.busy.TryLock() {
		u.timer.Reset(t.idle)
		return
	}
	if !u.dropped {
		t.log.Debug("upload idle too long; its staged bytes are dropped", "upload", u.key)
		t.drop(u)
	}
	u.busy.Unlock()
}

// empty reports whether nothing of the upload has been staged.
func (u *upload) empty() bool { return u.size == 0 && u.f == nil }

// stage appends upload bytes to the staging file.
func (u *upload) stage(b []byte) error {
	if u.f == nil {
		f, err := os.CreateTemp(u.t.dir, "ecr-mirror-upload-*")
		if err != nil {
			return err
		}
		// Unlinked at once: it is read through f, and a crash leaves
		// nothing behind.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return err
		}
		u.f = f
	}
	n := int64(len(b))
	if u.t.staged.Add(n) > u.t.limit {
		u.t.staged.Add(-n)
		return errStagingFull
	}
	u.reserved += n
	_, err := u.f.Write(b)
	return err
}

// tee is an upload body that copies what upstream reads of it. Copying
// never fails the upload: a copy error only stops the copy.
type tee struct {
	r      io.Reader
	closed chan struct{} // closed when the upstream request is done with the body
	once   sync.Once

	mu     sync.Mutex
	copyTo func([]byte) error // nil: not copying (any more)
	read   int64
	copied int64
	eof    bool
	err    error // why copying stopped early
}

func newTee(r io.Reader, copyTo func([]byte) error) *tee {
	return &tee{r: r, copyTo: copyTo, closed: make(chan struct{})}
}

func (t *tee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.mu.Lock()
	t.read += int64(n)
	if n > 0 && t.copyTo != nil {
		if cerr := t.copyTo(p[:n]); cerr != nil {
			t.copyTo, t.err = nil, cerr
		} else {
			t.copied += int64(n)
		}
	}
	if err == io.EOF {
		t.eof = true
	}
	t.mu.Unlock()
	return n, err
}

// Close is called by the HTTP transport when it is done with the body; the
// client's body itself is the server's to close.
func (t *tee) Close() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

// stop ends the copy at once.
func (t *tee) stop() {
	t.mu.Lock()
	t.copyTo = nil
	t.mu.Unlock()
}

// finish ends the copy once the upstream request is done with the body
// and reports how much was copied and whether that was all of it.
func (t *tee) finish(ctx context.Context) (copied int64, complete bool) {
	timer := time.NewTimer(teeSettle)
	defer timer.Stop()
	select {
	case <-t.closed:
	case <-ctx.Done():
	case <-timer.C:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	complete = t.copyTo != nil && t.eof && t.copied == t.read
	t.copyTo = nil
	return t.copied, complete
}

package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

// pushedBlobType is the media type recorded for pushed blobs, as a blob
// GET from ECR answers.
const pushedBlobType = "application/octet-stream"

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
	t := blobTarget(req.Name, req.Dgst)
	if req.Kind == registry.KindManifest {
		t = manifestTarget(req.Name, req.Dgst.String(), acceptHeader(nil))
	}
	c, err := p.head(ctx, t)
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
	resp, err := p.pushDo(ctx, http.MethodPut, path, req.RawQuery, hdr, bytes.NewReader(req.Manifest), int64(len(req.Manifest)), kindManifest)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, pushError(resp, http.MethodPut, path, kindManifest)
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
// toward the cache as they pass: one method per step of the upload.
func (p *Proxy) pushUpload(ctx context.Context, req *registry.PushRequest) (*registry.PushResponse, error) {
	c := &uploadCall{p: p, req: req, path: req.Name + "/" + req.Path}
	if req.UploadID != "" {
		t := p.uploads()
		if c.u = t.acquire(c.path); c.u != nil {
			defer t.release(c.u) // held until the request returns, even once dropped
		}
	}
	switch req.Method {
	case http.MethodPost:
		return c.start(ctx)
	case http.MethodPatch:
		return c.chunk(ctx)
	case http.MethodPut:
		return c.finish(ctx)
	}
	return c.passOn(ctx) // GET or HEAD: the upload's status
}

// uploadCall is one request of a blob upload on its way upstream, and
// where the bytes it sends are copied: a cache entry when their digest is
// known now, else the session's staging file.
type uploadCall struct {
	p      *Proxy
	req    *registry.PushRequest
	path   string             // <name>/<path> on the upstream
	u      *upload            // the session, held; nil: none, or no longer staged
	entry  *cache.Writer      // the blob's cache entry, or nil
	copyTo func([]byte) error // where the body's bytes go; nil: nowhere
	body   *tee               // req.Body as upstream reads it; nil without one
}

// uploadAnswer is upstream's success for an upload request, and how much
// of the request's body was copied.
type uploadAnswer struct {
	resp     *http.Response // its body is the caller's to close
	out      *registry.PushResponse
	copied   int64
	complete bool // every byte of the body was copied (true without one)
	created  bool // 201, under the digest the client named if upstream names one
}

// start passes on a POST: it starts an upload session, mounts a blob from
// another repository, or uploads a whole blob at once (?digest=), whose
// bytes then go straight into a cache entry.
func (c *uploadCall) start(ctx context.Context) (*registry.PushResponse, error) {
	a, err := c.send(ctx)
	if err != nil {
		return nil, err
	}
	defer a.resp.Body.Close()
	if a.resp.StatusCode == http.StatusAccepted {
		if loc := a.out.Header.Get("Location"); loc != "" {
			c.p.uploads().start(uploadKey(loc))
		}
	}
	c.settleEntry(a)
	return a.out, nil
}

// chunk passes on a PATCH, staging its bytes when they continue what the
// session holds. The session is dropped once the staging file no longer
// matches what upstream holds.
func (c *uploadCall) chunk(ctx context.Context) (*registry.PushResponse, error) {
	a, err := c.send(ctx)
	if err != nil {
		return nil, err
	}
	defer a.resp.Body.Close()
	if c.u != nil {
		if !a.complete || !confirms(a.resp.Header.Get("Range"), c.u.size+a.copied) {
			c.p.uploads().drop(c.u)
		} else {
			c.u.size += a.copied
		}
	}
	return a.out, nil
}

// finish passes on the PUT that ends an upload. A PUT that carries the
// whole blob writes it straight into a cache entry; otherwise its bytes
// end the staging file, which is admitted once upstream has the blob.
// The session ends either way.
func (c *uploadCall) finish(ctx context.Context) (*registry.PushResponse, error) {
	a, err := c.send(ctx)
	if err != nil {
		return nil, err
	}
	defer a.resp.Body.Close()
	if c.u != nil {
		if c.entry == nil && a.created && a.complete {
			c.u.size += a.copied
			c.p.admitStaged(c.u, c.req.Dgst)
		}
		c.p.uploads().drop(c.u) // the upload is over, admitted or not
	}
	c.settleEntry(a)
	return a.out, nil
}

// passOn passes on a request that sends no bytes (an upload's status).
func (c *uploadCall) passOn(ctx context.Context) (*registry.PushResponse, error) {
	a, err := c.send(ctx)
	if err != nil {
		return nil, err
	}
	a.resp.Body.Close()
	return a.out, nil
}

// pickCopy chooses where the body's bytes go: a POST with ?digest= and a
// PUT that carries the whole blob to a cache entry, chunks to the
// session's staging file.
func (c *uploadCall) pickCopy() {
	if c.req.Body == nil {
		return
	}
	switch c.req.Method {
	case http.MethodPost:
		if c.req.Dgst != "" {
			c.toEntry()
		}
	case http.MethodPut:
		if c.req.Dgst != "" && c.u != nil && c.u.empty() {
			c.toEntry()
			return
		}
		c.toStaging()
	case http.MethodPatch:
		c.toStaging()
	}
}

// toEntry copies the body into a cache entry of the digest it must have,
// unless the store holds that digest or cannot take it.
func (c *uploadCall) toEntry() {
	if c.entry = c.p.newEntry(c.req.Dgst, c.req.ContentLength); c.entry != nil {
		w := c.entry
		c.copyTo = func(b []byte) error { _, err := w.Write(b); return err }
	}
}

// toStaging copies the body into the session's staging file when it
// continues what was staged; a chunk that does not ends the session.
func (c *uploadCall) toStaging() {
	switch {
	case c.u == nil:
	case c.req.Chunk == nil || c.req.Chunk.Start == c.u.size:
		c.copyTo = c.u.stage
	default:
		c.p.uploads().drop(c.u)
		c.u = nil
	}
}

// send passes the request upstream, its body through a tee to where
// pickCopy chose, and returns upstream's success once the tee has
// settled. On a failure nothing of the request is copied any further.
func (c *uploadCall) send(ctx context.Context) (*uploadAnswer, error) {
	c.pickCopy()
	var body io.Reader
	if c.req.Body != nil {
		c.body = newTee(c.req.Body, c.copyTo)
		body = c.body
	}
	resp, err := c.p.pushDo(ctx, c.req.Method, c.path, c.req.RawQuery, c.req.Header, body, c.req.ContentLength, kindUpload)
	if err != nil {
		c.abandon()
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		c.abandon()
		return nil, pushError(resp, c.req.Method, c.path, kindUpload)
	}
	out, err := c.p.pushAnswer(resp, c.path)
	if err != nil {
		c.abandon()
		resp.Body.Close()
		return nil, err
	}
	a := &uploadAnswer{resp: resp, out: out, complete: true}
	if c.body != nil {
		a.copied, a.complete = c.body.finish(ctx)
	}
	a.created = c.created(resp)
	return a, nil
}

// abandon stops every copy of the request: upstream's state is unknown.
func (c *uploadCall) abandon() {
	if c.body != nil {
		c.body.stop()
	}
	if c.entry != nil {
		c.entry.Abort(nil)
	}
	if c.u != nil {
		c.p.uploads().drop(c.u)
	}
}

// created reports whether upstream answered 201 under the digest the
// client named, and links what it created to the repository.
func (c *uploadCall) created(resp *http.Response) bool {
	if resp.StatusCode != http.StatusCreated {
		return false
	}
	ok := true
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && c.req.Dgst != "" && h != c.req.Dgst.String() {
		c.p.log.Warn("upstream named another digest for a pushed blob; not cached", "name", c.req.Name, "digest", c.req.Dgst, "upstream_digest", h)
		ok = false
	}
	c.p.linkCreated(c.req, resp)
	return ok
}

// settleEntry commits the request's cache entry, if it has one, when
// upstream created the blob from every byte copied; else aborts it.
func (c *uploadCall) settleEntry(a *uploadAnswer) {
	if c.entry != nil {
		c.p.commitEntry(c.entry, a.created && a.complete)
	}
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
func (p *Proxy) pushDo(ctx context.Context, method, path, rawQuery string, hdr http.Header, body io.Reader, length int64, k kind) (*http.Response, error) {
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
		ev := UpstreamEvent{Method: method, Kind: string(k), Duration: time.Since(start)}
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
func pushError(resp *http.Response, method, path string, k kind) *registry.Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	s := resp.StatusCode
	if s >= 300 && s < 400 {
		return registry.Errorf(registry.CodeUnavailable, "upstream answered %s %s with a redirect (%d), which the mirror does not follow for pushes", method, path, s).WithStatus(http.StatusBadGateway)
	}
	e := statusError(method, path, k, resp, body)
	if _, _, parsed := registry.ParseErrorBody(body); !parsed {
		switch {
		case s == http.StatusNotFound && k == kindUpload:
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

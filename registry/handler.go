package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Request is a validated pull request for a blob or a manifest.
type Request struct {
	Name   string
	Dgst   digest.Digest // set for blobs, and for manifests by digest
	Tag    string        // set for manifests by tag
	Head   bool          // HEAD: no body wanted
	Accept []string      // manifest media types the client accepts
	Range  *ByteRange    // parsed Range header of a blob GET, or nil
}

// Content is what a Backend answers with.
//
// When Body is also an io.Seeker and Partial is nil, it holds the whole
// content and the handler serves Range and conditional requests from it
// itself (with sendfile when it is an *os.File). Otherwise Body is streamed
// as it is; if it fails before Size (or Partial's length) bytes were sent,
// the response is aborted so the client sees a failed transfer.
type Content struct {
	Dgst      digest.Digest
	MediaType string
	Size      int64         // size of the whole content
	Body      io.ReadCloser // nil for HEAD
	Partial   *Span         // Body holds only these bytes (206)
	// Outcome says how the backend answered (hit, miss, ...), for logs.
	Outcome string
	// Warning, when set, is sent as the Warning header (RFC 7234), e.g.
	// `110 - "Response is Stale"`.
	Warning string
}

// Span is a resolved byte range: Length bytes from Start.
type Span struct {
	Start, Length int64
}

// TagList is one page of tags/list.
type TagList struct {
	Body []byte // the JSON document
	// NextQuery, when non-empty, is the raw query of the next page.
	NextQuery string
}

// Backend answers validated requests. Errors it wants a client to see
// are *Error values; anything else becomes a 500.
type Backend interface {
	Blob(ctx context.Context, req *Request) (*Content, error)
	Manifest(ctx context.Context, req *Request) (*Content, error)
	// Tags gets one page of tags; rawQuery is the client's query, as sent.
	Tags(ctx context.Context, name string, rawQuery string) (*TagList, error)
}

// Handler serves the distribution API from a Backend.
type Handler struct {
	backend Backend
	log     *slog.Logger
	opts    handlerOptions
}

// handlerOptions are the Handler's settings; HandlerOption sets them.
type handlerOptions struct {
	push       bool        // pass writes to a backend that implements Pusher
	namespaces *Namespaces // registry host → upstream and repository
	defaultNS  string      // the registry of requests that name none
	prefix     string      // else, the ECR prefix of requests that name none
	library    string      // and that of their library/ names; "": prefix
	upstreams  map[string]Backend
	trusted    []netip.Prefix
	observe    func(RequestInfo)
}

// RequestInfo describes one answered request, for metrics.
type RequestInfo struct {
	Route    string // the endpoint: base, blob, manifest, tags, upload, ... or other
	Method   string
	Status   int
	Bytes    int64 // body bytes written
	Duration time.Duration
	Outcome  string // how the backend answered: hit, miss, coalesced, ...; "" if it did not
}

// WithObserver calls f after every request, from the request's goroutine.
func WithObserver(f func(RequestInfo)) HandlerOption {
	return func(o *handlerOptions) { o.observe = f }
}

// HandlerOption configures a Handler.
type HandlerOption func(*handlerOptions)

// WithPush passes pushes through to the backend, which must implement
// Pusher. Without it every write is refused with UNSUPPORTED.
func WithPush(on bool) HandlerOption {
	return func(o *handlerOptions) { o.push = on }
}

// WithNamespaces maps the registries clients name (containerd's ?ns=) to
// ECR pull-through-cache prefixes. Requests that name no registry belong
// to defaultNS ("" for the ECR registry itself): a listener that mirrors
// Docker Hub for the Docker daemon sets docker.io.
func WithNamespaces(n *Namespaces, defaultNS string) HandlerOption {
	return func(o *handlerOptions) { o.namespaces, o.defaultNS = n, defaultNS }
}

// WithRepositoryPrefix makes requests that name no registry (no ?ns=)
// repositories under prefix/ of the default upstream, whatever their
// name: the listener of one ECR pull-through-cache rule, as PULL_THROUGHS'
// prefix:port form opens. Names under library/ (Docker's official images)
// go under library/ of libraryPrefix instead, when it is not "": ECR
// Public keeps them under docker/ (ecr-public/docker/library/alpine). A
// request that names its registry is resolved by the namespaces as on
// any listener.
func WithRepositoryPrefix(prefix, libraryPrefix string) HandlerOption {
	return func(o *handlerOptions) { o.prefix, o.library = prefix, libraryPrefix }
}

// WithUpstreams serves the requests Namespaces.Resolve sends to another
// upstream than the default from that upstream's backend, by its host.
// A backend that does not implement Pusher takes no pushes: they are
// refused with UNSUPPORTED even when WithPush is on.
func WithUpstreams(backends map[string]Backend) HandlerOption {
	return func(o *handlerOptions) { o.upstreams = backends }
}

// WithTrustedProxies honours X-Forwarded-Host and X-Forwarded-Proto on
// requests that come from these networks (a load balancer in front).
func WithTrustedProxies(nets []netip.Prefix) HandlerOption {
	return func(o *handlerOptions) { o.trusted = nets }
}

// NewHandler returns a Handler; a nil logger discards.
func NewHandler(b Backend, log *slog.Logger, opts ...HandlerOption) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{backend: b, log: log}
	for _, o := range opts {
		o(&h.opts)
	}
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	var route Route
	var outcome string
	err := h.serve(rec, r, &route, &outcome)
	if err != nil && !rec.wroteHeader {
		if r.Context().Err() == nil || errors.As(err, new(*Error)) {
			WriteError(rec, r, err)
		}
	}
	elapsed := time.Since(start)
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
	}
	if route.Name != "" {
		attrs = append(attrs, slog.String("repository", route.Name))
	}
	if ref := route.Reference(); ref != "" {
		attrs = append(attrs, slog.String("reference", ref))
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
		attrs = append(attrs, slog.String("ns", truncate(ns)))
	}
	attrs = append(attrs,
		slog.Int("status", rec.statusCode()),
		slog.Int64("bytes", rec.written),
		slog.Duration("duration", elapsed),
		slog.String("client", r.RemoteAddr),
	)
	if outcome != "" {
		attrs = append(attrs, slog.String("cache", outcome))
	}
	if h.opts.observe != nil {
		h.opts.observe(RequestInfo{Route: route.Kind.String(), Method: r.Method, Status: rec.statusCode(),
			Bytes: rec.written, Duration: elapsed, Outcome: outcome})
	}
	level := slog.LevelInfo
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
		if rec.statusCode() >= 500 || rec.aborted {
			level = slog.LevelWarn
		}
	}
	h.log.LogAttrs(r.Context(), level, "request", attrs...)
	if rec.aborted {
		// The status line is out: the only way to tell the client the
		// body is incomplete is to break the connection.
		panic(http.ErrAbortHandler)
	}
}

func (h *Handler) serve(w *recorder, r *http.Request, route *Route, outcome *string) error {
	var err error
	*route, err = ParseRequest(r.Method, r.URL.Path)
	if errors.Is(err, ErrNotRegistryPath) {
		return Errorf(CodeNameUnknown, "not found: %s", truncate(r.URL.Path)).WithStatus(http.StatusNotFound)
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if err != nil {
		return err
	}
	if route.Kind == KindUpload || r.Method != http.MethodGet && r.Method != http.MethodHead {
		return h.serveWrite(w, r, *route)
	}
	switch route.Kind {
	case KindCatalog:
		return Errorf(CodeUnsupported, "the catalog is not supported by ECR").WithStatus(http.StatusNotFound)
	}
	target, b, err := h.resolve(r, *route)
	if err != nil {
		return err
	}
	if h.pushHead(r, *route, b) {
		return h.serveWrite(w, r, *route)
	}
	upstreamName := target.Name
	req := &Request{Name: upstreamName, Dgst: route.Dgst, Tag: route.Tag, Head: r.Method == http.MethodHead}
	ctx := r.Context()
	switch route.Kind {
	case KindBase:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if !req.Head {
			_, _ = io.WriteString(w, "{}")
		}
		return nil
	case KindTags:
		return h.serveTags(ctx, w, r, b, route.Name, upstreamName)
	case KindReferrers:
		return h.serveReferrers(ctx, w, r, b, *route, upstreamName, outcome)
	case KindBlob:
		if !req.Head {
			if req.Range, err = ParseRange(r.Header.Get("Range")); err != nil {
				return err
			}
			if !ifRangeHolds(r.Header.Get("If-Range"), route.Dgst) {
				req.Range = nil // the whole blob, hit or miss
			}
		}
		c, err := b.Blob(ctx, req)
		if err != nil {
			return err
		}
		*outcome = c.Outcome
		// Ranges are served hit or miss: say so on every blob answer, so
		// that the headers of a blob URL do not depend on the cache.
		w.Header().Set("Accept-Ranges", "bytes")
		return h.writeContent(w, r, req, c)
	case KindManifest:
		req.Accept = parseAccept(r.Header.Values("Accept"))
		c, err := b.Manifest(ctx, req)
		if err != nil {
			return err
		}
		*outcome = c.Outcome
		return h.writeContent(w, r, req, c)
	}
	return Errorf(CodeUnsupported, "unsupported endpoint")
}

// resolve returns the upstream repository of a request for route (none
// for a route without a name), and the backend of its upstream.
func (h *Handler) resolve(r *http.Request, route Route) (Target, Backend, error) {
	if route.Name == "" {
		return Target{}, h.backend, nil
	}
	ns := r.URL.Query().Get("ns")
	if ns == "" && h.opts.prefix != "" {
		prefix := h.opts.prefix
		if h.opts.library != "" && strings.HasPrefix(route.Name, "library/") {
			prefix = h.opts.library
		}
		t, err := UnderPrefix(prefix, route.Name)
		return t, h.backend, err
	}
	if ns == "" {
		ns = h.opts.defaultNS
	}
	t, err := h.opts.namespaces.Resolve(route.Name, ns)
	if err != nil {
		return Target{}, nil, err
	}
	if t.Registry == "" {
		return t, h.backend, nil
	}
	b, ok := h.opts.upstreams[t.Registry]
	if !ok {
		return Target{}, nil, Errorf(CodeNameUnknown, "upstream %s has no backend on this listener", t.Registry).WithStatus(http.StatusNotFound)
	}
	return t, b, nil
}

// writeContent writes a backend answer: headers, then the body.
func (h *Handler) writeContent(w *recorder, r *http.Request, req *Request, c *Content) error {
	if c.Body != nil {
		defer c.Body.Close()
	}
	hdr := w.Header()
	mediaType := c.MediaType
	if mediaType == "" {
		mediaType = "application/octet-stream"
	}
	hdr.Set("Content-Type", mediaType)
	hdr.Set("Docker-Content-Digest", c.Dgst.String())
	hdr.Set("ETag", `"`+c.Dgst.String()+`"`)
	if c.Warning != "" {
		hdr.Set("Warning", c.Warning)
	}
	if req.Head || c.Body == nil {
		if c.Size >= 0 {
			hdr.Set("Content-Length", strconv.FormatInt(c.Size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	if rs, ok := c.Body.(io.ReadSeeker); ok && c.Partial == nil {
		if req.Range != nil {
			// Validate here so a bad range gets an OCI error, not
			// ServeContent's plain text; ServeContent then applies it.
			if _, _, err := req.Range.Resolve(c.Size); err != nil {
				return err
			}
		} else {
			r.Header.Del("Range") // several ranges or another unit: whole content
		}
		hdr.Set("Accept-Ranges", "bytes")
		http.ServeContent(w, r, "", time.Time{}, rs)
		return nil
	}
	status, length := http.StatusOK, c.Size
	if p := c.Partial; p != nil {
		status, length = http.StatusPartialContent, p.Length
		total := "*"
		if c.Size >= 0 {
			total = strconv.FormatInt(c.Size, 10)
		}
		hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%s", p.Start, p.Start+p.Length-1, total))
	}
	// The first bytes are read before the status line goes out: a body
	// that fails before giving any (a download that failed before its
	// first byte reached this client) is answered with an error, not
	// with a cut connection that a client would retry without knowing.
	body, err := firstBytes(c.Body)
	if err != nil {
		return unreadable(c.Dgst, err)
	}
	if length >= 0 {
		hdr.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	w.WriteHeader(status)
	n, err := io.Copy(w, body)
	if err == nil && length >= 0 && n != length {
		err = fmt.Errorf("content ended after %d of %d bytes", n, length)
	}
	if err != nil {
		w.aborted = true
		return fmt.Errorf("streaming %s: %w", c.Dgst, err)
	}
	return nil
}

// firstPeek is how many bytes firstBytes reads at most.
const firstPeek = 4 << 10

// firstBytes waits for body's first bytes and returns a reader of the
// whole body, or body's error if it fails before giving any.
func firstBytes(body io.Reader) (io.Reader, error) {
	buf := make([]byte, firstPeek)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			return io.MultiReader(bytes.NewReader(buf[:n]), body), nil
		}
		if err == io.EOF {
			return body, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// unreadable is what a client sees when content fails before its first
// byte: the backend's answer when it gave one, else a 502 naming the
// digest (the cause stays in the logs).
func unreadable(dgst digest.Digest, err error) error {
	if errors.As(err, new(*Error)) || errors.Is(err, context.Canceled) {
		return err
	}
	return &Error{Status: http.StatusBadGateway, Code: CodeUnavailable,
		Message: fmt.Sprintf("reading %s failed before its first byte; try again", dgst), Internal: err.Error()}
}

// serveTags passes tags/list through: the query goes upstream as sent
// (less ns), and the next page's Link points at the mirror, under the name
// and namespace the client used.
func (h *Handler) serveTags(ctx context.Context, w *recorder, r *http.Request, b Backend, name, upstreamName string) error {
	q := r.URL.Query()
	none := false // n=0: the spec wants an empty list and no Link
	if n := q.Get("n"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 {
			return Errorf(CodePaginationNumber, "invalid page size n=%q", truncate(n))
		}
		none = v == 0
	}
	tl, err := b.Tags(ctx, upstreamName, dropParam(r.URL.RawQuery, "ns"))
	if err != nil {
		return err
	}
	body, err := clientTagList(tl.Body, name, none)
	if err != nil {
		return err
	}
	if tl.NextQuery != "" && !none {
		w.Header().Set("Link", h.nextLink(r, "/v2/"+name+"/tags/list", tl.NextQuery))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// nextLink is the Link header of a next page at path on the mirror, with
// the upstream's query and the client's ns.
func (h *Handler) nextLink(r *http.Request, path, query string) string {
	next := h.baseURL(r)
	next.Path, next.RawQuery = path, query
	if ns := r.URL.Query().Get("ns"); ns != "" {
		next.RawQuery += "&ns=" + url.QueryEscape(ns)
	}
	return fmt.Sprintf("<%s>; rel=\"next\"", next.String())
}

// clientTagList rewrites an upstream tags/list page for the client: named
// as the client named the repository (not ECR's pull-through prefix), tags
// always a list, empty when none is set.
func clientTagList(upstream []byte, name string, none bool) ([]byte, error) {
	var page struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(upstream, &page); err != nil {
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeUnavailable,
			Message: "upstream answered tags/list with a body that is not a tag list", Internal: err.Error()}
	}
	page.Name = name
	if page.Tags == nil || none {
		page.Tags = []string{}
	}
	return json.Marshal(page)
}

// baseURL is the mirror's URL as the client reached it: the request's own
// scheme and host, or, from a trusted proxy, X-Forwarded-Proto and
// X-Forwarded-Host. Every URL the mirror hands out starts with it.
func (h *Handler) baseURL(r *http.Request) url.URL {
	u := url.URL{Scheme: "http", Host: r.Host}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	if !h.fromTrustedProxy(r) {
		return u
	}
	if p := firstValue(r.Header.Get("X-Forwarded-Proto")); p == "http" || p == "https" {
		u.Scheme = p
	}
	if fh := firstValue(r.Header.Get("X-Forwarded-Host")); validHost(fh) {
		u.Host = fh
	}
	return u
}

// fromTrustedProxy reports whether the request's peer is a trusted proxy.
func (h *Handler) fromTrustedProxy(r *http.Request) bool {
	if len(h.opts.trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range h.opts.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// firstValue is the first element of a comma-separated header, the one
// the proxy nearest the client set.
func firstValue(v string) string {
	first, _, _ := strings.Cut(v, ",")
	return strings.ToLower(strings.TrimSpace(first))
}

// validHost accepts host[:port] made of the characters hostnames and IP
// literals use, so a forwarded header cannot inject into a URL.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// parseAccept flattens Accept headers into media types, without
// parameters.
func parseAccept(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if mt = strings.TrimSpace(mt); mt != "" {
				out = append(out, mt)
			}
		}
	}
	return out
}

// recorder remembers what was written, for the request log. It keeps the
// io.ReaderFrom path so sendfile stays in use for files.
type recorder struct {
	http.ResponseWriter
	status      int
	written     int64
	wroteHeader bool
	aborted     bool
}

var (
	_ io.ReaderFrom = (*recorder)(nil)
	_ http.Flusher  = (*recorder)(nil)
)

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(p)
	r.written += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{r.ResponseWriter}, src)
	}
	r.written += n
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) statusCode() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// writerOnly hides ReadFrom so io.Copy does not recurse.
type writerOnly struct{ io.Writer }

package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Error codes of the push side of the distribution spec. They have no
// usual status: every use sets one.
const (
	CodeBlobUploadUnknown Code = "BLOB_UPLOAD_UNKNOWN"
	CodeBlobUploadInvalid Code = "BLOB_UPLOAD_INVALID"
	CodeSizeInvalid       Code = "SIZE_INVALID"
)

// MaxManifestSize caps a pushed manifest: ECR's own limit. The handler
// reads a manifest whole, so this is also what one PUT may hold in memory.
const MaxManifestSize = 4 << 20

// uploadIDRE is what the mirror accepts as an upload session id: ECR's
// are UUIDs; other registries' are UUIDs or URL-safe tokens. Nothing that
// needs escaping in a path.
var uploadIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._~=+-]{0,255}$`)

// PushRequest is a validated write for a Pusher.
type PushRequest struct {
	Method string
	// Kind is KindUpload for every /blobs/uploads/ request, KindManifest
	// for a manifest PUT or an existence check (HEAD) by digest, KindBlob
	// for a blob existence check (HEAD).
	Kind Kind
	// Name is the upstream repository, namespace mapping applied.
	Name string
	// Path is the request path below /v2/<Name>/, escaped:
	// "blobs/uploads/", "blobs/uploads/<id>", "manifests/<reference>" or
	// "blobs/<digest>".
	Path string
	// UploadID is the upload session of KindUpload requests other than
	// the POST that starts one.
	UploadID string
	// Dgst is ?digest= of an upload (required to finish one), the digest
	// of a manifest PUT by digest, or the digest an existence check asks
	// about.
	Dgst digest.Digest
	// Tag is the tag of a manifest PUT by tag.
	Tag string
	// Mount and From are a cross-repository mount's ?mount= and ?from=.
	Mount digest.Digest
	From  string
	// RawQuery is the client's query as sent, less the mirror's own ns
	// parameter; it may carry upload state the upstream put in Location.
	RawQuery string
	// Header holds the request headers to pass on: Content-Type and
	// Content-Range, when the client sent them.
	Header http.Header
	// Chunk is the parsed Content-Range of an upload chunk, or nil.
	Chunk *Span
	// ContentLength is the size of Body, or -1 when the client streams it
	// chunked.
	ContentLength int64
	// Body is the upload's bytes as the client sends them, to be read
	// once; nil when there are none.
	Body io.Reader
	// Manifest is the whole body of a manifest PUT, at most
	// MaxManifestSize bytes; its digest is Dgst when the PUT is by digest.
	Manifest []byte
}

// PushResponse is a Pusher's answer.
type PushResponse struct {
	Status int
	// Header goes to the client. A Location must be a path on the
	// upstream registry, "/v2/<Name>/..." with any query: the handler
	// maps it to the client's repository name and makes it absolute on
	// the mirror's own URL, so the client's next request comes back here.
	Header http.Header
	// Body, when not nil, is sent after the header and closed.
	Body io.ReadCloser
}

// Pusher is implemented by a Backend that passes pushes through. Errors it
// wants a client to see are *Error values, as for Backend.
type Pusher interface {
	Push(ctx context.Context, req *PushRequest) (*PushResponse, error)
}

// serveWrite answers pushes: uploads, manifest PUTs and deletes, and,
// through pushHead, existence checks.
func (h *Handler) serveWrite(w *recorder, r *http.Request, route Route) error {
	if !h.opts.push {
		return Errorf(CodeUnsupported, "push is off: this mirror is pull-only (set PUSH=true to pass pushes through to ECR); %s %s refused", r.Method, truncate(r.URL.Path))
	}
	if r.Method == http.MethodDelete {
		return Errorf(CodeUnsupported, "DELETE is not supported: the mirror is a cache in front of ECR and never deletes there; delete images in ECR itself")
	}
	target, b, err := h.resolve(r, route)
	if err != nil {
		return err
	}
	pusher, ok := b.(Pusher)
	if !ok {
		return Errorf(CodeUnsupported, "pushes go to ECR upstreams only: %s takes none through this mirror; %s %s refused",
			cmp.Or(target.Registry, "the default upstream"), r.Method, truncate(r.URL.Path))
	}
	ns := r.URL.Query().Get("ns")
	if ns == "" {
		ns = h.opts.defaultNS
	}
	req, err := h.newPushRequest(r, route, ns)
	if err != nil {
		return err
	}
	resp, err := pusher.Push(r.Context(), req)
	if err != nil {
		return err
	}
	return h.writePush(w, r, route, req, resp)
}

// pushHead reports whether a HEAD of a blob, or of a manifest by digest,
// must be answered by the Pusher: with push on, it is a client's check
// whether the repository it pushes to holds that content. ECR keeps
// content per repository while the cache is shared by all, so a cache hit
// would let the client skip an upload ECR then finds missing.
func (h *Handler) pushHead(r *http.Request, route Route, b Backend) bool {
	if !h.opts.push || r.Method != http.MethodHead {
		return false
	}
	if _, ok := b.(Pusher); !ok {
		return false
	}
	return route.Kind == KindBlob || route.Kind == KindManifest && route.Dgst != ""
}

// newPushRequest validates a write and builds its PushRequest.
func (h *Handler) newPushRequest(r *http.Request, route Route, ns string) (*PushRequest, error) {
	name, err := h.opts.namespaces.Upstream(route.Name, ns)
	if err != nil {
		return nil, err
	}
	req := &PushRequest{
		Method:        r.Method,
		Kind:          route.Kind,
		Name:          name,
		RawQuery:      dropParam(r.URL.RawQuery, "ns"),
		Header:        http.Header{},
		ContentLength: r.ContentLength,
	}
	for _, k := range []string{"Content-Type", "Content-Range"} {
		if v := r.Header.Values(k); len(v) > 0 {
			req.Header[k] = v
		}
	}
	switch {
	case route.Kind == KindUpload:
		return req, h.uploadRequest(r, req, ns)
	case route.Kind == KindManifest && r.Method == http.MethodPut:
		return req, manifestRequest(r, route, req)
	case r.Method == http.MethodHead && (route.Kind == KindBlob || route.Kind == KindManifest && route.Dgst != ""):
		req.Dgst, req.ContentLength = route.Dgst, 0
		if route.Kind == KindBlob {
			req.Path = "blobs/" + route.Dgst.String()
		} else {
			req.Path = "manifests/" + route.Dgst.String()
		}
		return req, nil
	}
	return nil, Errorf(CodeUnsupported, "%s is not supported on %s endpoints", r.Method, route.Kind)
}

// uploadRequest validates a /blobs/uploads/ request.
func (h *Handler) uploadRequest(r *http.Request, req *PushRequest, ns string) error {
	const marker = "/blobs/uploads"
	path := r.URL.Path
	id := strings.TrimPrefix(path[strings.LastIndex(path, marker)+len(marker):], "/")
	if id != "" && !uploadIDRE.MatchString(id) {
		return Errorf(CodeBlobUploadUnknown, "invalid upload id %q", truncate(id)).WithStatus(http.StatusNotFound)
	}
	switch r.Method {
	case http.MethodPost:
		if id != "" {
			return Errorf(CodeUnsupported, "POST starts an upload at /v2/<name>/blobs/uploads/; continue one with PATCH or PUT")
		}
	case http.MethodPatch, http.MethodPut, http.MethodGet, http.MethodHead:
		if id == "" {
			return Errorf(CodeUnsupported, "%s needs an upload id: /v2/<name>/blobs/uploads/<id>, from the Location of the POST that started the upload", r.Method)
		}
	default:
		return Errorf(CodeUnsupported, "%s is not supported on uploads", r.Method)
	}
	req.UploadID = id
	req.Path = "blobs/uploads/" + id
	if id == "" {
		req.Path = "blobs/uploads/"
	}
	q := r.URL.Query()
	var err error
	if v, ok := q["digest"]; ok {
		if req.Dgst, err = ParseDigest(v[0]); err != nil {
			return err
		}
	} else if r.Method == http.MethodPut {
		return Errorf(CodeDigestInvalid, "finishing an upload needs ?digest=<digest of the whole blob>")
	}
	if r.Method == http.MethodPost {
		if v, ok := q["mount"]; ok {
			if req.Mount, err = ParseDigest(v[0]); err != nil {
				return err
			}
		}
		if from := q.Get("from"); from != "" {
			if err := ValidateName(from); err != nil {
				return err
			}
			if req.From, err = h.opts.namespaces.Upstream(from, ns); err != nil {
				return err
			}
			if req.From != from { // the upstream knows the mapped name
				q.Del("ns")
				q.Set("from", req.From)
				req.RawQuery = q.Encode()
			}
		}
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		req.ContentLength = 0
		return nil
	}
	if cr := r.Header.Get("Content-Range"); cr != "" && r.Method != http.MethodPost {
		if req.Chunk, err = parseChunkRange(cr, r.ContentLength); err != nil {
			return err
		}
	}
	if r.ContentLength != 0 {
		req.Body = r.Body
	}
	return nil
}

// parseChunkRange parses an upload chunk's Content-Range: the spec's
// "<start>-<end>", also accepted with a "bytes " or "bytes=" unit and a
// "/<total>" suffix. It must agree with Content-Length when that is known.
func parseChunkRange(v string, length int64) (*Span, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(v, "bytes "), "bytes=")
	s, _, _ = strings.Cut(s, "/")
	first, last, ok := strings.Cut(strings.TrimSpace(s), "-")
	start, err1 := parseOffset(first)
	end, err2 := parseOffset(last)
	if !ok || err1 != nil || err2 != nil || end < start {
		return nil, Errorf(CodeRangeInvalid, "invalid Content-Range %q: want <start>-<end>", truncate(v)).WithStatus(http.StatusRequestedRangeNotSatisfiable)
	}
	if length >= 0 && end-start+1 != length {
		return nil, Errorf(CodeRangeInvalid, "Content-Range %q covers %d bytes but Content-Length is %d", truncate(v), end-start+1, length).WithStatus(http.StatusRequestedRangeNotSatisfiable)
	}
	return &Span{Start: start, Length: end - start + 1}, nil
}

// manifestRequest validates a manifest PUT and reads its body, capped at
// MaxManifestSize.
func manifestRequest(r *http.Request, route Route, req *PushRequest) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return Errorf(CodeManifestInvalid, "a manifest PUT needs a Content-Type: the manifest's media type")
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return Errorf(CodeManifestInvalid, "invalid Content-Type %q: %v", truncate(ct), err)
	}
	if r.ContentLength > MaxManifestSize {
		return manifestTooBig(r.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxManifestSize+1))
	if err != nil {
		return Errorf(CodeManifestInvalid, "reading the manifest: %v", err)
	}
	if len(body) > MaxManifestSize {
		return manifestTooBig(int64(len(body)))
	}
	if !json.Valid(body) {
		return Errorf(CodeManifestInvalid, "the manifest is not valid JSON")
	}
	got := digest.FromBytes(body)
	if route.Dgst != "" && got != route.Dgst {
		return Errorf(CodeDigestInvalid, "the manifest's digest is %s, not %s as its URL says", got, route.Dgst)
	}
	req.Dgst, req.Tag = route.Dgst, route.Tag
	req.Path = "manifests/" + route.Reference()
	req.Manifest, req.ContentLength = body, int64(len(body))
	return nil
}

func manifestTooBig(size int64) *Error {
	return Errorf(CodeManifestInvalid, "the manifest is %d bytes, over the %d byte limit", size, MaxManifestSize).WithStatus(http.StatusRequestEntityTooLarge)
}

// writePush writes a Pusher's answer. Its Location, a path on the
// upstream, becomes a URL on the mirror under the client's own name.
func (h *Handler) writePush(w *recorder, r *http.Request, route Route, req *PushRequest, resp *PushResponse) error {
	if resp.Body != nil {
		defer resp.Body.Close()
	}
	var loc string
	if l := resp.Header.Get("Location"); l != "" {
		var err error
		if loc, err = h.mirrorLocation(r, route.Name, req.Name, l); err != nil {
			return err
		}
	}
	hdr := w.Header()
	for k, vs := range resp.Header {
		hdr[k] = vs
	}
	if loc != "" {
		hdr.Set("Location", loc)
	}
	bodyAllowed := resp.Status >= 200 && resp.Status != http.StatusNoContent && resp.Status != http.StatusNotModified
	if resp.Body == nil && bodyAllowed && hdr.Get("Content-Length") == "" {
		hdr.Set("Content-Length", "0")
	}
	w.WriteHeader(resp.Status)
	if resp.Body == nil || !bodyAllowed || r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		w.aborted = true
		return fmt.Errorf("writing the push answer: %w", err)
	}
	return nil
}

// mirrorLocation turns a Pusher's Location (a path on the upstream) into
// the URL the client uses next: on the mirror's own scheme and host, under
// the client's name for the repository, with the client's ns kept.
func (h *Handler) mirrorLocation(r *http.Request, clientName, upstreamName, loc string) (string, error) {
	if !strings.HasPrefix(loc, "/v2/") {
		return "", &Error{Status: http.StatusBadGateway, Code: CodeUnavailable,
			Message: "upstream answered with a Location the mirror cannot pass on", Internal: "Location " + truncate(loc)}
	}
	path, query, _ := strings.Cut(loc, "?")
	if rest, ok := strings.CutPrefix(path, "/v2/"+upstreamName+"/"); ok && clientName != upstreamName {
		path = "/v2/" + clientName + "/" + rest
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
		if query != "" {
			query += "&"
		}
		query += "ns=" + url.QueryEscape(ns)
	}
	base := h.baseURL(r)
	out := base.String() + path
	if query != "" {
		out += "?" + query
	}
	return out, nil
}

package fakeecr

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// OCI distribution error codes the fake answers with.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeDenied          = "DENIED"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codePaginationInval = "PAGINATION_NUMBER_INVALID"
	codeTooManyRequests = "TOOMANYREQUESTS"
	codeUnauthorized    = "UNAUTHORIZED"
	codeUnknown         = "UNKNOWN"
	codeUnsupported     = "UNSUPPORTED"
)

// routeKind is what a /v2/ path asks for.
type routeKind int

const (
	routeBase routeKind = iota // /v2/
	routeManifest
	routeBlob
	routeTags
	routeReferrers
)

// route is a parsed /v2/ path.
type route struct {
	kind routeKind
	name string // repository; may contain slashes
	ref  string // tag or digest (manifests), digest (blobs)
}

// parseRoute parses a registry path. ok is false for paths the registry does
// not serve; the name and reference are not validated here.
func parseRoute(path string) (rt route, ok bool) {
	if path == "/v2" || path == "/v2/" {
		return route{kind: routeBase}, true
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return route{}, false
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return route{kind: routeTags, name: name}, name != ""
	}
	// The endpoint is the last separator in the path: a repository may be
	// named like one (a/blobs/x/manifests/latest).
	best, at := -1, 0
	seps := []struct {
		sep  string
		kind routeKind
	}{{"/manifests/", routeManifest}, {"/blobs/", routeBlob}, {"/referrers/", routeReferrers}}
	for k, e := range seps {
		if i := strings.LastIndex(rest, e.sep); i > 0 && i > at {
			best, at = k, i
		}
	}
	if best < 0 {
		return route{}, false
	}
	ref := rest[at+len(seps[best].sep):]
	if ref == "" || strings.Contains(ref, "/") {
		return route{}, false
	}
	return route{kind: seps[best].kind, name: rest[:at], ref: ref}, true
}

// serveRegistry serves /v2/.
func (s *Server) serveRegistry(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v2" && !strings.HasPrefix(r.URL.Path, "/v2/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	// Anonymous: no credentials checked (only recorded); Bearer: the token
	// flow of other registries; else ECR's Basic token.
	if !s.opts.Anonymous && (s.opts.Bearer && !s.bearerAllows(w, r) || !s.opts.Bearer && !s.ecrTokenAllows(w, r)) {
		return
	}
	if s.servePush(w, r) {
		return
	}

	rt, ok := parseRoute(r.URL.Path)
	if !ok {
		writeOCIError(w, http.StatusNotFound, codeUnsupported, "unknown registry path")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeOCIError(w, http.StatusMethodNotAllowed, codeUnsupported, "The operation is unsupported.")
		return
	}
	if rt.kind == routeBase {
		writeJSON(w, http.StatusOK, []byte("{}"))
		return
	}
	if !ValidRepository(rt.name) {
		writeOCIError(w, http.StatusBadRequest, codeNameInvalid, "invalid repository name")
		return
	}
	switch rt.kind {
	case routeManifest:
		s.serveManifest(w, r, rt)
	case routeBlob:
		s.serveBlob(w, r, rt)
	case routeTags:
		s.serveTags(w, r, rt)
	case routeReferrers:
		s.serveReferrers(w, r, rt)
	}
}

// ecrTokenAllows checks the request's ECR token; without a valid one it
// answers as ECR does (401, or 403 DENIED for an expired token) and
// returns false.
func (s *Server) ecrTokenAllows(w http.ResponseWriter, r *http.Request) bool {
	switch s.tokens.check(r.Header.Get("Authorization"), s.opts.Now()) {
	case tokenMissing, tokenUnknown:
		s.ctr.unauthorized.Add(1)
		w.Header().Set("WWW-Authenticate", s.wwwAuth)
		writeOCIError(w, http.StatusUnauthorized, codeUnauthorized, "Not Authorized")
		return false
	case tokenExpired:
		s.ctr.denied.Add(1)
		writeOCIError(w, http.StatusForbidden, codeDenied, "Your authorization token has expired. Reauthenticate and try again.")
		return false
	}
	return true
}

// serveManifest serves GET and HEAD of /v2/<name>/manifests/<ref>. Manifests
// are sent as stored, whatever the Accept header says.
func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, rt route) {
	byDigest := strings.Contains(rt.ref, ":")
	switch {
	case r.Method == http.MethodHead:
		s.ctr.manifestHead.Add(1)
	case byDigest:
		s.ctr.manifestGetByDigest.Add(1)
	default:
		s.ctr.manifestGetByTag.Add(1)
	}
	if byDigest {
		if _, err := digest.Parse(rt.ref); err != nil {
			writeOCIError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(rt.ref))
			return
		}
	}

	m, repoFound := s.store.manifest(rt.name, rt.ref, byDigest)
	switch {
	case !repoFound:
		s.writeNameUnknown(w, rt.name)
		return
	case m == nil:
		writeOCIError(w, http.StatusNotFound, codeManifestUnknown, "Requested image not found")
		return
	}
	f, _ := s.faults.take(m.dgst, EndpointRegistry, r.Method == http.MethodGet, false)
	if s.applyFault(w, r, f, EndpointRegistry) {
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{m.mediaType}
	h["Content-Length"] = []string{m.size}
	h["Docker-Content-Digest"] = []string{string(m.dgst)}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		writeBody(w, r, m.data, f)
	}
}

// serveBlob serves GET and HEAD of /v2/<name>/blobs/<digest>: GET (and HEAD
// with Options.BlobHeadRedirect) redirects to a presigned S3 URL, unless
// Options.DirectBlobs has GET answer with the blob.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, rt route) {
	if r.Method == http.MethodHead {
		s.ctr.blobHead.Add(1)
	} else {
		s.ctr.blobGet.Add(1)
	}
	dgst, err := digest.Parse(rt.ref)
	if err != nil {
		writeOCIError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(rt.ref))
		return
	}
	b, repoFound := s.store.blob(rt.name, dgst)
	switch {
	case !repoFound:
		s.writeNameUnknown(w, rt.name)
		return
	case b == nil:
		writeOCIError(w, http.StatusNotFound, codeBlobUnknown, "blob unknown to registry")
		return
	}
	f, _ := s.faults.take(dgst, EndpointRegistry, false, false)
	if s.applyFault(w, r, f, EndpointRegistry) {
		return
	}
	h := w.Header()
	if r.Method == http.MethodGet && s.opts.DirectBlobs {
		h["Content-Type"] = []string{"application/octet-stream"}
		h["Content-Length"] = []string{b.size}
		h["Docker-Content-Digest"] = []string{string(dgst)}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b.data)
		return
	}
	if r.Method == http.MethodGet || s.opts.BlobHeadRedirect {
		h["Location"] = []string{s.presign(dgst)}
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Content-Length"] = []string{b.size}
	h["Docker-Content-Digest"] = []string{string(dgst)}
	w.WriteHeader(http.StatusOK)
}

// serveTags serves /v2/<name>/tags/list with n and last, paginating like ECR
// with an absolute Link header.
func (s *Server) serveTags(w http.ResponseWriter, r *http.Request, rt route) {
	s.ctr.tagsList.Add(1)
	q := r.URL.Query()
	n := s.opts.TagsPageSize
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			writeOCIError(w, http.StatusBadRequest, codePaginationInval, "invalid number of results requested")
			return
		}
		n = min(n, maxTagsPage)
	}
	tags, repoFound := s.store.tags(rt.name)
	if !repoFound {
		s.writeNameUnknown(w, rt.name)
		return
	}
	last := q.Get("last")
	start := 0
	if last != "" {
		start = sort.Search(len(tags), func(i int) bool { return tags[i] > last })
	}
	end := min(start+n, len(tags))
	page := tags[start:end]
	if end < len(tags) && n > 0 {
		next := s.regURL + "/v2/" + rt.name + "/tags/list?last=" + url.QueryEscape(page[len(page)-1]) + "&n=" + strconv.Itoa(n)
		w.Header().Set("Link", "<"+next+`>; rel="next"`)
	}
	body, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, page})
	if err != nil { // cannot happen: plain strings
		writeOCIError(w, http.StatusInternalServerError, codeUnknown, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) writeNameUnknown(w http.ResponseWriter, name string) {
	writeOCIError(w, http.StatusNotFound, codeNameUnknown,
		"The repository with name '"+name+"' does not exist in the registry with id '123456789012'")
}

// ociError is one entry of an OCI distribution error body.
type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeOCIError writes {"errors":[{"code":...,"message":...}]}.
func writeOCIError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(struct { // plain strings: cannot fail
		Errors []ociError `json:"errors"`
	}{[]ociError{{Code: code, Message: msg}}})
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

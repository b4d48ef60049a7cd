package fakeecr

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
)

// Push endpoints, as ECR answers them:
//
//	POST   /v2/<name>/blobs/uploads/                  202, Location (absolute), Docker-Upload-UUID, Range: 0-0
//	POST   /v2/<name>/blobs/uploads/?digest=<d>       201: the whole blob in one request
//	POST   /v2/<name>/blobs/uploads/?mount=<d>&from=<repo>
//	                                                   201 when the registry holds d, else 202 as a plain POST
//	PATCH  /v2/<name>/blobs/uploads/<id>              202, appended; Range: 0-<last byte>
//	PUT    /v2/<name>/blobs/uploads/<id>?digest=<d>   201, Location of the blob, Docker-Content-Digest;
//	                                                   400 DIGEST_INVALID when the bytes hash otherwise
//	GET    /v2/<name>/blobs/uploads/<id>              204 with Range
//	PUT    /v2/<name>/manifests/<tag or digest>       201, Location, Docker-Content-Digest;
//	                                                   400 BLOB_UPLOAD_UNKNOWN when it names blobs the repository lacks
//
// A push to a repository that does not exist creates it. Blobs are
// registry-wide for mounts; other checks are per repository, as on ECR.

// Push error codes.
const (
	codeBlobUploadInvalid = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown = "BLOB_UPLOAD_UNKNOWN"
	codeManifestInvalid   = "MANIFEST_INVALID"
	codeTagInvalid        = "TAG_INVALID"
)

// Limits on pushed bodies.
const (
	maxUploadBytes   = 2 << 30
	maxManifestBytes = 4 << 20 // ECR's limit
)

// pushState is the fake's uploads in progress and push counters.
type pushState struct {
	mu      sync.Mutex
	uploads map[string]*pendingUpload // by upload id

	uploadsStarted, mounts, monolithic, patches  atomic.Int64
	blobPuts, manifestPuts, statusChecks, errors atomic.Int64
	bytesReceived                                atomic.Int64
}

// pendingUpload is one upload session's bytes so far.
type pendingUpload struct {
	mu   sync.Mutex
	repo string
	data []byte
}

// PushCounters counts the fake's push requests since it started.
type PushCounters struct {
	// UploadsStarted counts POSTs answered 202; Mounts, POST ?mount=
	// answered 201; MonolithicUploads, POST ?digest= answered 201.
	UploadsStarted, Mounts, MonolithicUploads int64
	// Patches counts chunks accepted (202).
	Patches int64
	// BlobPuts counts uploads completed by PUT (201).
	BlobPuts int64
	// ManifestPuts counts manifests stored (201).
	ManifestPuts int64
	// UploadStatus counts GETs of an upload's status.
	UploadStatus int64
	// Errors counts push requests answered with an error.
	Errors int64
	// BytesReceived counts upload body bytes received (manifests not
	// included).
	BytesReceived int64
}

// PushCounters returns the push counters.
func (s *Server) PushCounters() PushCounters {
	c := &s.push
	return PushCounters{
		UploadsStarted:    c.uploadsStarted.Load(),
		Mounts:            c.mounts.Load(),
		MonolithicUploads: c.monolithic.Load(),
		Patches:           c.patches.Load(),
		BlobPuts:          c.blobPuts.Load(),
		ManifestPuts:      c.manifestPuts.Load(),
		UploadStatus:      c.statusChecks.Load(),
		Errors:            c.errors.Load(),
		BytesReceived:     c.bytesReceived.Load(),
	}
}

// HasBlob reports whether repository repo holds blob dgst.
func (s *Server) HasBlob(repo string, dgst digest.Digest) bool {
	b, _ := s.store.blob(repo, dgst)
	return b != nil
}

// HasManifest reports whether repository repo holds manifest dgst.
func (s *Server) HasManifest(repo string, dgst digest.Digest) bool {
	m, _ := s.store.manifest(repo, string(dgst), true)
	return m != nil
}

// servePush answers the push endpoints and reports whether r was one.
// It runs after the token check.
func (s *Server) servePush(w http.ResponseWriter, r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		return false
	}
	if i := strings.LastIndex(rest, "/blobs/uploads"); i > 0 {
		suffix := rest[i+len("/blobs/uploads"):]
		if suffix != "" && (suffix[0] != '/' || strings.Contains(suffix[1:], "/")) {
			return false
		}
		s.serveUpload(w, r, rest[:i], strings.TrimPrefix(suffix, "/"))
		return true
	}
	if r.Method != http.MethodPut {
		return false
	}
	rt, ok := parseRoute(r.URL.Path)
	if !ok || rt.kind != routeManifest {
		return false
	}
	s.serveManifestPut(w, r, rt.name, rt.ref)
	return true
}

// pushError writes an OCI error for a push and counts it.
func (s *Server) pushError(w http.ResponseWriter, status int, code, msg string) {
	s.push.errors.Add(1)
	writeOCIError(w, status, code, msg)
}

// serveUpload serves /v2/<name>/blobs/uploads/[<id>].
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request, name, id string) {
	if !ValidRepository(name) {
		s.pushError(w, http.StatusBadRequest, codeNameInvalid, "invalid repository name")
		return
	}
	switch {
	case r.Method == http.MethodPost && id == "":
		s.startUpload(w, r, name)
		return
	case id == "" || r.Method == http.MethodPost:
		s.pushError(w, http.StatusMethodNotAllowed, codeUnsupported, "The operation is unsupported.")
		return
	}
	s.push.mu.Lock()
	up := s.push.uploads[id]
	s.push.mu.Unlock()
	if up == nil || up.repo != name {
		s.pushError(w, http.StatusNotFound, codeBlobUploadUnknown, "blob upload unknown to registry")
		return
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	switch r.Method {
	case http.MethodPatch:
		if cr := r.Header.Get("Content-Range"); cr != "" {
			start, _, _ := strings.Cut(cr, "-")
			if n, err := strconv.Atoi(start); err != nil || n != len(up.data) {
				w.Header().Set("Range", uploadRange(len(up.data)))
				s.pushError(w, http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid, "the chunk does not continue the upload")
				return
			}
		}
		data, ok := s.readUploadBody(w, r, len(up.data))
		if !ok {
			return
		}
		up.data = append(up.data, data...)
		s.push.patches.Add(1)
		s.writeUploadState(w, http.StatusAccepted, name, id, len(up.data))
	case http.MethodPut:
		dgst, err := digest.Parse(r.URL.Query().Get("digest"))
		if err != nil {
			s.pushError(w, http.StatusBadRequest, codeDigestInvalid, "a valid ?digest= is required to complete an upload")
			return
		}
		data, ok := s.readUploadBody(w, r, len(up.data))
		if !ok {
			return
		}
		up.data = append(up.data, data...)
		s.push.mu.Lock()
		delete(s.push.uploads, id) // done, whether the digest matches or not
		s.push.mu.Unlock()
		if digest.FromBytes(up.data) != dgst {
			s.pushError(w, http.StatusBadRequest, codeDigestInvalid, "The provided digest did not match uploaded content")
			return
		}
		s.store.putBlob(name, dgst, up.data)
		s.push.blobPuts.Add(1)
		s.writeBlobCreated(w, name, dgst)
	case http.MethodGet:
		s.push.statusChecks.Add(1)
		s.writeUploadState(w, http.StatusNoContent, name, id, len(up.data))
	default:
		s.pushError(w, http.StatusMethodNotAllowed, codeUnsupported, "The operation is unsupported.")
	}
}

// startUpload serves POST /v2/<name>/blobs/uploads/: a mount, a whole
// blob, or a new upload session.
func (s *Server) startUpload(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	if m, from := q.Get("mount"), q.Get("from"); m != "" && from != "" {
		if dgst, err := digest.Parse(m); err == nil {
			if b := s.store.blobByDigest(dgst); b != nil {
				s.store.putBlob(name, dgst, b.data)
				s.push.mounts.Add(1)
				s.writeBlobCreated(w, name, dgst)
				return
			}
		}
	}
	if v := q.Get("digest"); v != "" {
		dgst, err := digest.Parse(v)
		if err != nil {
			s.pushError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(v))
			return
		}
		data, ok := s.readUploadBody(w, r, 0)
		if !ok {
			return
		}
		if digest.FromBytes(data) != dgst {
			s.pushError(w, http.StatusBadRequest, codeDigestInvalid, "The provided digest did not match uploaded content")
			return
		}
		s.store.putBlob(name, dgst, data)
		s.push.monolithic.Add(1)
		s.writeBlobCreated(w, name, dgst)
		return
	}
	id := newUUID()
	s.push.mu.Lock()
	if s.push.uploads == nil {
		s.push.uploads = make(map[string]*pendingUpload)
	}
	s.push.uploads[id] = &pendingUpload{repo: name}
	s.push.mu.Unlock()
	s.push.uploadsStarted.Add(1)
	s.writeUploadState(w, http.StatusAccepted, name, id, 0)
}

// readUploadBody reads an upload request's body; on failure it has
// answered.
func (s *Server) readUploadBody(w http.ResponseWriter, r *http.Request, have int) ([]byte, bool) {
	data, err := io.ReadAll(io.LimitReader(r.Body, int64(maxUploadBytes-have)+1))
	s.push.bytesReceived.Add(int64(len(data)))
	switch {
	case err != nil:
		s.pushError(w, http.StatusBadRequest, codeBlobUploadInvalid, "reading the body: "+err.Error())
		return nil, false
	case len(data)+have > maxUploadBytes:
		s.pushError(w, http.StatusRequestEntityTooLarge, codeBlobUploadInvalid, "blob too large")
		return nil, false
	}
	return data, true
}

// writeUploadState answers with an upload's location and progress.
func (s *Server) writeUploadState(w http.ResponseWriter, status int, name, id string, n int) {
	h := w.Header()
	h.Set("Location", s.regURL+"/v2/"+name+"/blobs/uploads/"+id)
	h.Set("Docker-Upload-UUID", id)
	h.Set("Range", uploadRange(n))
	if status != http.StatusNoContent {
		h.Set("Content-Length", "0")
	}
	w.WriteHeader(status)
}

// uploadRange is the Range of an upload holding n bytes; "0-0" when
// empty, as ECR and distribution answer.
func uploadRange(n int) string {
	return "0-" + strconv.Itoa(max(n-1, 0))
}

func (s *Server) writeBlobCreated(w http.ResponseWriter, name string, dgst digest.Digest) {
	h := w.Header()
	h.Set("Location", s.regURL+"/v2/"+name+"/blobs/"+dgst.String())
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// serveManifestPut serves PUT /v2/<name>/manifests/<ref>.
func (s *Server) serveManifestPut(w http.ResponseWriter, r *http.Request, name, ref string) {
	if !ValidRepository(name) {
		s.pushError(w, http.StatusBadRequest, codeNameInvalid, "invalid repository name")
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxManifestBytes+1))
	if err != nil || len(data) > maxManifestBytes || !json.Valid(data) {
		s.pushError(w, http.StatusBadRequest, codeManifestInvalid, "manifest invalid")
		return
	}
	dgst := digest.FromBytes(data)
	tag := ""
	if strings.Contains(ref, ":") {
		if want, err := digest.Parse(ref); err != nil || want != dgst {
			s.pushError(w, http.StatusBadRequest, codeDigestInvalid, "manifest digest did not match")
			return
		}
	} else if tag = ref; !ValidTag(tag) {
		s.pushError(w, http.StatusBadRequest, codeTagInvalid, "invalid tag")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = sniffMediaType(data)
	}
	if code, msg := s.missingReferences(name, data); code != "" {
		s.pushError(w, http.StatusBadRequest, code, msg)
		return
	}
	s.store.putManifest(name, tag, newManifest(dgst, mt, data))
	s.push.manifestPuts.Add(1)
	h := w.Header()
	h.Set("Location", s.regURL+"/v2/"+name+"/manifests/"+dgst.String())
	h.Set("Docker-Content-Digest", dgst.String())
	if subject := subjectOf(data); subject != "" {
		// The spec's answer of a registry that serves referrers, as ECR does.
		h.Set("OCI-Subject", subject.String())
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// missingReferences checks that repository name holds what a manifest
// names: an image's config and layers, an index's manifests. ECR's answer
// for missing layers is BLOB_UPLOAD_UNKNOWN with this message; its answer
// for an index's missing manifests is unconfirmed.
func (s *Server) missingReferences(name string, data []byte) (code, msg string) {
	var m struct {
		Config *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"config"`
		Layers []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"layers"`
		Manifests []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"manifests"`
	}
	if json.Unmarshal(data, &m) != nil {
		return codeManifestInvalid, "manifest invalid"
	}
	var blobs []digest.Digest
	if m.Config != nil {
		blobs = append(blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	var missing []string
	for _, d := range blobs {
		if !s.HasBlob(name, d) {
			missing = append(missing, d.String())
		}
	}
	if len(missing) > 0 {
		return codeBlobUploadUnknown, fmt.Sprintf("Layers with digests '[%s]' required for pushing image into repository with name '%s' in the registry with id '123456789012' do not exist",
			strings.Join(missing, ", "), name)
	}
	for _, c := range m.Manifests {
		if !s.HasManifest(name, c.Digest) {
			missing = append(missing, c.Digest.String())
		}
	}
	if len(missing) > 0 {
		return codeManifestUnknown, fmt.Sprintf("Images with digests '[%s]' required for pushing image into repository with name '%s' in the registry with id '123456789012' do not exist",
			strings.Join(missing, ", "), name)
	}
	return "", ""
}

// newUUID returns a random (version 4) UUID, as ECR's upload ids are.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

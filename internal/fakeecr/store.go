package fakeecr

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// store is the fake's content. Blobs are shared by digest across
// repositories, like ECR's layer storage, but a repository only serves the
// blobs put into it. Lookups hold the read lock just for the map reads; the
// blob and manifest values never change once stored, so callers use them
// after unlocking.
type store struct {
	mu    sync.RWMutex
	blobs map[digest.Digest]*blob
	repos map[string]*repository
}

// blob is one stored blob with the headers S3 and the registry send for it,
// computed once so serving it allocates little.
type blob struct {
	data    []byte
	size    string // decimal Content-Length
	etag    string // quoted, as S3 sends it
	modTime string // Last-Modified, in http.TimeFormat

	// S3 GETs of this blob, without and with a Range.
	s3Full, s3Ranged atomic.Int64
	// s3Bytes counts the body bytes S3 sent for this blob.
	s3Bytes atomic.Int64
}

// manifest is one stored manifest.
type manifest struct {
	dgst      digest.Digest
	mediaType string
	data      []byte
	size      string // decimal Content-Length
}

// repository is one ECR repository.
type repository struct {
	blobs     map[digest.Digest]*blob
	manifests map[digest.Digest]*manifest
	tags      map[string]*manifest
}

func newStore() store {
	return store{
		blobs: make(map[digest.Digest]*blob),
		repos: make(map[string]*repository),
	}
}

// repoLocked returns repository name, creating it; s.mu must be held for writing.
func (s *store) repoLocked(name string) *repository {
	r := s.repos[name]
	if r == nil {
		r = &repository{
			blobs:     make(map[digest.Digest]*blob),
			manifests: make(map[digest.Digest]*manifest),
			tags:      make(map[string]*manifest),
		}
		s.repos[name] = r
	}
	return r
}

// putBlob stores data under dgst, which the caller has checked, and adds it
// to repository name. It keeps data without copying it.
func (s *store) putBlob(name string, dgst digest.Digest, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[dgst]
	if b == nil {
		etag := dgst.Encoded()
		if len(etag) > 32 { // S3 ETags of single-part objects are 32 hex digits
			etag = etag[:32]
		}
		b = &blob{
			data:    data,
			size:    strconv.Itoa(len(data)),
			etag:    `"` + etag + `"`,
			modTime: time.Now().UTC().Format(http.TimeFormat),
		}
		s.blobs[dgst] = b
	}
	s.repoLocked(name).blobs[dgst] = b
}

// putManifest stores a manifest in repository name and, unless tag is empty,
// points tag at it.
func (s *store) putManifest(name, tag string, m *manifest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repoLocked(name)
	r.manifests[m.dgst] = m
	if tag != "" {
		r.tags[tag] = m
	}
}

// blob returns the blob dgst of repository name: repoFound is false when the
// repository does not exist, b is nil when it lacks the blob.
func (s *store) blob(name string, dgst digest.Digest) (b *blob, repoFound bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.repos[name]
	if r == nil {
		return nil, false
	}
	return r.blobs[dgst], true
}

// blobByDigest returns a blob whatever repository holds it, for S3.
func (s *store) blobByDigest(dgst digest.Digest) *blob {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.blobs[dgst]
}

// manifest returns a manifest of repository name by tag or, when byDigest,
// by digest; like blob, repoFound is false for a missing repository.
func (s *store) manifest(name, ref string, byDigest bool) (m *manifest, repoFound bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.repos[name]
	if r == nil {
		return nil, false
	}
	if byDigest {
		return r.manifests[digest.Digest(ref)], true
	}
	return r.tags[ref], true
}

// tags returns the sorted tags of repository name.
func (s *store) tags(name string) (tags []string, repoFound bool) {
	s.mu.RLock()
	r := s.repos[name]
	if r == nil {
		s.mu.RUnlock()
		return nil, false
	}
	tags = make([]string, 0, len(r.tags))
	for t := range r.tags {
		tags = append(tags, t)
	}
	s.mu.RUnlock()
	slices.Sort(tags)
	return tags, true
}

// PutBlob stores data as a blob of repository repo and returns its sha256
// digest. The fake keeps data without copying it (blobs may be GiBs), so the
// caller must not modify it afterwards. repo should be a valid repository
// name (see ValidRepository); others can never be requested.
func (s *Server) PutBlob(repo string, data []byte) digest.Digest {
	dgst := digest.FromBytes(data)
	s.store.putBlob(repo, dgst, data)
	return dgst
}

// PutManifest stores a manifest in repository repo and returns its sha256
// digest; it is served with Content-Type mediaType. An empty mediaType means
// the manifest's own mediaType field, or the OCI image manifest type when
// it has none. Unless tag is empty, tag then names this manifest in repo. Like
// PutBlob, it keeps data without copying it.
func (s *Server) PutManifest(repo, tag string, mediaType string, data []byte) digest.Digest {
	if mediaType == "" {
		mediaType = sniffMediaType(data)
	}
	m := newManifest(digest.FromBytes(data), mediaType, data)
	s.store.putManifest(repo, tag, m)
	return m.dgst
}

func newManifest(dgst digest.Digest, mediaType string, data []byte) *manifest {
	return &manifest{dgst: dgst, mediaType: mediaType, data: data, size: strconv.Itoa(len(data))}
}

// ResolveTag returns the digest tag names in repository repo.
func (s *Server) ResolveTag(repo, tag string) (digest.Digest, bool) {
	m, _ := s.store.manifest(repo, tag, false)
	if m == nil {
		return "", false
	}
	return m.dgst, true
}

// sniffMediaType returns the mediaType field of a manifest, guessing from its
// shape when the field is absent.
func sniffMediaType(data []byte) string {
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(data, &m) == nil {
		switch {
		case m.MediaType != "":
			return m.MediaType
		case m.Manifests != nil:
			return oci.MediaTypeImageIndex
		}
	}
	return oci.MediaTypeImageManifest
}

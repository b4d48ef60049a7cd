package cache

import (
	"fmt"
	"mime"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// IsManifestType reports whether mediaType names a manifest: an OCI
// image manifest or index, a Docker schema2 manifest or manifest list, a
// Docker schema1 manifest or an OCI artifact manifest. Parameters are
// ignored.
func IsManifestType(mediaType string) bool {
	if manifestKind(mediaType) != kindOpaque {
		return true
	}
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return false
	}
	switch mt {
	case oci.MediaTypeDockerSchema1, oci.MediaTypeDockerSchema1Signed, oci.MediaTypeArtifactManifest:
		return true
	}
	return false
}

// typeRank orders what a media type says about content: nothing
// (generic), something (a layer or config type), or that it is a
// manifest. A stored media type is only ever replaced by one of higher
// rank: content is what it is whoever stored it first, and a pushed blob
// (application/octet-stream) must never hide the manifest type that
// upstream declared for the same bytes.
func typeRank(mediaType string) int {
	switch {
	case IsManifestType(mediaType):
		return 2
	case oci.IsGenericType(mediaType):
		return 0
	}
	return 1
}

// SetMediaType records mediaType for a stored entry when it says more
// than the one recorded (typeRank): a manifest type replaces a generic
// or blob type, a specific type a generic one; anything else is left as
// it is. It reports whether the type changed. What the entry references
// is not read again: content that parses as a manifest was classified
// as one when stored, whatever its type.
func (s *Store) SetMediaType(dgst digest.Digest, mediaType string) (bool, error) {
	if err := checkDigest(dgst); err != nil {
		return false, err
	}
	if len(mediaType) > maxMediaTypeLen {
		return false, fmt.Errorf("cache: set media type of %s: %d bytes exceeds %d", dgst, len(mediaType), maxMediaTypeLen)
	}
	s.mu.Lock()
	if err := s.changeErrLocked(); err != nil {
		s.mu.Unlock()
		return false, fmt.Errorf("cache: set media type of %s: %w", dgst, err)
	}
	e, ok := s.g.lookup(dgst)
	if !ok {
		s.mu.Unlock()
		return false, fmt.Errorf("cache: set media type of %s: %w", dgst, ErrNotFound)
	}
	if typeRank(mediaType) <= typeRank(e.mediaType) {
		s.mu.Unlock()
		return false, nil
	}
	e.mediaType = mediaType
	cp := *e
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()
	// Under idxMu shared, like every write that is not an access-time
	// flush: a flush that copied the entry before the change may land
	// first, never after this write.
	s.idxMu.RLock()
	defer s.idxMu.RUnlock()
	if err := writeIndex(s.db, []indexRecord{{dgst: dgst, e: &cp}}, nil); err != nil {
		return true, fmt.Errorf("cache: set media type of %s: %w", dgst, err)
	}
	return true, nil
}

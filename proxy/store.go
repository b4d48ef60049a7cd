package proxy

import (
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// Store is what the proxy asks of its local store: content by digest,
// which repositories it is linked to, and the answers tags and referrers
// lists last had.
// *cache.Store implements it; a second tier, or a decorator in a test,
// slots in behind the same methods.
type Store interface {
	Blobs
	Links
	Tags
	Referrers
}

// Blobs is content by digest, shared by all repositories.
type Blobs interface {
	// Stat says whether dgst is stored, and as what (cache.ErrNotFound
	// when it is not).
	Stat(dgst digest.Digest) (cache.Info, error)
	// Get opens stored content; the caller closes the file.
	Get(dgst digest.Digest) (*os.File, cache.Info, error)
	// Create starts an entry that readers may follow while it is
	// written; its Commit verifies the digest. size -1: unknown.
	Create(dgst digest.Digest, size int64, mediaType string) (*cache.Writer, error)
	// Put stores content held whole in memory, verifying its digest.
	Put(dgst digest.Digest, mediaType string, data []byte) error
	// SetMediaType records a more telling media type for stored content
	// and reports whether it changed.
	SetMediaType(dgst digest.Digest, mediaType string) (bool, error)
	// MaxSize is the store's size budget in bytes.
	MaxSize() int64
}

// Links records which repositories are known to hold which content.
type Links interface {
	// Link records that repo holds dgst (and what dgst references).
	Link(repo cache.Repo, dgst digest.Digest) error
	// Linked reports whether repo is known to hold dgst.
	Linked(repo cache.Repo, dgst digest.Digest) bool
}

// Tags holds the answer a tag last had upstream, per upstream registry,
// repository and Accept header.
type Tags interface {
	PutTag(repo cache.Repo, tag, accept string, rec cache.TagRecord) error
	// GetTag returns the record of repo:tag asked with accept
	// (cache.ErrNotFound when there is none).
	GetTag(repo cache.Repo, tag, accept string) (cache.TagRecord, error)
}

// Referrers holds the answer a subject's referrers last had upstream,
// per repository, filter and page.
type Referrers interface {
	PutReferrers(k cache.ReferrersKey, rec cache.ReferrersRecord) error
	// GetReferrers returns the record of k (cache.ErrNotFound when there
	// is none).
	GetReferrers(k cache.ReferrersKey) (cache.ReferrersRecord, error)
}

var _ Store = (*cache.Store)(nil)

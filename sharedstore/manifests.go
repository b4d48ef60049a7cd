package sharedstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// maxManifestSize is the largest object the sweep reads to learn whether
// it is a manifest: ECR's (and the proxy's) manifest limit.
const maxManifestSize = 4 << 20

// sniffLen is how much of an object stored with a generic type is read
// to decide whether it can be a JSON document at all.
const sniffLen = 64

// manifest is what the sweep learned of an object: whether it is a
// manifest or index, and what it references (sorted), of which blobs are
// a manifest's config and layers: never manifests themselves.
type manifest struct {
	is          bool
	refs, blobs []digest.Digest
}

// readManifest reads the object of dgst, size bytes, far enough to know
// whether it is a manifest or index (its Content-Type, else its JSON
// mediaType field), and if it is, what it references. Larger objects,
// those of another type, and content that does not match dgst are not
// manifests. An error is a failed read: the sweep then deletes nothing.
func (s *Store) readManifest(ctx context.Context, dgst digest.Digest, size int64) (manifest, error) {
	if size <= 0 || size > maxManifestSize {
		return manifest{}, nil
	}
	obj, err := s.Open(ctx, dgst)
	if errors.Is(err, ErrNotFound) {
		return manifest{}, nil // deleted since the listing
	}
	if err != nil {
		return manifest{}, err
	}
	defer obj.Body.Close()
	typed := isManifestType(obj.MediaType)
	if !typed && !oci.IsGenericType(obj.MediaType) {
		return manifest{}, nil // a layer or a config
	}
	r := peekReader{r: io.LimitReader(obj.Body, maxManifestSize+1)}
	if !typed {
		head, err := r.peek(sniffLen)
		if err != nil {
			return manifest{}, fmt.Errorf("reading s3://%s/%s: %w", s.bucket, s.Key(dgst), err)
		}
		if trimmed := bytes.TrimLeft(head, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
			return manifest{}, nil
		}
	}
	b, err := io.ReadAll(&r)
	if err != nil {
		return manifest{}, fmt.Errorf("reading s3://%s/%s: %w", s.bucket, s.Key(dgst), err)
	}
	if digest.FromBytes(b) != dgst {
		return manifest{}, nil // corrupt: a reader deletes it; by its own age until then
	}
	return parseManifest(b), nil
}

// peekReader reads r, letting the caller look at its first bytes first.
type peekReader struct {
	r    io.Reader
	head []byte
}

// peek reads up to n bytes, which Read then returns first.
func (p *peekReader) peek(n int) ([]byte, error) {
	buf := make([]byte, n)
	k, err := io.ReadFull(p.r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	p.head = buf[:k]
	return p.head, nil
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// parseManifest reads a manifest's or index's references; JSON that is
// neither is not a manifest.
func parseManifest(b []byte) manifest {
	var doc oci.ManifestRefs
	if json.Unmarshal(b, &doc) != nil {
		return manifest{}
	}
	if doc.MediaType != "" && !isManifestType(doc.MediaType) {
		return manifest{}
	}
	if doc.MediaType == "" && doc.Config == nil && doc.Manifests == nil {
		return manifest{}
	}
	m := manifest{is: true}
	add := func(to *[]digest.Digest, d digest.Digest) {
		if d.Validate() == nil && d.Algorithm() == digest.SHA256 {
			*to = append(*to, d)
		}
	}
	if doc.Config != nil {
		add(&m.blobs, doc.Config.Digest)
	}
	for _, l := range doc.Layers {
		add(&m.blobs, l.Digest)
	}
	for _, l := range doc.Blobs {
		add(&m.blobs, l.Digest)
	}
	m.refs = slices.Clone(m.blobs)
	for _, c := range doc.Manifests {
		add(&m.refs, c.Digest)
	}
	slices.Sort(m.refs)
	m.refs = slices.Compact(m.refs)
	slices.Sort(m.blobs)
	m.blobs = slices.Compact(m.blobs)
	return m
}

// isManifestType reports whether mediaType names a manifest or index.
func isManifestType(mediaType string) bool {
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return false
	}
	switch mt {
	case oci.MediaTypeImageManifest, oci.MediaTypeImageIndex, oci.MediaTypeDockerManifest, oci.MediaTypeDockerManifestList,
		oci.MediaTypeArtifactManifest:
		return true
	}
	return false
}

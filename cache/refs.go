package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// maxManifestSize is the largest entry parsed for references: ECR's (and
// the proxy's) manifest limit. Anything larger is opaque.
const maxManifestSize = 4 << 20

// refKind is what classify found an entry to be.
type refKind byte

const (
	kindOpaque   refKind = iota // references nothing (a blob, or not parseable)
	kindManifest                // an image manifest: references its config and layers
	kindIndex                   // an index or manifest list: references its manifests
)

func (k refKind) String() string {
	switch k {
	case kindOpaque:
		return "opaque"
	case kindManifest:
		return "manifest"
	case kindIndex:
		return "index"
	}
	return fmt.Sprintf("refKind(%d)", byte(k))
}

// manifestKind maps a media type to the kind of manifest it names, or
// kindOpaque.
func manifestKind(mediaType string) refKind {
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return kindOpaque
	}
	switch mt {
	case oci.MediaTypeImageManifest, oci.MediaTypeDockerManifest:
		return kindManifest
	case oci.MediaTypeImageIndex, oci.MediaTypeDockerManifestList:
		return kindIndex
	}
	return kindOpaque
}

// mayBeManifest reports whether an entry of this media type and size
// must be read to know whether it references anything. Every such entry
// is classified once, at commit (or, for entries stored by an older
// version, at the first Open that finds no ref/ record for it), and the
// result is persisted as its ref/ record.
func mayBeManifest(mediaType string, size int64) bool {
	return size > 0 && size <= maxManifestSize && (manifestKind(mediaType) != kindOpaque || oci.IsGenericType(mediaType))
}

// sniffLen is how much of a generically typed entry is read to decide
// whether it can be a JSON document at all.
const sniffLen = 64

// classify reads the size bytes of an entry from r and returns what it
// references. Content that does not parse is opaque: only an I/O error is
// returned as an error (the caller then records nothing, so that the
// entry is classified again at the next Open). The result is sorted,
// without duplicates, without dgst itself, and holds only sha256 digests
// (the only ones the store can hold).
func classify(dgst digest.Digest, mediaType string, size int64, r io.ReaderAt) (refKind, []digest.Digest, error) {
	if !mayBeManifest(mediaType, size) {
		return kindOpaque, nil, nil
	}
	kind := manifestKind(mediaType)
	if kind == kindOpaque {
		// Generic: a layer or a config most of the time. Only a JSON
		// object can be a manifest; look at its first bytes before
		// reading it all.
		head := make([]byte, min(size, sniffLen))
		if n, err := r.ReadAt(head, 0); n < len(head) {
			return kindOpaque, nil, fmt.Errorf("read %s: %w", dgst, err)
		}
		trimmed := bytes.TrimLeft(head, " \t\r\n")
		if len(trimmed) > 0 && trimmed[0] != '{' || len(trimmed) == 0 && size == int64(len(head)) {
			return kindOpaque, nil, nil
		}
	}
	buf := make([]byte, size)
	if n, err := r.ReadAt(buf, 0); n < len(buf) {
		return kindOpaque, nil, fmt.Errorf("read %s: %w", dgst, err)
	}
	kind, refs := parseRefs(kind, buf)
	refs = slices.DeleteFunc(refs, func(d digest.Digest) bool { return d == dgst })
	return kind, refs, nil
}

// parseRefs parses a manifest of the given kind, or, for kindOpaque, a
// JSON document whose mediaType field may name a manifest kind. The
// subject of an OCI manifest is not a reference: it points at the image
// an artifact describes, which does not need the artifact. Descriptors
// whose digest is not a valid sha256 are skipped.
func parseRefs(kind refKind, b []byte) (refKind, []digest.Digest) {
	var doc oci.ManifestRefs
	if err := json.Unmarshal(b, &doc); err != nil {
		return kindOpaque, nil
	}
	if kind == kindOpaque {
		if kind = manifestKind(doc.MediaType); kind == kindOpaque {
			return kindOpaque, nil
		}
	}
	var descs []oci.ContentRef
	switch kind {
	case kindManifest:
		if doc.Config != nil {
			descs = append(descs, *doc.Config)
		}
		descs = append(descs, doc.Layers...)
	case kindIndex:
		descs = doc.Manifests
	}
	refs := make([]digest.Digest, 0, len(descs))
	for _, d := range descs {
		if checkDigest(d.Digest) == nil {
			refs = append(refs, d.Digest)
		}
	}
	slices.Sort(refs)
	return kind, slices.Compact(refs)
}

// refKeyPrefix starts the Badger key of an entry's ref/ record.
const refKeyPrefix = "ref/"

const (
	refRecordVersion   = 1
	refRecordHeaderLen = 1 + 1 + 4
	sha256Len          = 32
)

func refKey(dgst digest.Digest) []byte {
	return []byte(refKeyPrefix + dgst.String())
}

// encodeRefs encodes an entry's references as a version 1 ref/ record
// (layout in doc.go).
func encodeRefs(kind refKind, refs []digest.Digest) []byte {
	b := make([]byte, refRecordHeaderLen, refRecordHeaderLen+sha256Len*len(refs))
	b[0] = refRecordVersion
	b[1] = byte(kind)
	binary.BigEndian.PutUint32(b[2:6], uint32(len(refs)))
	for _, d := range refs {
		b, _ = hex.AppendDecode(b, []byte(d.Encoded())) // checked sha256: 64 hex
	}
	return b
}

// decodeRefs parses a record written by encodeRefs.
func decodeRefs(b []byte) (refKind, []digest.Digest, error) {
	if len(b) < refRecordHeaderLen {
		return 0, nil, fmt.Errorf("ref record of %d bytes is shorter than its %d-byte header", len(b), refRecordHeaderLen)
	}
	if b[0] != refRecordVersion {
		return 0, nil, fmt.Errorf("ref record version %d is not supported (want %d)", b[0], refRecordVersion)
	}
	kind := refKind(b[1])
	if kind > kindIndex {
		return 0, nil, fmt.Errorf("ref record has unknown kind %d", b[1])
	}
	n := binary.BigEndian.Uint32(b[2:6])
	if uint64(len(b)-refRecordHeaderLen) != uint64(n)*sha256Len {
		return 0, nil, fmt.Errorf("ref record of %d bytes does not hold %d digests", len(b), n)
	}
	if kind == kindOpaque && n > 0 {
		return 0, nil, fmt.Errorf("opaque ref record lists %d digests", n)
	}
	var refs []digest.Digest
	if n > 0 {
		refs = make([]digest.Digest, n)
	}
	for i := range refs {
		raw := b[refRecordHeaderLen+i*sha256Len : refRecordHeaderLen+(i+1)*sha256Len]
		refs[i] = digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(raw))
	}
	return kind, refs, nil
}

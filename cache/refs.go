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

// isGenericType reports whether a stored media type says nothing about
// the content, so that a manifest may hide behind it (upstream sent no or
// a generic Content-Type). Such content is a manifest only if its JSON
// mediaType field names one.
func isGenericType(mediaType string) bool {
	if mediaType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return false
	}
	switch mt {
	case "application/octet-stream", "binary/octet-stream", "application/json", "text/plain":
		return true
	}
	return false
}

// mayBeManifest reports whether an entry of this media type and size
// must be read to know whether it references anything. Every such entry
// is classified once, at commit (or, for entries stored by an older
// version, at the first Open that finds no ref/ record for it), and the
// result is persisted as its ref/ record.
func mayBeManifest(mediaType string, size int64) bool {
	return size > 0 && size <= maxManifestSize && (manifestKind(mediaType) != kindOpaque || isGenericType(mediaType))
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

// descriptor and manifestDoc are the parts of OCI and Docker schema2
// manifests and indexes that name other content. descriptor reads the
// digest alone, not a whole oci.Descriptor: a manifest whose other
// descriptor fields are malformed still names its content.
type descriptor struct {
	Digest digest.Digest `json:"digest"`
}

type manifestDoc struct {
	MediaType string       `json:"mediaType"`
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"`
}

// parseRefs parses a manifest of the given kind, or, for kindOpaque, a
// JSON document whose mediaType field may name a manifest kind. The
// subject of an OCI manifest is not a reference: it points at the image
// an artifact describes, which does not need the artifact. Descriptors
// whose digest is not a valid sha256 are skipped.
func parseRefs(kind refKind, b []byte) (refKind, []digest.Digest) {
	var doc manifestDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return kindOpaque, nil
	}
	if kind == kindOpaque {
		if kind = manifestKind(doc.MediaType); kind == kindOpaque {
			return kindOpaque, nil
		}
	}
	var descs []descriptor
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

// The reference graph. Every method below runs with Store.mu held.
//
// s.parents[c] lists the stored manifests that reference c, whether or
// not c itself is stored: a manifest links its children when it is
// installed, so content arriving after its manifest (the normal pull
// order) is linked as it lands. An entry with no stored parent is a
// candidate for eviction and lives in s.lru in recency order: a root
// image (a manifest no stored index references, or an index) or loose
// content. An entry with a stored parent is not in s.lru: it is evicted
// only with its roots, so it never goes before a manifest that needs it.
//
// Pinned content (s.pinned, pins.go) is never evicted: a pinned root is
// not in s.lru, and a unit never takes pinned content. Content reachable
// from a pinned root has a stored parent, so it is not in s.lru either.

// isRootLocked reports whether no stored manifest references dgst.
func (s *Store) isRootLocked(dgst digest.Digest) bool {
	return len(s.parents[dgst]) == 0
}

// insertLocked adds an installed entry to the graph and the eviction
// order. A referenced entry counts as a use of its image. An entry that
// is a pinned root, or that a pinned manifest references, is pinned as it
// lands, with what it references.
func (s *Store) insertLocked(dgst digest.Digest, e *entry) {
	s.items[dgst] = e
	s.entries++
	for _, c := range e.refs {
		if s.isRootLocked(c) {
			// c is referenced from now on: out of the eviction order.
			s.lru.Remove(c)
		}
		s.parents[c] = append(s.parents[c], dgst)
	}
	_, pinRoot := s.pins[dgst]
	switch {
	case !s.isRootLocked(dgst):
		s.touchLocked(dgst, e)
	case !pinRoot: // a pinned root is never an eviction candidate
		s.lru.Add(dgst, e)
	}
	if pinRoot || slices.ContainsFunc(s.parents[dgst], s.isPinnedLocked) {
		s.addPinnedLocked(dgst)
	}
}

// dropLocked removes stored entries from the graph, the eviction order
// and the accounting. Content they referenced and nothing else stored
// references becomes loose: a candidate again, placed as most recently
// used (until the next Open orders it by its access time). This happens
// only after Delete or a damaged manifest; eviction takes such content
// with it.
//
// Dropping pinned content (Delete) may cut other content off its pin, so
// the pinned set is then computed again.
func (s *Store) dropLocked(dgsts ...digest.Digest) {
	gone := make([]*entry, len(dgsts))
	wasPinned := false
	for i, d := range dgsts {
		e := s.items[d]
		gone[i] = e
		wasPinned = wasPinned || s.isPinnedLocked(d)
		delete(s.items, d)
		delete(s.dirty, d)
		s.lru.Remove(d)
		s.size -= e.size
		s.entries--
	}
	unlinked := slices.Clone(dgsts)
	for i, d := range dgsts {
		for _, c := range gone[i].refs {
			ps := s.parents[c]
			if j := slices.Index(ps, d); j >= 0 {
				ps[j] = ps[len(ps)-1]
				ps = ps[:len(ps)-1]
			}
			if len(ps) > 0 {
				s.parents[c] = ps
				continue
			}
			delete(s.parents, c)
			if _, stored := s.items[c]; !stored {
				unlinked = append(unlinked, c) // referenced by nothing stored
			}
			if _, pinRoot := s.pins[c]; pinRoot {
				continue // stays out of the eviction order
			}
			if ce, ok := s.items[c]; ok {
				s.lru.Add(c, ce)
			}
		}
	}
	s.forgetLinksLocked(unlinked)
	if wasPinned {
		s.recomputePinnedLocked()
	}
	s.syncSizeLocked()
}

// unitLocked returns the image rooted at root as a unit of eviction: root,
// and everything it references, transitively, that no stored manifest
// outside the unit references and that is not pinned (a pinned manifest
// under root stays, and with it what it references). root may be any
// stored entry; the caller makes sure it is not pinned. Content
// addressing rules out cycles; the membership check makes the walk
// terminate regardless.
func (s *Store) unitLocked(root digest.Digest) []digest.Digest {
	unit := []digest.Digest{root}
	in := map[digest.Digest]bool{root: true}
	remaining := map[digest.Digest]int{} // stored parents not yet in the unit
	for i := 0; i < len(unit); i++ {
		for _, c := range s.items[unit[i]].refs {
			if in[c] {
				continue
			}
			if _, stored := s.items[c]; !stored || s.isPinnedLocked(c) {
				continue
			}
			n, ok := remaining[c]
			if !ok {
				n = len(s.parents[c])
			}
			if n--; n > 0 {
				remaining[c] = n
				continue
			}
			in[c] = true
			unit = append(unit, c)
		}
	}
	return unit
}

// evictOldestLocked removes the least recently used image (or loose
// entry) as a unit and returns its members and their bytes. It returns
// nothing when nothing but pinned content is stored.
func (s *Store) evictOldestLocked() (unit []digest.Digest, bytes int64) {
	root, _, ok := s.lru.GetOldest()
	if !ok {
		if len(s.items) == len(s.pinned) {
			return nil, 0
		}
		// Cannot happen: every unpinned entry has a root in s.lru
		// unless references form a cycle, which content addressing
		// rules out. Keep MaxSize a hard bound anyway.
		for d := range s.items {
			if !s.isPinnedLocked(d) {
				root = d
				break
			}
		}
	}
	unit = s.unitLocked(root)
	for _, d := range unit {
		bytes += s.items[d].size
	}
	s.dropLocked(unit...)
	return unit, bytes
}

// maxRootWalk bounds the ancestors visited to find an entry's root.
const maxRootWalk = 64

// soleRootLocked returns the one root that transitively references the
// referenced entry dgst. It reports false when dgst is itself a root, or
// when several roots reference it (content shared between images), or
// the walk is unusually long.
func (s *Store) soleRootLocked(dgst digest.Digest) (digest.Digest, bool) {
	var root digest.Digest
	seen := map[digest.Digest]bool{dgst: true}
	// walk visits the ancestors of d depth first; it stops at the second
	// root, so a base layer with a thousand parents costs two steps.
	var walk func(d digest.Digest) bool
	walk = func(d digest.Digest) bool {
		for _, p := range s.parents[d] {
			if seen[p] {
				continue
			}
			if seen[p] = true; len(seen) > maxRootWalk {
				return false
			}
			if len(s.parents[p]) > 0 {
				if !walk(p) {
					return false
				}
				continue
			}
			if root != "" {
				return false
			}
			root = p
		}
		return true
	}
	if !walk(dgst) {
		return "", false
	}
	return root, root != ""
}

// touchLocked marks a stored entry used now. Using content of exactly one
// image is using that image: its root moves to the front too, so an image
// being pulled is not the next to go. Content shared by several images
// moves none of them, since the store cannot tell which is being pulled:
// a base layer would otherwise refresh every image built on it at once.
func (s *Store) touchLocked(dgst digest.Digest, e *entry) {
	e.lastAccess = s.nowLocked()
	s.dirty[dgst] = struct{}{}
	if s.isRootLocked(dgst) {
		s.lru.Get(dgst) // to the front
		return
	}
	s.touchRootLocked(dgst)
}

// touchRootLocked marks the sole root of dgst, if it has one, used now.
// dgst itself need not be stored.
func (s *Store) touchRootLocked(dgst digest.Digest) {
	if s.isRootLocked(dgst) {
		return
	}
	if root, ok := s.soleRootLocked(dgst); ok {
		if re, ok := s.items[root]; ok {
			s.lru.Get(root) // to the front, unless pinned (not in s.lru)
			re.lastAccess = s.nowLocked()
			s.dirty[root] = struct{}{}
		}
	}
}

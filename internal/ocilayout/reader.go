package ocilayout

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// maxMetadataSize bounds the index.json and oci-layout files Read buffers.
const maxMetadataSize = 16 << 20

// Blob is a blob of the archive, handed to Read's function.
type Blob struct {
	Digest digest.Digest
	Size   int64
	// MediaType is the manifest media type when the blob is an OCI image
	// manifest or index or a Docker schema2 manifest or manifest list of
	// at most 4 MiB, else "application/octet-stream".
	MediaType string
	// Body yields the blob's content. It is valid only until the function
	// returns. For a blob larger than 4 MiB, it is read from the archive
	// as it is consumed and returns a [*DigestError] instead of io.EOF when
	// the content does not hash to Digest.
	Body io.Reader
}

// Layout is what Read found in an archive.
type Layout struct {
	// Index holds the descriptors of index.json, annotations included.
	Index []oci.Descriptor
	// Blobs maps the digest of every blob in the archive to its size.
	Blobs map[digest.Digest]int64

	refs      map[digest.Digest][]oci.Descriptor // what each manifest and index references
	referrers map[digest.Digest][]oci.Descriptor // by subject: the manifests that name it
	subjects  map[digest.Digest]digest.Digest    // the subject of each manifest that names one
}

// Subject returns the subject the manifest or index dgst of the archive
// names (it is a referrer of that digest), or "".
func (l *Layout) Subject(dgst digest.Digest) digest.Digest { return l.subjects[dgst] }

// Referrers returns, sorted by digest, the manifests and indexes of the
// archive whose subject is dgst: its signatures, SBOMs and other
// artifacts, which dgst does not reference. Whether index.json names them
// or not, they are found by the subject their own content names, and
// described as the referrers API lists them: media type, digest, size,
// artifact type (the manifest's, else its config's media type) and the
// manifest's annotations.
func (l *Layout) Referrers(dgst digest.Digest) []oci.Descriptor {
	out := slices.Clone(l.referrers[dgst])
	slices.SortFunc(out, func(a, b oci.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return out
}

// Refs returns what the manifest or index dgst references: its config and
// layers, or its manifests. It returns nil when dgst is not a manifest or
// index of the archive.
func (l *Layout) Refs(dgst digest.Digest) []oci.Descriptor {
	refs, ok := l.refs[dgst]
	if !ok {
		return nil
	}
	return append([]oci.Descriptor{}, refs...)
}

// Missing returns, sorted and without duplicates, the digest of every blob
// referenced from index.json, directly or through manifests and indexes,
// that the archive lacks. Non-distributable (foreign) layers and content
// with URLs are not required.
func (l *Layout) Missing() []digest.Digest {
	seen := make(map[digest.Digest]bool)
	var missing []digest.Digest
	stack := append([]oci.Descriptor{}, l.Index...)
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[d.Digest] || !oci.Distributable(d) {
			continue
		}
		seen[d.Digest] = true
		if _, ok := l.Blobs[d.Digest]; !ok {
			missing = append(missing, d.Digest)
			continue
		}
		stack = append(stack, l.refs[d.Digest]...)
	}
	slices.Sort(missing)
	return missing
}

// Read reads an OCI image-layout archive, a tar or a gzip-compressed tar,
// from r in one pass and calls fn, if not nil, once for each distinct blob
// in archive order. It verifies every blob against its digest, even one fn
// did not read to the end; small blobs (up to 4 MiB) before fn sees them.
// An error from fn stops the read and is returned as is. Errors about the
// archive itself match [ErrInvalidArchive] or [ErrDigestMismatch]; the
// package documentation lists what is checked. On error the Layout is nil.
func Read(r io.Reader, fn func(b Blob) error) (*Layout, error) {
	rd := &reader{
		fn: fn,
		layout: &Layout{Blobs: make(map[digest.Digest]int64), refs: make(map[digest.Digest][]oci.Descriptor),
			referrers: make(map[digest.Digest][]oci.Descriptor), subjects: make(map[digest.Digest]digest.Digest)},
	}
	if err := rd.read(r); err != nil {
		return nil, err
	}
	return rd.layout, nil
}

// reader is the state of one Read.
type reader struct {
	fn       func(Blob) error
	layout   *Layout
	sawIndex bool
}

// Magic numbers of the compressed streams Read recognises.
const (
	gzipMagic = "\x1f\x8b"
	zstdMagic = "\x28\xb5\x2f\xfd"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("ocilayout: %w: %s", ErrInvalidArchive, fmt.Sprintf(format, args...))
}

// readErr describes an error of the tar or gzip stream: truncation and
// corrupt headers are ErrInvalidArchive, anything else (from the
// underlying reader) is kept as is.
func readErr(what string, err error) error {
	var corrupt flate.CorruptInputError
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) ||
		errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.As(err, &corrupt) {
		return fmt.Errorf("ocilayout: %w: %s: %w", ErrInvalidArchive, what, err)
	}
	return fmt.Errorf("ocilayout: %s: %w", what, err)
}

func (rd *reader) read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(len(zstdMagic))
	if len(magic) == 0 {
		if err == io.EOF {
			return invalid("empty archive")
		}
		return readErr("read archive", err)
	}
	var src io.Reader = br
	var gz *gzip.Reader
	switch {
	case bytes.HasPrefix(magic, []byte(gzipMagic)):
		if gz, err = gzip.NewReader(br); err != nil {
			return readErr("open gzip stream", err)
		}
		src = gz
	case bytes.HasPrefix(magic, []byte(zstdMagic)):
		return invalid("zstd-compressed archives are not supported; decompress it or use a plain or gzip tar")
	}

	cr := &countingReader{r: src}
	tr := tar.NewReader(cr)
	var end int64 // offset just after the last entry's data
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// tar.Reader also reports io.EOF when the stream stops at an entry
			// boundary; only the two zero blocks of the end-of-archive marker
			// show that nothing was cut off.
			if cr.n-end < 2*512 {
				return invalid("archive ends without its end-of-archive marker after %d bytes: truncated", cr.n)
			}
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return readErr(fmt.Sprintf("read tar header after offset %d", end), err)
		}
		if err := rd.entry(tr, hdr); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return readErr(fmt.Sprintf("read %q", hdr.Name), err)
		}
		end = cr.n
	}
	if gz != nil {
		// The tar ends before the gzip trailer: read it to check the CRC.
		if _, err := io.Copy(io.Discard, gz); err != nil {
			return readErr("read gzip stream after the tar", err)
		}
	}
	if !rd.sawIndex {
		return invalid("no index.json")
	}
	return nil
}

// entry handles one tar entry. The caller drains what it leaves unread.
func (rd *reader) entry(tr *tar.Reader, hdr *tar.Header) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if isSparse(hdr) {
		// A few bytes of sparse map can describe terabytes of holes that
		// would then be read and hashed; no OCI tool writes sparse files.
		return invalid("%q is a sparse file", hdr.Name)
	}
	switch {
	case name == "blobs" || strings.HasPrefix(name, "blobs/"):
		return rd.blobEntry(tr, hdr, name)
	case name == "oci-layout":
		b, err := readMetadata(tr, hdr, name)
		if err != nil {
			return err
		}
		var v struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return invalid("parse oci-layout: %v", err)
		}
		if v.Version != "1.0.0" {
			return invalid("oci-layout: unsupported imageLayoutVersion %q (want 1.0.0)", v.Version)
		}
	case name == "index.json":
		if rd.sawIndex {
			return invalid("more than one index.json")
		}
		rd.sawIndex = true
		b, err := readMetadata(tr, hdr, name)
		if err != nil {
			return err
		}
		return rd.parseIndex(b)
	}
	// Anything else (manifest.json, repositories, ...) is skipped.
	return nil
}

// cleanName rejects absolute names and names with ".." and returns the
// name cleaned, without "./" prefix or trailing slash ("." for the root).
func cleanName(name string) (string, error) {
	if name == "" {
		return "", invalid("entry with an empty name")
	}
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) {
		return "", invalid("entry %q has an absolute name", name)
	}
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return "", invalid("entry %q has a name with ..", name)
		}
	}
	return path.Clean(name), nil
}

func readMetadata(tr *tar.Reader, hdr *tar.Header, name string) ([]byte, error) {
	if hdr.Typeflag != tar.TypeReg {
		return nil, invalid("%s is a %s, not a regular file", name, typeName(hdr.Typeflag))
	}
	if hdr.Size > maxMetadataSize {
		return nil, invalid("%s is %d bytes, more than the limit of %d", name, hdr.Size, maxMetadataSize)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, readErr("read "+name, err)
	}
	return b, nil
}

func (rd *reader) parseIndex(b []byte) error {
	var index struct {
		SchemaVersion int              `json:"schemaVersion"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(b, &index); err != nil {
		return invalid("parse index.json: %v", err)
	}
	if index.SchemaVersion != 2 {
		return invalid("index.json: schemaVersion %d is not supported (want 2)", index.SchemaVersion)
	}
	for i, d := range index.Manifests {
		if err := d.Digest.Validate(); err != nil {
			return invalid("index.json: manifest %d: digest %q: %v", i, d.Digest, err)
		}
		if d.Size < 0 {
			return invalid("index.json: manifest %d (%s): negative size %d", i, d.Digest, d.Size)
		}
	}
	rd.layout.Index = index.Manifests
	return nil
}

// blobEntry handles an entry under blobs/.
func (rd *reader) blobEntry(tr *tar.Reader, hdr *tar.Header, name string) error {
	parts := strings.Split(name, "/")
	switch hdr.Typeflag {
	case tar.TypeDir:
		if len(parts) <= 2 { // blobs/ or blobs/<algorithm>/
			return nil
		}
		return invalid("unexpected directory %q under blobs/", hdr.Name)
	case tar.TypeReg:
	default:
		return invalid("%q is a %s; blobs must be regular files", hdr.Name, typeName(hdr.Typeflag))
	}
	if len(parts) != 3 {
		return invalid("blob path %q is not blobs/sha256/<hex>", hdr.Name)
	}
	if parts[1] != "sha256" {
		return invalid("blob %q: digest algorithm %q is not supported, only sha256", hdr.Name, parts[1])
	}
	if !isLowerHex64(parts[2]) {
		return invalid("blob %q: name is not 64 lowercase hex digits", hdr.Name)
	}
	dgst := digest.NewDigestFromEncoded(digest.SHA256, parts[2])
	if _, dup := rd.layout.Blobs[dgst]; dup {
		// Seen already: check this copy too, but hand it on only once.
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			return readErr("read blob "+dgst.String(), err)
		}
		if got := sha256Digest(h.Sum(nil)); got != dgst {
			return fmt.Errorf("ocilayout: %w", &DigestError{Digest: dgst, Got: got})
		}
		return nil
	}
	if hdr.Size <= maxManifestSize {
		return rd.smallBlob(tr, dgst, hdr.Size)
	}
	return rd.largeBlob(tr, dgst, hdr.Size)
}

// smallBlob reads a blob of at most maxManifestSize bytes into memory,
// verifies it and sniffs its media type before calling fn.
func (rd *reader) smallBlob(tr *tar.Reader, dgst digest.Digest, size int64) error {
	b := make([]byte, size)
	if _, err := io.ReadFull(tr, b); err != nil {
		return readErr("read blob "+dgst.String(), err)
	}
	if got := sha256Digest(sha256Sum(b)); got != dgst {
		return fmt.Errorf("ocilayout: %w", &DigestError{Digest: dgst, Got: got})
	}
	mt, refs := sniff(b)
	rd.layout.Blobs[dgst] = size
	if refs != nil {
		rd.layout.refs[dgst] = refs
		if subject, desc := referrerOf(b, mt); subject != "" {
			desc.Digest, desc.Size = dgst, size
			rd.layout.referrers[subject] = append(rd.layout.referrers[subject], desc)
			rd.layout.subjects[dgst] = subject
		}
	}
	if rd.fn == nil {
		return nil
	}
	return rd.fn(Blob{Digest: dgst, Size: size, MediaType: mt, Body: bytes.NewReader(b)})
}

// largeBlob hands fn a verifying reader over the entry, then verifies
// whatever fn left unread.
func (rd *reader) largeBlob(tr *tar.Reader, dgst digest.Digest, size int64) error {
	vr := &verifyReader{r: tr, h: sha256.New(), dgst: dgst}
	if rd.fn != nil {
		if err := rd.fn(Blob{Digest: dgst, Size: size, MediaType: mediaTypeOctetStream, Body: vr}); err != nil {
			var de *DigestError
			if errors.As(vr.err, &de) && !errors.Is(err, ErrDigestMismatch) {
				// fn replaced the mismatch by an error of its own: report both.
				return errors.Join(err, fmt.Errorf("ocilayout: %w", de))
			}
			return err
		}
	}
	if _, err := io.Copy(io.Discard, vr); err != nil {
		return err
	}
	rd.layout.Blobs[dgst] = size
	return nil
}

// verifyReader hashes what it reads and returns a *DigestError instead of
// io.EOF when the content does not hash to dgst. Its errors are sticky.
type verifyReader struct {
	r    io.Reader
	h    hash.Hash
	dgst digest.Digest
	err  error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	switch {
	case err == io.EOF:
		if got := sha256Digest(v.h.Sum(nil)); got != v.dgst {
			err = fmt.Errorf("ocilayout: %w", &DigestError{Digest: v.dgst, Got: got})
		}
	case err != nil:
		err = readErr("read blob "+v.dgst.String(), err)
	}
	v.err = err
	return n, err
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// isSparse reports whether hdr is a GNU sparse file, in the old GNU
// format or the PAX one.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func isLowerHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func sha256Sum(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

// typeName names a tar entry type for error messages.
func typeName(flag byte) string {
	switch flag {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	case tar.TypeGNUSparse:
		return "sparse file"
	}
	return fmt.Sprintf("entry of type %q", flag)
}

package ocilayout

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// Writer streams an OCI image-layout archive to an io.Writer. Add every
// blob with AddBlob, name the images with AddImage (and, for older docker
// load, AddDockerManifest), then Close. A Writer is not safe for
// concurrent use.
//
// Once AddBlob has failed after starting the blob's tar entry, the archive
// is unusable: every later call returns that error and the caller should
// discard what was written.
type Writer struct {
	tw      *tar.Writer
	blobs   map[digest.Digest]int64
	images  []oci.Descriptor
	docker  []dockerImage
	buf     []byte // copy buffer, reused across blobs
	started bool   // oci-layout and the blob directories are written
	closed  bool
	err     error // sticky: the archive is unusable
}

// dockerImage is an AddDockerManifest call, checked and written at Close.
type dockerImage struct {
	config   digest.Digest
	layers   []digest.Digest
	repoTags []string
}

// dockerManifestEntry is one element of Docker's manifest.json.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// NewWriter returns a Writer that writes a tar archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{tw: tar.NewWriter(w), blobs: make(map[digest.Digest]int64)}
}

// Has reports whether the blob dgst was added, so callers can skip
// fetching it.
func (w *Writer) Has(dgst digest.Digest) bool {
	_, ok := w.blobs[dgst]
	return ok
}

// AddBlob writes the size bytes of r as blobs/sha256/<hex>, hashing them on
// the way, then reads one byte more to check that r is at its end. It
// fails, naming dgst, if r yields more or fewer than size bytes or bytes
// that hash to another digest (a [*DigestError]); the archive is then
// unusable. Only sha256 digests are accepted. Adding a digest a second
// time does nothing and does not read r.
func (w *Writer) AddBlob(dgst digest.Digest, size int64, r io.Reader) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("ocilayout: add blob %s: writer is closed", dgst)
	}
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("ocilayout: add blob %q: %w", dgst, err)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return fmt.Errorf("ocilayout: add blob %s: algorithm %s is not supported, only sha256", dgst, dgst.Algorithm())
	}
	if size < 0 {
		return fmt.Errorf("ocilayout: add blob %s: negative size %d", dgst, size)
	}
	if w.Has(dgst) {
		return nil
	}
	if err := w.start(); err != nil {
		return err
	}
	if err := w.tw.WriteHeader(fileHeader(blobPath(dgst), size)); err != nil {
		return w.fail(fmt.Errorf("ocilayout: add blob %s: write header: %w", dgst, err))
	}
	if w.buf == nil {
		w.buf = make([]byte, 32<<10)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(w.tw, h), io.LimitReader(r, size), w.buf)
	if err != nil {
		return w.fail(fmt.Errorf("ocilayout: add blob %s: %w", dgst, err))
	}
	if n < size {
		return w.fail(fmt.Errorf("ocilayout: add blob %s: got %d bytes, want %d", dgst, n, size))
	}
	var extra [1]byte
	if m, _ := io.ReadFull(r, extra[:]); m > 0 {
		return w.fail(fmt.Errorf("ocilayout: add blob %s: got more than %d bytes", dgst, size))
	}
	if got := sha256Digest(h.Sum(nil)); got != dgst {
		return w.fail(fmt.Errorf("ocilayout: add %w", &DigestError{Digest: dgst, Got: got}))
	}
	w.blobs[dgst] = size
	return nil
}

// AddImage adds desc, a manifest or index already added with AddBlob, to
// index.json with annotations merged into desc.Annotations (annotations
// win). Pass AnnotationRefName and AnnotationImageName. Close checks that
// the blob was added with desc.Size.
//
// skopeo (containers/image) selects an image by AnnotationRefName only
// among entries of the OCI media types, MediaTypeImageManifest and
// MediaTypeImageIndex: an entry of a Docker manifest or manifest list is
// found by docker load but not by oci-archive:FILE.tar:REF. Wrapping such a
// manifest in an OCI index of one entry (with its platform) makes it
// selectable while keeping its digest.
func (w *Writer) AddImage(desc oci.Descriptor, annotations map[string]string) {
	if len(desc.Annotations)+len(annotations) > 0 {
		merged := make(map[string]string, len(desc.Annotations)+len(annotations))
		maps.Copy(merged, desc.Annotations)
		maps.Copy(merged, annotations)
		desc.Annotations = merged
	}
	w.images = append(w.images, desc)
}

// AddReferrer adds desc, a referrer's manifest already added with
// AddBlob, to index.json as an entry that names no image: its media type,
// digest, size, artifact type and annotations, as a referrers list
// describes it, and no AnnotationRefName, so that skopeo and docker load
// take it for no image while tools that read a layout's referrers (oras)
// find it by the subject its manifest names. A referrer added twice is
// listed once.
func (w *Writer) AddReferrer(desc oci.Descriptor) {
	for _, d := range w.images {
		if d.Digest == desc.Digest && d.Annotations[AnnotationRefName] == "" {
			return
		}
	}
	w.images = append(w.images, oci.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size,
		ArtifactType: desc.ArtifactType, Annotations: maps.Clone(desc.Annotations)})
}

// AddDockerManifest adds an entry to manifest.json, the file docker load
// before Docker 25 reads: the image's config blob, its layer blobs in
// order (uncompressed or gzip tars) and the tags to give it. Without a
// call, no manifest.json is written.
func (w *Writer) AddDockerManifest(config digest.Digest, layers []digest.Digest, repoTags []string) {
	w.docker = append(w.docker, dockerImage{
		config:   config,
		layers:   append([]digest.Digest(nil), layers...),
		repoTags: append([]string{}, repoTags...),
	})
}

// Close writes index.json, and manifest.json if AddDockerManifest was
// called, then ends the tar archive. It does not close the underlying
// io.Writer. It fails, naming the digest, when an image or Docker manifest
// names a blob that was never added.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("ocilayout: writer already closed")
	}
	w.closed = true
	if err := w.check(); err != nil {
		return w.fail(err)
	}
	if err := w.start(); err != nil {
		return err
	}
	index := struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}{2, oci.MediaTypeImageIndex, append([]oci.Descriptor{}, w.images...)}
	if err := w.writeJSON("index.json", index); err != nil {
		return err
	}
	if len(w.docker) > 0 {
		entries := make([]dockerManifestEntry, 0, len(w.docker))
		for _, d := range w.docker {
			e := dockerManifestEntry{Config: blobPath(d.config), RepoTags: d.repoTags, Layers: []string{}}
			for _, l := range d.layers {
				e.Layers = append(e.Layers, blobPath(l))
			}
			entries = append(entries, e)
		}
		if err := w.writeJSON("manifest.json", entries); err != nil {
			return err
		}
	}
	if err := w.tw.Close(); err != nil {
		return w.fail(fmt.Errorf("ocilayout: close tar: %w", err))
	}
	return nil
}

// check reports every image and Docker manifest that names a blob never
// added, or with another size.
func (w *Writer) check() error {
	var errs []error
	for i, d := range w.images {
		size, ok := w.blobs[d.Digest]
		switch {
		case d.MediaType == "":
			errs = append(errs, fmt.Errorf("ocilayout: index.json entry %d (%s) has no media type", i, d.Digest))
		case !ok:
			errs = append(errs, fmt.Errorf("ocilayout: index.json entry %d names blob %s, which was never added", i, d.Digest))
		case size != d.Size:
			errs = append(errs, fmt.Errorf("ocilayout: index.json entry %d names blob %s with size %d, but it was added with %d bytes", i, d.Digest, d.Size, size))
		}
	}
	for i, d := range w.docker {
		for _, dgst := range append([]digest.Digest{d.config}, d.layers...) {
			if !w.Has(dgst) {
				errs = append(errs, fmt.Errorf("ocilayout: manifest.json entry %d (%v) names blob %s, which was never added", i, d.repoTags, dgst))
			}
		}
	}
	return errors.Join(errs...)
}

// start writes oci-layout and the blob directories, once.
func (w *Writer) start() error {
	if w.started {
		return nil
	}
	w.started = true
	if err := w.writeFile("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: time.Unix(0, 0)}
		if err := w.tw.WriteHeader(hdr); err != nil {
			return w.fail(fmt.Errorf("ocilayout: write %s: %w", dir, err))
		}
	}
	return nil
}

func (w *Writer) writeJSON(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return w.fail(fmt.Errorf("ocilayout: encode %s: %w", name, err))
	}
	return w.writeFile(name, b)
}

func (w *Writer) writeFile(name string, b []byte) error {
	if err := w.tw.WriteHeader(fileHeader(name, int64(len(b)))); err != nil {
		return w.fail(fmt.Errorf("ocilayout: write %s: %w", name, err))
	}
	if _, err := w.tw.Write(b); err != nil {
		return w.fail(fmt.Errorf("ocilayout: write %s: %w", name, err))
	}
	return nil
}

// fail makes err sticky and returns it.
func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

// fileHeader is the header of a regular file: fixed mode, time and owner
// so that output is reproducible.
func fileHeader(name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: time.Unix(0, 0)}
}

func blobPath(dgst digest.Digest) string {
	return "blobs/" + dgst.Algorithm().String() + "/" + dgst.Encoded()
}

func sha256Digest(sum []byte) digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum))
}

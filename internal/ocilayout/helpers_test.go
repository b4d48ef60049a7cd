package ocilayout

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// entry is a tar entry of a hand-made archive.
type entry struct {
	name string
	typ  byte // tar.TypeReg when zero
	body []byte
	link string
}

// buildTar writes entries as a tar archive.
func buildTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, ModTime: time.Unix(0, 0)}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			hdr.Size = int64(len(e.body))
		case tar.TypeXGlobalHeader: // as git archive writes
			hdr = &tar.Header{Name: e.name, Typeflag: e.typ, PAXRecords: map[string]string{"comment": "x"}}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("WriteHeader(%s): %v", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("Write(%s): %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	// The fastest level: the reader is what is tested, and any level
	// makes the same stream format.
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// blobEntry is the tar entry of body under its own digest.
func blobEntry(body []byte) entry {
	return entry{name: "blobs/sha256/" + digest.FromBytes(body).Encoded(), body: body}
}

// descOf describes body with media type mt.
func descOf(mt string, body []byte) oci.Descriptor {
	return oci.Descriptor{MediaType: mt, Digest: digest.FromBytes(body), Size: int64(len(body))}
}

// manifestJSON is an image manifest; mediaType is omitted when empty.
func manifestJSON(t testing.TB, mediaType string, config oci.Descriptor, layers ...oci.Descriptor) []byte {
	t.Helper()
	return mustJSON(t, struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType,omitempty"`
		Config        oci.Descriptor   `json:"config"`
		Layers        []oci.Descriptor `json:"layers"`
	}{2, mediaType, config, append([]oci.Descriptor{}, layers...)})
}

// indexJSON is an index or manifest list; mediaType is omitted when empty.
func indexJSON(t testing.TB, mediaType string, manifests ...oci.Descriptor) []byte {
	t.Helper()
	return mustJSON(t, struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType,omitempty"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}{2, mediaType, append([]oci.Descriptor{}, manifests...)})
}

const (
	layerType  = "application/vnd.oci.image.layer.v1.tar+gzip"
	configType = "application/vnd.oci.image.config.v1+json"
	ociLayout  = `{"imageLayoutVersion":"1.0.0"}`
)

// minimal is a small valid layout: one image, a config and one layer.
type minimal struct {
	layer, config, manifest []byte
	index                   []byte // index.json
}

func newMinimal(t testing.TB) minimal {
	m := minimal{layer: []byte("hello layer"), config: []byte(`{"architecture":"amd64","os":"linux"}`)}
	m.manifest = manifestJSON(t, oci.MediaTypeImageManifest, descOf(configType, m.config), descOf(layerType, m.layer))
	d := descOf(oci.MediaTypeImageManifest, m.manifest)
	d.Annotations = map[string]string{AnnotationRefName: "v1"}
	m.index = indexJSON(t, oci.MediaTypeImageIndex, d)
	return m
}

// entries are the entries of the layout, in a usual order.
func (m minimal) entries() []entry {
	return []entry{
		{name: "oci-layout", body: []byte(ociLayout)},
		{name: "blobs/", typ: tar.TypeDir},
		{name: "blobs/sha256/", typ: tar.TypeDir},
		blobEntry(m.layer),
		blobEntry(m.config),
		blobEntry(m.manifest),
		{name: "index.json", body: m.index},
	}
}

// recorder is a Read callback that records each blob's content and
// media type and how often it was called per digest.
type recorder struct {
	mu        sync.Mutex
	bodies    map[digest.Digest][]byte
	types     map[digest.Digest]string
	calls     map[digest.Digest]int
	readLarge bool // read bodies of large blobs (false: leave them unread)
}

func newRecorder() *recorder {
	return &recorder{bodies: map[digest.Digest][]byte{}, types: map[digest.Digest]string{}, calls: map[digest.Digest]int{}, readLarge: true}
}

func (r *recorder) fn(b Blob) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[b.Digest]++
	r.types[b.Digest] = b.MediaType
	if b.Size > maxManifestSize && !r.readLarge {
		return nil
	}
	body, err := io.ReadAll(b.Body)
	if err != nil {
		return err
	}
	if int64(len(body)) != b.Size {
		return errors.New("body size differs from Blob.Size")
	}
	r.bodies[b.Digest] = body
	return nil
}

// gnuSparseHeader is the header block of an old-GNU sparse file that is
// one hole of size bytes, with no data.
func gnuSparseHeader(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeGNUSparse, Name: name, Format: tar.FormatGNU}); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	h := bytes.Clone(buf.Bytes()[:512])
	copy(h[483:495], fmt.Sprintf("%011o\x00", size)) // realsize
	copy(h[148:156], "        ")                     // checksum, computed with itself as spaces
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

// genReader yields n deterministic pseudo-random bytes without holding
// them in memory.
type genReader struct {
	n, off int64
	state  uint64  // xorshift64
	cur    [8]byte // the current state's bytes
	pos    int     // how many of cur were returned
}

func newGen(n int64, seed uint64) *genReader { return &genReader{n: n, state: seed | 1, pos: 8} }

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	if rem := g.n - g.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	for n := 0; n < len(p); {
		// Whole states straight into p: the same bytes, a fraction of
		// the instrumented copies under -race.
		for g.pos == len(g.cur) && len(p)-n >= 8 {
			g.state ^= g.state << 13
			g.state ^= g.state >> 7
			g.state ^= g.state << 17
			binary.LittleEndian.PutUint64(p[n:], g.state)
			n += 8
		}
		if n == len(p) {
			break
		}
		if g.pos == len(g.cur) {
			g.state ^= g.state << 13
			g.state ^= g.state >> 7
			g.state ^= g.state << 17
			binary.LittleEndian.PutUint64(g.cur[:], g.state)
			g.pos = 0
		}
		c := copy(p[n:], g.cur[g.pos:])
		g.pos += c
		n += c
	}
	g.off += int64(len(p))
	return len(p), nil
}

// genBytes returns the bytes newGen(n, seed) yields.
func genBytes(n int64, seed uint64) []byte {
	b, _ := io.ReadAll(newGen(n, seed))
	return b
}

// wantErr fails t unless err matches target and mentions every want.
func wantErr(t *testing.T, err, target error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("error %q does not match %q", err, target)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

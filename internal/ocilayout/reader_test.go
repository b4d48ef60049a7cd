package ocilayout

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// replace returns entries with the entry named name replaced by e (or
// removed when e.name is empty).
func replace(entries []entry, name string, e entry) []entry {
	out := make([]entry, 0, len(entries))
	for _, x := range entries {
		switch {
		case x.name != name:
			out = append(out, x)
		case e.name != "":
			out = append(out, e)
		}
	}
	return out
}

// corruptDeflate returns the gzip stream b with the first deflate block
// header, after the 10-byte gzip header, made invalid (block type 3).
func corruptDeflate(b []byte) []byte {
	b = bytes.Clone(b)
	b[10] = 0xff
	return b
}

// insert returns entries with extra inserted before index.json.
func insert(entries []entry, extra ...entry) []entry {
	i := slices.IndexFunc(entries, func(e entry) bool { return e.name == "index.json" })
	return slices.Insert(slices.Clone(entries), i, extra...)
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	m := newMinimal(t)
	valid := buildTar(t, m.entries()...)
	layerDgst := digest.FromBytes(m.layer)
	layerName := "blobs/sha256/" + layerDgst.Encoded()
	flipped := bytes.Clone(m.layer)
	flipped[3] ^= 1

	big := genBytes(maxManifestSize+1<<20, 3)
	bigDgst := digest.FromBytes(big)
	bigFlipped := bytes.Clone(big)
	bigFlipped[len(big)/2] ^= 0x80
	bigEntries := insert(m.entries(), entry{name: "blobs/sha256/" + bigDgst.Encoded(), body: bigFlipped})

	sha512 := digest.SHA512.FromBytes(m.layer)
	gz := gzipBytes(t, valid)

	tests := []struct {
		name    string
		archive []byte
		// readLarge: fn reads large bodies to the end (else leaves them).
		readLarge bool
		target    error
		want      []string
		// digest: the error must be a *DigestError naming it, and fn must
		// not have been called for it when it is a small blob.
		digest digest.Digest
	}{
		{
			name:    "flipped byte in small blob",
			archive: buildTar(t, replace(m.entries(), layerName, entry{name: layerName, body: flipped})...),
			target:  ErrDigestMismatch, digest: layerDgst,
			want: []string{"blob " + layerDgst.String() + ": content hashes to " + digest.FromBytes(flipped).String()},
		},
		{
			name:    "flipped byte in large blob read by fn",
			archive: buildTar(t, bigEntries...), readLarge: true,
			target: ErrDigestMismatch, digest: bigDgst,
		},
		{
			name:    "flipped byte in large blob left unread by fn",
			archive: buildTar(t, bigEntries...),
			target:  ErrDigestMismatch, digest: bigDgst,
		},
		{
			name:    "tampered duplicate of a blob",
			archive: buildTar(t, insert(m.entries(), entry{name: layerName, body: flipped})...),
			target:  ErrDigestMismatch, digest: layerDgst,
		},
		{
			name:    "parent directory name",
			archive: buildTar(t, insert(m.entries(), entry{name: "../evil", body: []byte("x")})...),
			target:  ErrInvalidArchive, want: []string{`"../evil"`},
		},
		{
			name:    "parent directory inside blobs",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha256/../../../etc/passwd", body: []byte("x")})...),
			target:  ErrInvalidArchive, want: []string{"blobs/sha256/../../../etc/passwd"},
		},
		{
			name:    "absolute name",
			archive: buildTar(t, insert(m.entries(), entry{name: "/etc/passwd", body: []byte("x")})...),
			target:  ErrInvalidArchive, want: []string{`"/etc/passwd"`, "absolute"},
		},
		{
			name:    "symlink under blobs",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha256/" + digest.FromString("x").Encoded(), typ: tar.TypeSymlink, link: "/etc/passwd"})...),
			target:  ErrInvalidArchive, want: []string{"symlink"},
		},
		{
			name:    "hard link under blobs",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha256/" + digest.FromString("x").Encoded(), typ: tar.TypeLink, link: layerName})...),
			target:  ErrInvalidArchive, want: []string{"hard link"},
		},
		{
			name:    "device under blobs",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha256/" + digest.FromString("x").Encoded(), typ: tar.TypeChar})...),
			target:  ErrInvalidArchive, want: []string{"character device"},
		},
		{
			name:    "sparse file",
			archive: append(append(bytes.Clone(valid[:len(valid)-1024]), gnuSparseHeader(t, "huge", 1<<40)...), make([]byte, 1024)...),
			target:  ErrInvalidArchive, want: []string{`"huge" is a sparse file`},
		},
		{
			name:    "sha512 blob path",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha512/" + sha512.Encoded(), body: m.layer})...),
			target:  ErrInvalidArchive, want: []string{"sha512", "only sha256"},
		},
		{
			name:    "uppercase hex",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha256/" + strings.ToUpper(layerDgst.Encoded()), body: m.layer})...),
			target:  ErrInvalidArchive, want: []string{"64 lowercase hex"},
		},
		{
			name:    "short hex",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha256/abc", body: m.layer})...),
			target:  ErrInvalidArchive, want: []string{"blobs/sha256/abc"},
		},
		{
			name:    "blob outside an algorithm directory",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/" + layerDgst.Encoded(), body: m.layer})...),
			target:  ErrInvalidArchive, want: []string{"not blobs/sha256/<hex>"},
		},
		{
			name:    "nested directory under blobs",
			archive: buildTar(t, insert(m.entries(), entry{name: "blobs/sha256/sub/", typ: tar.TypeDir})...),
			target:  ErrInvalidArchive, want: []string{"blobs/sha256/sub/"},
		},
		{
			name:    "missing index.json",
			archive: buildTar(t, replace(m.entries(), "index.json", entry{})...),
			target:  ErrInvalidArchive, want: []string{"no index.json"},
		},
		{
			name:    "two index.json",
			archive: buildTar(t, append(m.entries(), entry{name: "./index.json", body: m.index})...),
			target:  ErrInvalidArchive, want: []string{"more than one index.json"},
		},
		{
			name:    "unparsable index.json",
			archive: buildTar(t, replace(m.entries(), "index.json", entry{name: "index.json", body: []byte("{")})...),
			target:  ErrInvalidArchive, want: []string{"parse index.json"},
		},
		{
			name:    "index.json of schemaVersion 1",
			archive: buildTar(t, replace(m.entries(), "index.json", entry{name: "index.json", body: []byte(`{"schemaVersion":1,"manifests":[]}`)})...),
			target:  ErrInvalidArchive, want: []string{"schemaVersion 1"},
		},
		{
			name:    "index.json with a malformed digest",
			archive: buildTar(t, replace(m.entries(), "index.json", entry{name: "index.json", body: []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:nope","size":1}]}`)})...),
			target:  ErrInvalidArchive, want: []string{"sha256:nope"},
		},
		{
			name:    "index.json is a symlink",
			archive: buildTar(t, replace(m.entries(), "index.json", entry{name: "index.json", typ: tar.TypeSymlink, link: "/etc/passwd"})...),
			target:  ErrInvalidArchive, want: []string{"index.json is a symlink"},
		},
		{
			name:    "unsupported oci-layout version",
			archive: buildTar(t, replace(m.entries(), "oci-layout", entry{name: "oci-layout", body: []byte(`{"imageLayoutVersion":"2.0.0"}`)})...),
			target:  ErrInvalidArchive, want: []string{`"2.0.0"`},
		},
		{
			name:    "unparsable oci-layout",
			archive: buildTar(t, replace(m.entries(), "oci-layout", entry{name: "oci-layout", body: []byte(`1.0.0`)})...),
			target:  ErrInvalidArchive, want: []string{"oci-layout"},
		},
		{
			name:    "empty input",
			archive: nil,
			target:  ErrInvalidArchive, want: []string{"empty archive"},
		},
		{
			name:    "truncated inside a blob",
			archive: valid[:2048+512+5], // oci-layout, two directories, then the layer
			target:  io.ErrUnexpectedEOF,
		},
		{
			name:    "truncated at an entry boundary",
			archive: valid[:len(valid)-1024],
			target:  ErrInvalidArchive, want: []string{"truncated"},
		},
		{
			name:    "truncated after one zero block",
			archive: valid[:len(valid)-512],
			target:  ErrInvalidArchive, want: []string{"truncated"},
		},
		{
			name:    "truncated gzip",
			archive: gz[:len(gz)-4],
			target:  ErrInvalidArchive,
		},
		{
			name:    "corrupt gzip",
			archive: corruptDeflate(gz), want: []string{"corrupt input"},
			target: ErrInvalidArchive,
		},
		{
			name:    "not a tar",
			archive: bytes.Repeat([]byte("not a tar archive "), 100),
			target:  ErrInvalidArchive,
		},
		{
			name:    "zstd",
			archive: append([]byte{0x28, 0xb5, 0x2f, 0xfd}, make([]byte, 100)...),
			target:  ErrInvalidArchive, want: []string{"zstd"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			rec.readLarge = tt.readLarge
			l, err := Read(bytes.NewReader(tt.archive), rec.fn)
			if l != nil {
				t.Error("Read returned a Layout with its error")
			}
			wantErr(t, err, tt.target, tt.want...)
			if tt.digest == "" {
				return
			}
			var de *DigestError
			if !errors.As(err, &de) || de.Digest != tt.digest {
				t.Fatalf("error %q is not a *DigestError for %s", err, tt.digest)
			}
			if !strings.Contains(err.Error(), tt.digest.String()) {
				t.Errorf("error %q does not name %s", err, tt.digest)
			}
			if tt.digest == layerDgst && rec.calls[layerDgst] > 0 && !strings.Contains(tt.name, "duplicate") {
				t.Errorf("fn was called for the tampered small blob")
			}
		})
	}
}

// TestReadFnError checks that fn's error stops the read and comes back
// unchanged, and that the mismatch of a large blob survives an fn that
// replaces it with an error of its own.
func TestReadFnError(t *testing.T) {
	t.Parallel()
	m := newMinimal(t)
	big := genBytes(maxManifestSize+1, 5)
	bigFlipped := bytes.Clone(big)
	bigFlipped[0] ^= 1
	bigEntry := entry{name: "blobs/sha256/" + digest.FromBytes(big).Encoded(), body: bigFlipped}
	tests := []struct {
		name    string
		entries []entry
		fn      func(b Blob) error
		want    []error
		same    bool // the error must be fn's, unwrapped
	}{
		{
			name:    "small blob",
			entries: m.entries(),
			fn:      func(Blob) error { return errBoom },
			want:    []error{errBoom},
			same:    true,
		},
		{
			name:    "fn wraps the mismatch",
			entries: insert(m.entries(), bigEntry),
			fn: func(b Blob) error {
				if _, err := io.Copy(io.Discard, b.Body); err != nil {
					return fmt.Errorf("store %s: %w", b.Digest, err)
				}
				return nil
			},
			want: []error{ErrDigestMismatch},
		},
		{
			name:    "fn hides the mismatch",
			entries: insert(m.entries(), bigEntry),
			fn: func(b Blob) error {
				if b.Size <= maxManifestSize {
					return nil
				}
				if _, err := io.Copy(io.Discard, b.Body); err != nil {
					return errBoom
				}
				return nil
			},
			want: []error{errBoom, ErrDigestMismatch},
		},
		{
			name:    "fn swallows the mismatch",
			entries: insert(m.entries(), bigEntry),
			fn: func(b Blob) error {
				_, _ = io.Copy(io.Discard, b.Body)
				return nil
			},
			want: []error{ErrDigestMismatch},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Read(bytes.NewReader(buildTar(t, tt.entries...)), tt.fn)
			if tt.same && err != tt.want[0] {
				t.Errorf("Read = %v, want exactly %v", err, tt.want[0])
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("Read = %v, want it to match %v", err, w)
				}
			}
		})
	}
}

// TestReadAccepts checks archives other tools write: "./" prefixes, extra
// files, no oci-layout, tar padding, duplicate entries.
func TestReadAccepts(t *testing.T) {
	t.Parallel()
	m := newMinimal(t)
	dotted := []entry{{name: "./", typ: tar.TypeDir}}
	for _, e := range m.entries() {
		e.name = "./" + e.name
		dotted = append(dotted, e)
	}
	valid := buildTar(t, m.entries()...)
	tests := []struct {
		name    string
		archive []byte
	}{
		{"plain", valid},
		{"dot-slash names", buildTar(t, dotted...)},
		{"docker save extras", buildTar(t, insert(m.entries(),
			entry{name: "manifest.json", body: []byte(`[{"Config":"x"}]`)},
			entry{name: "repositories", body: []byte(`{}`)},
			entry{name: "pax_global_header", typ: tar.TypeXGlobalHeader},
			entry{name: "some-link", typ: tar.TypeSymlink, link: "/etc/passwd"},
			entry{name: "blobs/sha512/", typ: tar.TypeDir},
		)...)},
		{"no oci-layout", buildTar(t, replace(m.entries(), "oci-layout", entry{})...)},
		{"index.json first", buildTar(t, append([]entry{{name: "index.json", body: m.index}}, replace(m.entries(), "index.json", entry{})...)...)},
		{"duplicate blob", buildTar(t, insert(m.entries(), blobEntry(m.layer), blobEntry(m.manifest))...)},
		{"record padding", append(bytes.Clone(valid), make([]byte, 10240)...)},
		{"trailing data after the end marker", append(bytes.Clone(valid), "trailing"...)},
		{"gzip", gzipBytes(t, valid)},
		{"gzip of two members", append(gzipBytes(t, valid[:1000]), gzipBytes(t, valid[1000:])...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			l, err := Read(bytes.NewReader(tt.archive), rec.fn)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			for _, b := range [][]byte{m.layer, m.config, m.manifest} {
				if n := rec.calls[digest.FromBytes(b)]; n != 1 {
					t.Errorf("fn called %d times for %s, want 1", n, digest.FromBytes(b))
				}
			}
			if len(rec.calls) != 3 || len(l.Blobs) != 3 {
				t.Errorf("fn saw %d blobs, Blobs has %d, want 3", len(rec.calls), len(l.Blobs))
			}
			if got := rec.types[digest.FromBytes(m.manifest)]; got != oci.MediaTypeImageManifest {
				t.Errorf("manifest media type = %q", got)
			}
			if len(l.Index) != 1 || l.Index[0].Annotations[AnnotationRefName] != "v1" {
				t.Errorf("Index = %+v", l.Index)
			}
			if missing := l.Missing(); len(missing) != 0 {
				t.Errorf("Missing() = %v", missing)
			}
		})
	}
}

func TestMissing(t *testing.T) {
	t.Parallel()
	config := []byte(`{"os":"linux"}`)
	layer := []byte("present layer")
	absent := descOf(layerType, []byte("absent layer"))
	absent2 := descOf(layerType, []byte("another absent layer"))
	foreign := descOf("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", []byte("windows base"))
	nondist := descOf("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", []byte("licensed"))
	withURL := descOf(layerType, []byte("elsewhere"))
	withURL.URLs = []string{"https://example.com/layer"}

	type image struct {
		blobs [][]byte         // in the archive
		index []oci.Descriptor // index.json
	}
	manifest := func(layers ...oci.Descriptor) []byte {
		return manifestJSON(t, oci.MediaTypeImageManifest, descOf(configType, config), layers...)
	}
	complete := manifest(descOf(layerType, layer))
	withAbsent := manifest(descOf(layerType, layer), absent, absent2)
	withForeign := manifest(foreign, nondist, withURL, descOf(layerType, layer))
	nested := indexJSON(t, oci.MediaTypeImageIndex, descOf(oci.MediaTypeImageManifest, withAbsent), descOf(oci.MediaTypeImageManifest, complete))
	outer := indexJSON(t, oci.MediaTypeDockerManifestList, descOf(oci.MediaTypeImageIndex, nested), descOf(oci.MediaTypeImageManifest, withAbsent))
	absentManifest := manifest(descOf(layerType, layer))

	sorted := []digest.Digest{absent.Digest, absent2.Digest}
	slices.Sort(sorted)
	tests := []struct {
		name string
		img  image
		want []digest.Digest
	}{
		{"complete", image{[][]byte{config, layer, complete}, []oci.Descriptor{descOf(oci.MediaTypeImageManifest, complete)}}, nil},
		{"absent layers", image{[][]byte{config, layer, withAbsent}, []oci.Descriptor{descOf(oci.MediaTypeImageManifest, withAbsent)}}, sorted},
		{"foreign, non-distributable and URL layers", image{[][]byte{config, layer, withForeign}, []oci.Descriptor{descOf(oci.MediaTypeImageManifest, withForeign)}}, nil},
		{"absent manifest", image{[][]byte{config, layer}, []oci.Descriptor{descOf(oci.MediaTypeImageManifest, absentManifest)}}, []digest.Digest{digest.FromBytes(absentManifest)}},
		{"absent config", image{[][]byte{layer, complete}, []oci.Descriptor{descOf(oci.MediaTypeImageManifest, complete)}}, []digest.Digest{digest.FromBytes(config)}},
		{"nested indexes, reported once", image{
			[][]byte{config, layer, complete, withAbsent, nested, outer},
			[]oci.Descriptor{descOf(oci.MediaTypeDockerManifestList, outer), descOf(oci.MediaTypeImageIndex, nested)},
		}, sorted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			entries := []entry{{name: "oci-layout", body: []byte(ociLayout)}}
			for _, b := range tt.img.blobs {
				entries = append(entries, blobEntry(b))
			}
			entries = append(entries, entry{name: "index.json", body: indexJSON(t, oci.MediaTypeImageIndex, tt.img.index...)})
			l, err := Read(bytes.NewReader(buildTar(t, entries...)), nil)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if got := l.Missing(); !slices.Equal(got, tt.want) {
				t.Errorf("Missing() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSniff(t *testing.T) {
	t.Parallel()
	cfg := `{"mediaType":"` + configType + `","digest":"` + digest.FromString("c").String() + `","size":1}`
	layer := `{"mediaType":"` + layerType + `","digest":"` + digest.FromString("l").String() + `","size":1}`
	man := `{"mediaType":"` + oci.MediaTypeImageManifest + `","digest":"` + digest.FromString("m").String() + `","size":1}`
	tests := []struct {
		name     string
		body     string
		want     string
		wantRefs int // -1: nil
	}{
		{"OCI manifest", `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageManifest + `","config":` + cfg + `,"layers":[` + layer + `]}`, oci.MediaTypeImageManifest, 2},
		{"OCI manifest without mediaType", `{"schemaVersion":2,"config":` + cfg + `,"layers":[` + layer + `,` + layer + `]}`, oci.MediaTypeImageManifest, 3},
		{"OCI manifest without layers", `{"schemaVersion":2,"config":` + cfg + `,"layers":[]}`, oci.MediaTypeImageManifest, 1},
		{"OCI index", `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageIndex + `","manifests":[` + man + `]}`, oci.MediaTypeImageIndex, 1},
		{"OCI index without mediaType", ` {"schemaVersion":2,"manifests":[]}`, oci.MediaTypeImageIndex, 0},
		{"Docker manifest", `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeDockerManifest + `","config":` + cfg + `,"layers":[` + layer + `]}`, oci.MediaTypeDockerManifest, 2},
		{"Docker manifest list", `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeDockerManifestList + `","manifests":[` + man + `,` + man + `]}`, oci.MediaTypeDockerManifestList, 2},
		{"Docker schema1", `{"schemaVersion":1,"name":"x","fsLayers":[]}`, mediaTypeOctetStream, -1},
		{"no schemaVersion", `{"config":` + cfg + `,"layers":[]}`, mediaTypeOctetStream, -1},
		{"image config", `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}`, mediaTypeOctetStream, -1},
		{"other mediaType", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.config.v1+json"}`, mediaTypeOctetStream, -1},
		{"config without layers", `{"schemaVersion":2,"config":` + cfg + `}`, mediaTypeOctetStream, -1},
		{"wrong field types", `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageIndex + `","manifests":"x"}`, mediaTypeOctetStream, -1},
		{"JSON array", `[{"schemaVersion":2}]`, mediaTypeOctetStream, -1},
		{"invalid JSON", `{"schemaVersion":2,`, mediaTypeOctetStream, -1},
		{"binary", "\x1f\x8b\x08\x00", mediaTypeOctetStream, -1},
		{"empty", "", mediaTypeOctetStream, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, refs := sniff([]byte(tt.body))
			if got != tt.want {
				t.Errorf("media type = %q, want %q", got, tt.want)
			}
			if tt.wantRefs < 0 && refs != nil || tt.wantRefs >= 0 && (refs == nil || len(refs) != tt.wantRefs) {
				t.Errorf("refs = %+v, want %d", refs, tt.wantRefs)
			}
		})
	}
}

// TestReadUnderlyingError checks that an error of the source is returned
// and not mistaken for a malformed archive.
func TestReadUnderlyingError(t *testing.T) {
	t.Parallel()
	valid := buildTar(t, newMinimal(t).entries()...)
	_, err := Read(io.MultiReader(bytes.NewReader(valid[:1500]), errReader{}), nil)
	if !errors.Is(err, errBoom) || errors.Is(err, ErrInvalidArchive) {
		t.Fatalf("Read = %v, want %v and not %v", err, errBoom, ErrInvalidArchive)
	}
}

func TestIsSparse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		hdr  tar.Header
		want bool
	}{
		{"regular", tar.Header{Typeflag: tar.TypeReg, PAXRecords: map[string]string{"path": "x"}}, false},
		{"old GNU", tar.Header{Typeflag: tar.TypeGNUSparse}, true},
		{"PAX 1.0", tar.Header{Typeflag: tar.TypeReg, PAXRecords: map[string]string{"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}}, true},
		{"PAX 0.1", tar.Header{Typeflag: tar.TypeReg, PAXRecords: map[string]string{"GNU.sparse.map": "0,1"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := isSparse(&tt.hdr); got != tt.want {
				t.Errorf("isSparse = %v, want %v", got, tt.want)
			}
		})
	}
}

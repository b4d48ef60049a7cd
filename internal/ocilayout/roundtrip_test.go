package ocilayout

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// fixture is two images: a multi-platform index of two OCI manifests and a
// single Docker schema2 manifest, sharing a layer.
type fixture struct {
	blobs  [][]byte                 // every distinct blob, in add order
	types  map[digest.Digest]string // the media type Read should report
	index  oci.Descriptor           // the multi-platform image
	single oci.Descriptor           // the single-manifest image
	// singleConfig and singleLayers are the single image's, for manifest.json.
	singleConfig digest.Digest
	singleLayers []digest.Digest
	shared       []byte
}

func newFixture(t testing.TB) *fixture {
	fx := &fixture{types: map[digest.Digest]string{}}
	add := func(mt string, b []byte) oci.Descriptor {
		fx.blobs = append(fx.blobs, b)
		sniffed := mediaTypeOctetStream
		if mt == oci.MediaTypeImageManifest || mt == oci.MediaTypeImageIndex || mt == oci.MediaTypeDockerManifest {
			sniffed = mt
		}
		fx.types[digest.FromBytes(b)] = sniffed
		return descOf(mt, b)
	}
	fx.shared = bytes.Repeat([]byte("shared layer "), 100)
	shared := add(layerType, fx.shared)
	amdLayer := add(layerType, []byte("amd64 layer"))
	armLayer := add(layerType, []byte("arm64 layer"))
	big := add("application/vnd.docker.image.rootfs.diff.tar.gzip", genBytes(5<<20, 7))
	amdConfig := add(configType, []byte(`{"architecture":"amd64","os":"linux"}`))
	armConfig := add(configType, []byte(`{"architecture":"arm64","os":"linux","variant":"v8"}`))
	singleConfig := add("application/vnd.docker.container.image.v1+json", []byte(`{"architecture":"amd64","os":"linux","config":{}}`))

	amd := add(oci.MediaTypeImageManifest, manifestJSON(t, oci.MediaTypeImageManifest, amdConfig, shared, amdLayer))
	amd.Platform = &oci.Platform{Architecture: "amd64", OS: "linux"}
	// Without a mediaType field: Read must recognise it by config and layers.
	armBody := manifestJSON(t, "", armConfig, shared, armLayer)
	arm := add(oci.MediaTypeImageManifest, armBody)
	arm.Platform = &oci.Platform{Architecture: "arm64", OS: "linux", Variant: "v8"}
	fx.index = add(oci.MediaTypeImageIndex, indexJSON(t, oci.MediaTypeImageIndex, amd, arm))
	fx.single = add(oci.MediaTypeDockerManifest, manifestJSON(t, oci.MediaTypeDockerManifest, singleConfig, shared, big))
	fx.singleConfig = singleConfig.Digest
	fx.singleLayers = []digest.Digest{shared.Digest, big.Digest}
	return fx
}

// annotations returns the index.json annotations of the two images.
func (fx *fixture) annotations() (multi, single map[string]string) {
	return map[string]string{AnnotationRefName: "multi:v1", AnnotationImageName: "example.com/multi:v1"},
		map[string]string{AnnotationRefName: "single:v1", AnnotationImageName: "example.com/single:v1"}
}

// write writes the fixture as an archive, adding the shared layer twice.
func (fx *fixture) write(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, b := range fx.blobs {
		dgst := digest.FromBytes(b)
		if w.Has(dgst) {
			t.Fatalf("Has(%s) before AddBlob", dgst)
		}
		if err := w.AddBlob(dgst, int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatalf("AddBlob(%s): %v", dgst, err)
		}
		if !w.Has(dgst) {
			t.Fatalf("Has(%s) after AddBlob = false", dgst)
		}
	}
	if err := w.AddBlob(digest.FromBytes(fx.shared), int64(len(fx.shared)), failReader{t}); err != nil {
		t.Fatalf("AddBlob of a blob already added: %v", err)
	}
	multi, single := fx.annotations()
	w.AddImage(fx.index, multi)
	w.AddImage(fx.single, single)
	w.AddDockerManifest(fx.singleConfig, fx.singleLayers, []string{"example.com/single:v1"})
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// failReader fails the test when read.
type failReader struct{ t testing.TB }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("reader of a blob already added was read")
	return 0, io.EOF
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	archive := fx.write(t)
	if again := fx.write(t); !bytes.Equal(archive, again) {
		t.Fatal("writing the same inputs twice gave different archives")
	}
	tests := []struct {
		name    string
		archive []byte
	}{
		{"tar", archive},
		{"gzip", gzipBytes(t, archive)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			l, err := Read(bytes.NewReader(tt.archive), rec.fn)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(rec.calls) != len(fx.blobs) {
				t.Errorf("fn saw %d blobs, want %d", len(rec.calls), len(fx.blobs))
			}
			for _, b := range fx.blobs {
				dgst := digest.FromBytes(b)
				if n := rec.calls[dgst]; n != 1 {
					t.Errorf("fn called %d times for %s, want 1", n, dgst)
				}
				if !bytes.Equal(rec.bodies[dgst], b) {
					t.Errorf("body of %s differs (%d bytes, want %d)", dgst, len(rec.bodies[dgst]), len(b))
				}
				if got, want := rec.types[dgst], fx.types[dgst]; got != want {
					t.Errorf("media type of %s = %q, want %q", dgst, got, want)
				}
				if got := l.Blobs[dgst]; got != int64(len(b)) {
					t.Errorf("Blobs[%s] = %d, want %d", dgst, got, len(b))
				}
			}
			multi, single := fx.annotations()
			wantIndex := []oci.Descriptor{fx.index, fx.single}
			wantIndex[0].Annotations, wantIndex[1].Annotations = multi, single
			if !reflect.DeepEqual(l.Index, wantIndex) {
				t.Errorf("Index = %+v, want %+v", l.Index, wantIndex)
			}
			if m := l.Missing(); len(m) != 0 {
				t.Errorf("Missing() = %v, want none", m)
			}
			if refs := l.Refs(fx.index.Digest); len(refs) != 2 || refs[1].Platform == nil || refs[1].Platform.Variant != "v8" {
				t.Errorf("Refs(index) = %+v, want the two platform manifests", refs)
			}
			if refs := l.Refs(fx.single.Digest); len(refs) != 3 || refs[0].Digest != fx.singleConfig {
				t.Errorf("Refs(single) = %+v, want config and two layers", refs)
			}
			if refs := l.Refs(fx.singleConfig); refs != nil {
				t.Errorf("Refs(config) = %+v, want nil", refs)
			}
		})
	}
}

// TestWriterFormat checks the tar entries and the JSON files the Writer
// writes, which skopeo and docker load read.
func TestWriterFormat(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	tr := tar.NewReader(bytes.NewReader(fx.write(t)))
	var names []string
	files := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		wantMode, wantType := int64(0o644), byte(tar.TypeReg)
		if hdr.Name[len(hdr.Name)-1] == '/' {
			wantMode, wantType = 0o755, tar.TypeDir
		}
		if hdr.Mode != wantMode || hdr.Typeflag != wantType || !hdr.ModTime.Equal(time.Unix(0, 0)) || hdr.Uid != 0 || hdr.Uname != "" {
			t.Errorf("%s: mode %o type %q mtime %v uid %d uname %q", hdr.Name, hdr.Mode, hdr.Typeflag, hdr.ModTime, hdr.Uid, hdr.Uname)
		}
		if wantType == tar.TypeReg && hdr.Size <= maxManifestSize {
			files[hdr.Name], _ = io.ReadAll(tr)
		}
	}
	want := []string{"oci-layout", "blobs/", "blobs/sha256/"}
	for _, b := range fx.blobs {
		want = append(want, "blobs/sha256/"+digest.FromBytes(b).Encoded())
	}
	want = append(want, "index.json", "manifest.json")
	if !slices.Equal(names, want) {
		t.Errorf("entries = %q, want %q", names, want)
	}
	if got := string(files["oci-layout"]); got != ociLayout {
		t.Errorf("oci-layout = %s", got)
	}
	var index struct {
		SchemaVersion int
		MediaType     string
		Manifests     []oci.Descriptor
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if index.SchemaVersion != 2 || index.MediaType != oci.MediaTypeImageIndex || len(index.Manifests) != 2 ||
		index.Manifests[0].Annotations[AnnotationImageName] != "example.com/multi:v1" {
		t.Errorf("index.json = %s", files["index.json"])
	}
	wantManifest := `[{"Config":"blobs/sha256/` + fx.singleConfig.Encoded() + `","RepoTags":["example.com/single:v1"],"Layers":["blobs/sha256/` +
		fx.singleLayers[0].Encoded() + `","blobs/sha256/` + fx.singleLayers[1].Encoded() + `"]}]`
	if got := string(files["manifest.json"]); got != wantManifest {
		t.Errorf("manifest.json = %s\nwant %s", got, wantManifest)
	}
}

// TestWriterEmpty checks that a Writer with nothing added, and one without
// Docker manifests, still write a layout Read accepts.
func TestWriterEmpty(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		add       func(*Writer)
		wantIndex int
	}{
		{"nothing", func(*Writer) {}, 0},
		{"no docker manifest", func(w *Writer) {
			m := newMinimal(t)
			for _, b := range [][]byte{m.layer, m.config, m.manifest} {
				if err := w.AddBlob(digest.FromBytes(b), int64(len(b)), bytes.NewReader(b)); err != nil {
					t.Fatal(err)
				}
			}
			w.AddImage(descOf(oci.MediaTypeImageManifest, m.manifest), nil)
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			w := NewWriter(&buf)
			tt.add(w)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(buf.Bytes(), []byte("manifest.json")) {
				t.Error("manifest.json written without AddDockerManifest")
			}
			l, err := Read(bytes.NewReader(buf.Bytes()), nil)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(l.Index) != tt.wantIndex || len(l.Missing()) != 0 {
				t.Errorf("Index = %+v, Missing = %v", l.Index, l.Missing())
			}
		})
	}
}

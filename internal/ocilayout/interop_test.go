package ocilayout

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// TestReadGGCRLayout reads a layout written by a third party,
// go-containerregistry's pkg/v1/layout, tarred the way `tar -C dir -cf
// x.tar .` does ("./" prefixes, directory entries).
func TestReadGGCRLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := random.Index(512, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{AnnotationRefName: "img"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{AnnotationRefName: "idx"})); err != nil {
		t.Fatal(err)
	}

	// The media type Read must report for each manifest and index.
	wantTypes := map[digest.Digest]string{}
	addType := func(h v1.Hash, mt string) { wantTypes[digest.Digest(h.String())] = mt }
	imgDgst, _ := img.Digest()
	imgType, _ := img.MediaType()
	addType(imgDgst, string(imgType))
	idxDgst, _ := idx.Digest()
	idxType, _ := idx.MediaType()
	addType(idxDgst, string(idxType))
	idxManifest, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range idxManifest.Manifests {
		addType(d.Digest, string(d.MediaType))
	}

	archive := tarDir(t, dir)
	rec := newRecorder()
	l, err := Read(bytes.NewReader(archive), rec.fn)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	files, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Blobs) != len(files) || len(rec.calls) != len(files) {
		t.Errorf("Read saw %d blobs, fn %d, want the %d files of blobs/sha256", len(l.Blobs), len(rec.calls), len(files))
	}
	for dgst, mt := range wantTypes {
		if got := rec.types[dgst]; got != mt {
			t.Errorf("media type of %s = %q, want %q", dgst, got, mt)
		}
	}
	if len(l.Index) != 2 || l.Index[0].Digest != digest.Digest(imgDgst.String()) || l.Index[1].Annotations[AnnotationRefName] != "idx" {
		t.Errorf("Index = %+v", l.Index)
	}
	if got := len(l.Refs(digest.Digest(idxDgst.String()))); got != 2 {
		t.Errorf("Refs(index) has %d descriptors, want 2", got)
	}
	if m := l.Missing(); len(m) != 0 {
		t.Errorf("Missing() = %v", m)
	}
}

// TestGGCRReadsWriterOutput writes go-containerregistry's random images
// with Writer, extracts the archive as skopeo does and has
// go-containerregistry load it: every manifest, config and layer must be
// found, hash to its digest and match its size, and each layer's diff ID
// must be the config's. (pkg/v1/validate would do this but needs a module
// go.mod does not list.)
func TestGGCRReadsWriterOutput(t *testing.T) {
	t.Parallel()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	addBlob := func(h v1.Hash, size int64, r io.Reader) {
		t.Helper()
		if err := w.AddBlob(digest.Digest(h.String()), size, r); err != nil {
			t.Fatal(err)
		}
	}
	// addImage adds img's layers, config and manifest and returns its
	// descriptor.
	addImage := func(img v1.Image) oci.Descriptor {
		t.Helper()
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			h, _ := l.Digest()
			size, _ := l.Size()
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			addBlob(h, size, rc)
			rc.Close()
		}
		cfg, _ := img.RawConfigFile()
		cfgName, _ := img.ConfigName()
		addBlob(cfgName, int64(len(cfg)), bytes.NewReader(cfg))
		raw, _ := img.RawManifest()
		h, _ := img.Digest()
		mt, _ := img.MediaType()
		addBlob(h, int64(len(raw)), bytes.NewReader(raw))
		return oci.Descriptor{MediaType: string(mt), Digest: digest.Digest(h.String()), Size: int64(len(raw))}
	}
	w.AddImage(addImage(img), map[string]string{AnnotationRefName: "img", AnnotationImageName: "example.com/img:1"})
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		child, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		addImage(child)
	}
	raw, _ := idx.RawManifest()
	h, _ := idx.Digest()
	addBlob(h, int64(len(raw)), bytes.NewReader(raw))
	w.AddImage(oci.Descriptor{MediaType: oci.MediaTypeImageIndex, Digest: digest.Digest(h.String()), Size: int64(len(raw))}, map[string]string{AnnotationRefName: "idx"})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	untar(t, buf.Bytes(), dir)
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 2 || top.Manifests[0].Annotations[AnnotationImageName] != "example.com/img:1" {
		t.Errorf("index.json manifests = %+v", top.Manifests)
	}
	got, err := ii.Image(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	checkGGCRImage(t, got)
	child, err := ii.ImageIndex(top.Manifests[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := child.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range cm.Manifests {
		img, err := child.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkGGCRImage(t, img)
	}
}

// checkGGCRImage reads every blob of img as go-containerregistry loaded
// it and checks digests, sizes and diff IDs.
func checkGGCRImage(t *testing.T, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config of %s: %v", m.Config.Digest, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil || digest.FromBytes(raw).String() != m.Config.Digest.String() {
		t.Errorf("config %s: %v, hashes to %s", m.Config.Digest, err, digest.FromBytes(raw))
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != len(m.Layers) || len(cfg.RootFS.DiffIDs) != len(layers) {
		t.Fatalf("%d layers (%v), manifest has %d, config %d", len(layers), err, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range layers {
		for _, check := range []struct {
			open func() (io.ReadCloser, error)
			want v1.Hash
			size int64
		}{
			{l.Compressed, m.Layers[i].Digest, m.Layers[i].Size},
			{l.Uncompressed, cfg.RootFS.DiffIDs[i], -1},
		} {
			rc, err := check.open()
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			h := digest.SHA256.Digester()
			n, err := io.Copy(h.Hash(), rc)
			rc.Close()
			if err != nil || h.Digest().String() != check.want.String() || check.size >= 0 && n != check.size {
				t.Errorf("layer %d: %d bytes hashing to %s (%v), want %s", i, n, h.Digest(), err, check.want)
			}
		}
	}
}

// untar extracts an archive this package wrote into dir.
func untar(t *testing.T, archive []byte, dir string) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(path, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tarDir tars the directory dir with "./"-prefixed names.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		hdr.Name = "./" + filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReadThirdParty reads archives made by other tools from the
// repository's sample image.
func TestReadThirdParty(t *testing.T) {
	t.Parallel()
	const manifest = digest.Digest("sha256:c7d5b98b839867758f51bc876adbe6985b54c646ff3bb7e818374eb9da71910d")
	skopeo, err := os.ReadFile(filepath.Join("testdata", "skopeo-sample.tar"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		archive []byte
		wantRef string
	}{
		{"skopeo oci-archive", skopeo, "sample:latest"},
		{"tar of a layout directory", tarDir(t, filepath.Join("..", "..", "testdata", "sample-image")), "latest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			l, err := Read(bytes.NewReader(tt.archive), rec.fn)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(l.Index) != 1 || l.Index[0].Digest != manifest || l.Index[0].Annotations[AnnotationRefName] != tt.wantRef {
				t.Errorf("Index = %+v", l.Index)
			}
			if len(rec.calls) != 3 || rec.types[manifest] != oci.MediaTypeImageManifest {
				t.Errorf("fn saw %d blobs, manifest media type %q", len(rec.calls), rec.types[manifest])
			}
			if refs := l.Refs(manifest); len(refs) != 2 {
				t.Errorf("Refs(manifest) = %+v, want config and layer", refs)
			}
			if m := l.Missing(); len(m) != 0 {
				t.Errorf("Missing() = %v", m)
			}
		})
	}
}

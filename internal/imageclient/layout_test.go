package imageclient

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
)

func TestOCIFormRewritesDockerManifestsOnly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup stores the image tagged v1.
		setup         func(reg *testRegistry)
		wantTopType   string
		wantRewritten int
		wantSameTop   bool
	}{
		{name: "an OCI manifest stays", wantTopType: oci.MediaTypeImageManifest, wantSameTop: true, setup: func(reg *testRegistry) {
			reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
		}},
		{name: "an OCI index of OCI manifests stays", wantTopType: oci.MediaTypeImageIndex, wantSameTop: true, setup: func(reg *testRegistry) {
			m := reg.image("team/app", "", oci.MediaTypeImageManifest, 10)
			reg.index("team/app", "v1", oci.MediaTypeImageIndex, onPlatform(m, "linux/amd64"))
		}},
		{name: "a Docker manifest is rewritten", wantTopType: oci.MediaTypeImageManifest, wantRewritten: 1, setup: func(reg *testRegistry) {
			reg.image("team/app", "v1", oci.MediaTypeDockerManifest, 10, 20)
		}},
		{name: "a Docker list and its manifests are rewritten", wantTopType: oci.MediaTypeImageIndex, wantRewritten: 3, setup: func(reg *testRegistry) {
			amd := reg.image("team/app", "", oci.MediaTypeDockerManifest, 10)
			arm := reg.image("team/app", "", oci.MediaTypeDockerManifest, 20)
			reg.index("team/app", "v1", oci.MediaTypeDockerManifestList, onPlatform(amd, "linux/amd64"), onPlatform(arm, "linux/arm64/v8"))
		}},
		{name: "a Docker list of OCI manifests is rewritten", wantTopType: oci.MediaTypeImageIndex, wantRewritten: 1, setup: func(reg *testRegistry) {
			m := reg.image("team/app", "", oci.MediaTypeImageManifest, 10)
			reg.index("team/app", "v1", oci.MediaTypeDockerManifestList, onPlatform(m, "linux/amd64"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			tt.setup(reg)
			img, err := reg.client(Options{}).Resolve(context.Background(), mustParse(t, "team/app:v1"))
			if err != nil {
				t.Fatal(err)
			}
			top, rewritten, err := OCIForm(img)
			if err != nil {
				t.Fatal(err)
			}
			if top.Desc.MediaType != tt.wantTopType || len(rewritten) != tt.wantRewritten || (top.Desc.Digest == img.Top.Digest) != tt.wantSameTop {
				t.Fatalf("top %+v with %d rewritten; want type %s, %d rewritten, same as ECR's: %v",
					top.Desc, len(rewritten), tt.wantTopType, tt.wantRewritten, tt.wantSameTop)
			}
			if top.Desc.Digest != digest.FromBytes(top.Body) || top.Desc.Size != int64(len(top.Body)) {
				t.Errorf("top descriptor %+v does not describe its body", top.Desc)
			}
			checkOCITypes(t, top.Body, img)
			for _, a := range rewritten {
				checkOCITypes(t, a.Body, img)
			}
		})
	}
}

// checkOCITypes checks a rewritten manifest: OCI media types only, and
// the config and layers of img's manifests, by the same digests.
func checkOCITypes(t *testing.T, body []byte, img *Image) {
	t.Helper()
	var doc Doc
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), "docker") {
		t.Errorf("rewritten manifest still names Docker types: %s", body)
	}
	blobs := map[digest.Digest]bool{}
	for _, b := range img.Blobs {
		blobs[b.Digest] = true
	}
	for _, b := range append(doc.Layers, func() []oci.Descriptor {
		if doc.Config != nil {
			return []oci.Descriptor{*doc.Config}
		}
		return nil
	}()...) {
		if !blobs[b.Digest] {
			t.Errorf("rewritten manifest names %s, not a blob of the image", b.Digest)
		}
	}
}

func TestOCIFormKeepsTheBytesExportHasAlwaysWritten(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	cfg := oci.Descriptor{MediaType: "application/vnd.docker.container.image.v1+json", Digest: digest.FromString("config"), Size: 6}
	layer := oci.Descriptor{MediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", Digest: digest.FromString("layer"), Size: 5,
		Annotations: map[string]string{"a": "b"}}
	reg.set(blobPath("team/app", cfg.Digest), entry{body: []byte("config")})
	reg.set(blobPath("team/app", layer.Digest), entry{body: []byte("layer")})
	m := reg.manifest("team/app", "", oci.MediaTypeDockerManifest, manifestDoc{SchemaVersion: 2,
		MediaType: oci.MediaTypeDockerManifest, Config: &cfg, Layers: []oci.Descriptor{layer}})
	// Fields beyond those export has always written are dropped: an
	// artifactType naming a Docker config makes skopeo refuse the index.
	child := onPlatform(m, "linux/arm64/v8")
	child.ArtifactType, child.Annotations = oci.MediaTypeDockerConfig, map[string]string{"a": "b"}
	child.Platform.OSVersion = "10.0"
	reg.index("team/app", "v1", oci.MediaTypeDockerManifestList, child)
	img, err := reg.client(Options{}).Resolve(context.Background(), mustParse(t, "team/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	top, rewritten, err := OCIForm(img)
	if err != nil {
		t.Fatal(err)
	}
	wantManifest := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfg.Digest.String() + `","size":6},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + layer.Digest.String() + `","size":5}]}`
	if string(rewritten[0].Body) != wantManifest {
		t.Errorf("rewritten manifest\n%s\nwant\n%s", rewritten[0].Body, wantManifest)
	}
	d := digest.FromString(wantManifest)
	wantIndex := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",` +
		`"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d.String() + `","size":` +
		strconv.Itoa(len(wantManifest)) + `,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}`
	if string(top.Body) != wantIndex {
		t.Errorf("rewritten index\n%s\nwant\n%s", top.Body, wantIndex)
	}
}

func TestWriteImageWritesAnArchiveThatReadsBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		platforms []string
		mediaType string // of the image manifests
		// wantTop is the index.json entry's type; wantSource whether it
		// names ECR's manifest as its source.
		wantTop    string
		wantSource bool
		wantErr    string
	}{
		{name: "an OCI index whole", mediaType: oci.MediaTypeImageManifest, wantTop: oci.MediaTypeImageIndex},
		{name: "a Docker list whole, rewritten", mediaType: oci.MediaTypeDockerManifest, wantTop: oci.MediaTypeImageIndex, wantSource: true},
		{name: "one platform of an index", platforms: []string{"linux/arm64"}, mediaType: oci.MediaTypeImageManifest,
			wantTop: oci.MediaTypeImageManifest, wantSource: false},
		{name: "one platform of a Docker list, rewritten", platforms: []string{"linux/arm64"}, mediaType: oci.MediaTypeDockerManifest,
			wantTop: oci.MediaTypeImageManifest, wantSource: true},
		{name: "two platforms of an index", platforms: []string{"linux/amd64", "linux/arm64"}, mediaType: oci.MediaTypeImageManifest,
			wantErr: "--platform selects 2 of its platforms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			amd := reg.image("team/app", "", tt.mediaType, 10, 20)
			arm := reg.image("team/app", "", tt.mediaType, 30)
			listType := oci.MediaTypeImageIndex
			if tt.mediaType == oci.MediaTypeDockerManifest {
				listType = oci.MediaTypeDockerManifestList
			}
			reg.index("team/app", "v1", listType, onPlatform(amd, "linux/amd64"), onPlatform(arm, "linux/arm64"))
			c := reg.client(Options{Platforms: tt.platforms})
			var buf bytes.Buffer
			aw := ocilayout.NewWriter(&buf)
			var prog countingProgress
			w, err := c.WriteImage(context.Background(), aw, mustParse(t, "team/app:v1"), &prog)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("WriteImage = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := aw.Close(); err != nil {
				t.Fatal(err)
			}
			if prog.done != w.Image.Size() || prog.total != w.Image.Size() {
				t.Errorf("progress %d of %d bytes, want %d", prog.done, prog.total, w.Image.Size())
			}
			layout, err := ocilayout.Read(&buf, func(ocilayout.Blob) error { return nil })
			if err != nil {
				t.Fatalf("the archive does not read back: %v", err)
			}
			if len(layout.Index) != 1 {
				t.Fatalf("index.json has %d entries, want 1", len(layout.Index))
			}
			e := layout.Index[0]
			if e.Digest != w.Top.Digest || e.MediaType != tt.wantTop {
				t.Errorf("index.json names %s (%s), want %s (%s)", e.Digest, e.MediaType, w.Top.Digest, tt.wantTop)
			}
			if e.Annotations[ocilayout.AnnotationRefName] != "team/app:v1" || e.Annotations[ocilayout.AnnotationImageName] != c.Host()+"/team/app:v1" {
				t.Errorf("annotations %v do not name team/app:v1 on %s", e.Annotations, c.Host())
			}
			if src := e.Annotations[ocilayout.AnnotationSourceDigest]; (src != "") != tt.wantSource || (tt.wantSource && src != w.Image.Top.Digest.String()) {
				t.Errorf("source annotation %q, want ECR's %s: %v", src, w.Image.Top.Digest, tt.wantSource)
			}
			for _, m := range w.Image.Manifests {
				if _, ok := layout.Blobs[m.Desc.Digest]; !ok {
					t.Errorf("the archive lacks ECR's manifest %s", m.Desc.Digest)
				}
			}
			for _, b := range w.Image.Blobs {
				if _, ok := layout.Blobs[b.Digest]; !ok {
					t.Errorf("the archive lacks blob %s", b.Digest)
				}
			}
		})
	}
}

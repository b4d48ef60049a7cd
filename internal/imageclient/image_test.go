package imageclient

import (
	"context"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

func TestResolveWalksAnIndexToTheWantedPlatforms(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	amd := reg.image("team/app", "", oci.MediaTypeImageManifest, 10, 20)
	arm := reg.image("team/app", "", oci.MediaTypeImageManifest, 30)
	armv7 := reg.image("team/app", "", oci.MediaTypeImageManifest, 40)
	idx := reg.index("team/app", "v1", oci.MediaTypeImageIndex,
		onPlatform(amd, "linux/amd64"), onPlatform(arm, "linux/arm64"), onPlatform(armv7, "linux/arm/v7"))
	tests := []struct {
		name       string
		platforms  []string
		wantImages []digest.Digest
		wantBlobs  int
	}{
		{name: "every platform by default", wantImages: []digest.Digest{amd.Digest, arm.Digest, armv7.Digest}, wantBlobs: 7},
		{name: "os/arch", platforms: []string{"linux/arm64"}, wantImages: []digest.Digest{arm.Digest}, wantBlobs: 2},
		{name: "os/arch/variant", platforms: []string{"linux/arm/v7"}, wantImages: []digest.Digest{armv7.Digest}, wantBlobs: 2},
		{name: "os/arch matches every variant", platforms: []string{"linux/arm"}, wantImages: []digest.Digest{armv7.Digest}, wantBlobs: 2},
		{name: "several", platforms: []string{"linux/amd64", "linux/arm64"}, wantImages: []digest.Digest{amd.Digest, arm.Digest}, wantBlobs: 5},
		{name: "none of them", platforms: []string{"windows/amd64"}, wantBlobs: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			img, err := reg.client(Options{Platforms: tt.platforms}).Resolve(context.Background(), mustParse(t, "team/app:v1"))
			if err != nil {
				t.Fatal(err)
			}
			if img.Top.Digest != idx.Digest || img.Top.MediaType != oci.MediaTypeImageIndex || img.Top.Size != idx.Size {
				t.Errorf("Top = %+v, want %+v", img.Top, idx)
			}
			var got []digest.Digest
			for _, m := range img.Images {
				got = append(got, m.Desc.Digest)
			}
			if strings.Join(digestStrings(got), " ") != strings.Join(digestStrings(tt.wantImages), " ") {
				t.Errorf("images %v, want %v", got, tt.wantImages)
			}
			if len(img.Manifests) != 1+len(tt.wantImages) || img.Manifests[0].Desc.Digest != idx.Digest {
				t.Errorf("%d manifests, the first %s: want the index, then %d", len(img.Manifests), img.Manifests[0].Desc.Digest, len(tt.wantImages))
			}
			if len(img.Blobs) != tt.wantBlobs {
				t.Errorf("%d blobs, want %d", len(img.Blobs), tt.wantBlobs)
			}
			want := int64(0)
			for _, m := range img.Manifests {
				want += int64(len(m.Body))
			}
			for _, b := range img.Blobs {
				want += b.Size
			}
			if img.Size() != want {
				t.Errorf("Size() = %d, want %d", img.Size(), want)
			}
		})
	}
}

func digestStrings(ds []digest.Digest) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func TestResolveListsEachDistributableBlobOnce(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	shared := reg.blob("team/app", "application/vnd.oci.image.layer.v1.tar+gzip", 50)
	foreign := oci.Descriptor{MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		Digest: digest.FromString("foreign"), Size: 7, URLs: []string{"https://example.com/layer"}}
	withURL := oci.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digest.FromString("url"), Size: 3,
		URLs: []string{"https://example.com/other"}}
	var children []oci.Descriptor
	for _, pl := range []string{"linux/amd64", "linux/arm64"} {
		cfg := reg.blob("team/app", "application/vnd.oci.image.config.v1+json", 10)
		m := reg.manifest("team/app", "", oci.MediaTypeImageManifest, manifestDoc{SchemaVersion: 2,
			MediaType: oci.MediaTypeImageManifest, Config: &cfg, Layers: []oci.Descriptor{shared, foreign, withURL}})
		children = append(children, onPlatform(m, pl))
	}
	reg.index("team/app", "v1", oci.MediaTypeImageIndex, children...)
	img, err := reg.client(Options{}).Resolve(context.Background(), mustParse(t, "team/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	count := map[digest.Digest]int{}
	for _, b := range img.Blobs {
		count[b.Digest]++
	}
	if len(img.Blobs) != 3 || count[shared.Digest] != 1 || count[foreign.Digest] != 0 || count[withURL.Digest] != 0 {
		t.Errorf("blobs %v: want two configs and the shared layer once, no foreign layer", img.Blobs)
	}
}

func TestResolveRefusesWhatItCannotVerify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(reg *testRegistry) string // returns the image to resolve
		wantErr string
	}{
		{name: "a tag whose body does not hash to Docker-Content-Digest", wantErr: "body hashes to", setup: func(reg *testRegistry) string {
			reg.set(manifestPath("team/app", "v1"), entry{mediaType: oci.MediaTypeImageManifest, body: []byte(`{}`), contentDigest: digest.FromString("other").String()})
			return "team/app:v1"
		}},
		{name: "a digest whose body hashes to another", wantErr: "body hashes to", setup: func(reg *testRegistry) string {
			want := digest.FromString("wanted")
			reg.set(manifestPath("team/app", want.String()), entry{mediaType: oci.MediaTypeImageManifest, body: []byte(`{}`)})
			return "team/app@" + want.String()
		}},
		{name: "an index child whose body hashes to another", wantErr: "body hashes to", setup: func(reg *testRegistry) string {
			child := reg.image("team/app", "", oci.MediaTypeImageManifest, 10)
			reg.set(manifestPath("team/app", child.Digest.String()), entry{mediaType: oci.MediaTypeImageManifest, body: []byte(`{"schemaVersion":2}`)})
			reg.index("team/app", "v1", oci.MediaTypeImageIndex, child)
			return "team/app:v1"
		}},
		{name: "a blob digest that is not sha256", wantErr: "not a sha256 digest", setup: func(reg *testRegistry) string {
			cfg := reg.blob("team/app", "application/vnd.oci.image.config.v1+json", 10)
			bad := oci.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: "md5:d41d8cd98f00b204e9800998ecf8427e", Size: 1}
			reg.manifest("team/app", "v1", oci.MediaTypeImageManifest, manifestDoc{SchemaVersion: 2,
				MediaType: oci.MediaTypeImageManifest, Config: &cfg, Layers: []oci.Descriptor{bad}})
			return "team/app:v1"
		}},
		{name: "neither a manifest nor an index", wantErr: "is neither an image manifest nor an index", setup: func(reg *testRegistry) string {
			reg.manifest("team/app", "v1", oci.MediaTypeImageManifest, manifestDoc{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest})
			return "team/app:v1"
		}},
		{name: "not JSON", wantErr: "invalid character", setup: func(reg *testRegistry) string {
			reg.set(manifestPath("team/app", "v1"), entry{mediaType: oci.MediaTypeImageManifest, body: []byte("not json")})
			return "team/app:v1"
		}},
		{name: "larger than a manifest may be", wantErr: "larger than 4194304 bytes", setup: func(reg *testRegistry) string {
			reg.set(manifestPath("team/app", "v1"), entry{mediaType: oci.MediaTypeImageManifest, body: make([]byte, maxManifestSize+1)})
			return "team/app:v1"
		}},
		{name: "indexes nested too deep", wantErr: "indexes nested deeper than 4", setup: func(reg *testRegistry) string {
			d := reg.image("team/app", "", oci.MediaTypeImageManifest, 10)
			for range maxIndexDepth + 1 {
				d = reg.index("team/app", "", oci.MediaTypeImageIndex, d)
			}
			reg.index("team/app", "v1", oci.MediaTypeImageIndex, d)
			return "team/app:v1"
		}},
		{name: "an error status, as the registry's code", wantErr: "manifest v1: NOT_FOUND", setup: func(reg *testRegistry) string {
			return "team/app:v1"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			ref := tt.setup(reg)
			img, err := reg.client(Options{}).Resolve(context.Background(), mustParse(t, ref))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Resolve(%s) = %v, %v; want an error containing %q", ref, img, err, tt.wantErr)
			}
		})
	}
}

func TestResolveAsksForEveryManifestType(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	reg.image("team/app", "v1", oci.MediaTypeDockerManifest, 10)
	if _, err := reg.client(Options{}).Resolve(context.Background(), mustParse(t, "team/app:v1")); err != nil {
		t.Fatal(err)
	}
	accept := reg.acceptAt(manifestPath("team/app", "v1"))
	for _, mt := range []string{oci.MediaTypeImageIndex, oci.MediaTypeDockerManifestList, oci.MediaTypeImageManifest, oci.MediaTypeDockerManifest} {
		if !strings.Contains(accept, mt) {
			t.Errorf("Accept %q lacks %s", accept, mt)
		}
	}
}

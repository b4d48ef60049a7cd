package oci

import (
	"encoding/json"
	"testing"
)

func TestDistributable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    Descriptor
		want bool
	}{
		{name: "an OCI layer", d: Descriptor{MediaType: MediaTypeImageLayerGzip}, want: true},
		{name: "a config", d: Descriptor{MediaType: MediaTypeDockerConfig}, want: true},
		{name: "a Docker foreign layer", d: Descriptor{MediaType: MediaTypeDockerForeignLayerGzip}},
		{name: "an OCI non-distributable layer", d: Descriptor{MediaType: MediaTypeImageLayerNondistributableGzip}},
		{name: "a layer with URLs", d: Descriptor{MediaType: MediaTypeImageLayerGzip, URLs: []string{"https://example.com/l"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Distributable(tt.d); got != tt.want {
				t.Errorf("Distributable(%+v) = %v, want %v", tt.d, got, tt.want)
			}
		})
	}
}

func TestDescriptorEncodesInExportsFieldOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    Descriptor
		want string
	}{
		{name: "bare", d: Descriptor{MediaType: MediaTypeImageManifest, Digest: "sha256:00", Size: 1},
			want: `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:00","size":1}`},
		{name: "with a platform", d: Descriptor{MediaType: MediaTypeImageManifest, Digest: "sha256:00", Size: 1,
			Platform: &Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
			want: `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:00","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tt.d)
			if err != nil || string(b) != tt.want {
				t.Errorf("Marshal = %s, %v; want %s", b, err, tt.want)
			}
		})
	}
}

func TestManifestTypesIsACopy(t *testing.T) {
	t.Parallel()
	ManifestTypes()[0] = "changed"
	if ManifestTypes()[0] != MediaTypeImageIndex {
		t.Error("ManifestTypes shares its slice between callers")
	}
}

func TestIsGenericType(t *testing.T) {
	t.Parallel()
	for mediaType, want := range map[string]bool{
		"":                                true,
		"application/octet-stream":        true,
		"binary/octet-stream":             true,
		"application/json; charset=utf-8": true,
		"text/plain":                      true,
		MediaTypeImageManifest:            false,
		MediaTypeImageLayerGzip:           false,
		"not a media type;;":              false,
	} {
		if got := IsGenericType(mediaType); got != want {
			t.Errorf("IsGenericType(%q) = %v, want %v", mediaType, got, want)
		}
	}
}

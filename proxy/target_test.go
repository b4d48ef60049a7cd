package proxy

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

// A target names its request path below /v2/ and carries its Accept; a
// blob is asked without one.
func TestTarget(t *testing.T) {
	t.Parallel()
	dgst := digest.FromString("x")
	accept := acceptHeader([]string{"application/vnd.oci.image.index.v1+json"})
	tests := []struct {
		name       string
		target     target
		wantPath   string
		wantKind   kind
		wantAccept string
	}{
		{name: "blob", target: blobTarget("team/app", dgst), wantPath: "team/app/blobs/" + dgst.String(), wantKind: kindBlob},
		{name: "manifest by digest", target: manifestTarget("team/app", dgst.String(), accept),
			wantPath: "team/app/manifests/" + dgst.String(), wantKind: kindManifest, wantAccept: "application/vnd.oci.image.index.v1+json"},
		{name: "manifest by tag", target: manifestTarget("a/b/c", "v1.2", accept),
			wantPath: "a/b/c/manifests/v1.2", wantKind: kindManifest, wantAccept: "application/vnd.oci.image.index.v1+json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.target.path(); got != tc.wantPath {
				t.Errorf("path = %q, want %q", got, tc.wantPath)
			}
			if tc.target.kind != tc.wantKind {
				t.Errorf("kind = %q, want %q", tc.target.kind, tc.wantKind)
			}
			if got := tc.target.accept.Get("Accept"); got != tc.wantAccept {
				t.Errorf("Accept = %q, want %q", got, tc.wantAccept)
			}
		})
	}
}

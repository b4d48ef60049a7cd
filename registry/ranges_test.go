package registry

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestIfRangeHoldsOnlyForTheBlobsOwnETag(t *testing.T) {
	t.Parallel()
	dgst := digest.FromString("blob")
	for _, tt := range []struct {
		name, ifRange string
		want          bool
	}{
		{"no If-Range", "", true},
		{"the blob's ETag", `"` + dgst.String() + `"`, true},
		{"the blob's ETag, spaced", ` "` + dgst.String() + `" `, true},
		{"weak ETag", `W/"` + dgst.String() + `"`, false},
		{"unquoted digest", dgst.String(), false},
		{"another ETag", `"` + digest.FromString("other").String() + `"`, false},
		{"a date", "Sat, 05 Dec 2026 10:00:00 GMT", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ifRangeHolds(tt.ifRange, dgst); got != tt.want {
				t.Errorf("ifRangeHolds(%q) = %v, want %v", tt.ifRange, got, tt.want)
			}
		})
	}
}

package main

import (
	"io"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/admin"
)

// The cache commands' --cache-max-size is checked like CACHE_MAX_SIZE:
// a value that rounds to 0 bytes is refused naming the flag, before any
// store is opened.
func TestCacheCommandMaxSizeRefusesZero(t *testing.T) {
	t.Parallel()
	for _, v := range []string{".1", "0.9b", "NaN", "-1g"} {
		sf := &storeFlags{dir: t.TempDir(), maxSize: v}
		opts, err := sf.storeOptions(io.Discard, true)
		if err == nil {
			if s, err := admin.OpenStore(opts); err == nil {
				s.Close()
			}
			t.Fatalf("--cache-max-size %q: opened a store", v)
		}
		if !strings.Contains(err.Error(), "--cache-max-size") || !strings.Contains(err.Error(), `"`+v+`"`) {
			t.Fatalf("--cache-max-size %q: error %q does not name the flag and the value", v, err)
		}
	}
}

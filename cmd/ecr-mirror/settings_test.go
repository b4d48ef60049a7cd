package main

import (
	"io"
	"strings"
	"testing"
	"time"

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

// --older-than refuses ages that are no positive duration: NaN days
// (which converted to a negative age and so matched every image), days
// that round to no time, and overflow.
func TestParseAgeRefusesWhatIsNoAge(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"NaNd", "nand", "Infd", "-Infd", "1e-20d", "0.00000000000001d", "5.d", "0.5ns", "1e3d", "0x10d", "36501d"} {
		if d, err := parseAge(in); err == nil {
			t.Errorf("parseAge(%q) = %v, want an error", in, d)
		}
	}
	for in, want := range map[string]time.Duration{"1.5d": 36 * time.Hour, ".5d": 12 * time.Hour, "36500d": 36500 * 24 * time.Hour, "90m": 90 * time.Minute} {
		if d, err := parseAge(in); err != nil || d != want {
			t.Errorf("parseAge(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
}

package settings

import (
	"testing"
	"time"
)

func TestParseAge(t *testing.T) {
	t.Parallel()
	for in, ok := range map[string]bool{"30d": true, "1.5d": true, "12h": true, "90m": true, "0d": false, "-3h": false, "soon": false, "d": false} {
		if _, err := ParseAge(in); (err == nil) != ok {
			t.Errorf("ParseAge(%q): %v", in, err)
		}
	}
}

func FuzzParseAge(f *testing.F) {
	for _, s := range []string{"30d", "1.5d", "12h", "NaNd", "0.5ns", "1e-20d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseAge(s); err == nil && d <= 0 {
			t.Fatalf("ParseAge(%q) = %v without error", s, d)
		}
	})
}

// --older-than refuses ages that are no positive duration: NaN days
// (which converted to a negative age and so matched every image), days
// that round to no time, and overflow.
func TestParseAgeRefusesWhatIsNoAge(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"NaNd", "nand", "Infd", "-Infd", "1e-20d", "0.00000000000001d", "5.d", "0.5ns", "1e3d", "0x10d", "36501d"} {
		if d, err := ParseAge(in); err == nil {
			t.Errorf("ParseAge(%q) = %v, want an error", in, d)
		}
	}
	for in, want := range map[string]time.Duration{"1.5d": 36 * time.Hour, ".5d": 12 * time.Hour, "36500d": 36500 * 24 * time.Hour, "90m": 90 * time.Minute} {
		if d, err := ParseAge(in); err != nil || d != want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
}

package settings

import (
	"io"
	"strings"
	"testing"
)

// Every size and rate setting refuses at startup, naming itself and the
// value, what is no positive whole number of bytes: a fraction that
// rounds to 0 (which would switch UPSTREAM_MAX_RATE off, or reach the
// store as a budget of 0), negatives, NaN, Inf, exponents and overflow.
func TestSizeSettingsRefuseWhatIsNoBytes(t *testing.T) {
	t.Parallel()
	const ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	bad := []string{".1", "0.9", "0.9b", "0.0000000001k", "0", "0.0", "-1", "-0.5g", "-0",
		"NaN", "nan", "NaN.", "Inf", "+Inf", "-inf", "inf.0", "1e3", "1.5e3", "0x10", "0x1.8p1", "1_000",
		"1.2.3", ".", "5.", "5.g", "1..5", "+5", "99999999999t", "4194305t", "9223372036854775807", "1e400", "18446744073709551616"}
	for _, env := range []string{"CACHE_MAX_SIZE", "UPSTREAM_MAX_RATE"} {
		for _, v := range bad {
			t.Run(env+"="+v, func(t *testing.T) {
				t.Parallel()
				cfg, err := Parse(nil, func(k string) string { return map[string]string{"UPSTREAM": ecr, env: v}[k] }, io.Discard)
				if err == nil {
					t.Fatalf("accepted, as CacheMaxSize %d, MaxRate %d", cfg.CacheMaxSize, cfg.MaxRate)
				}
				if want := env + `: "` + v + `"`; !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not name %s", err, want)
				}
			})
		}
	}
	good := []struct {
		v    string
		want int64
	}{
		{"1", 1}, {"1.9", 1}, {"0.5k", 512}, {".5m", 512 << 10}, {"007.50k", 7680}, {"1.5g", 3 << 29},
		{"0.001k", 1}, {"4194304t", 1 << 62}, {"4611686018427387904", 1 << 62}, {" 2 MiB ", 2 << 20},
	}
	for _, tt := range good {
		t.Run("good "+tt.v, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse(nil, func(k string) string {
				return map[string]string{"UPSTREAM": ecr, "CACHE_MAX_SIZE": tt.v, "UPSTREAM_MAX_RATE": tt.v}[k]
			}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.CacheMaxSize != tt.want || cfg.MaxRate != tt.want {
				t.Fatalf("CacheMaxSize %d, MaxRate %d; want %d", cfg.CacheMaxSize, cfg.MaxRate, tt.want)
			}
		})
	}
}

// Duration settings refuse a value that looks like a positive duration
// but rounds to none, which would switch them off (STALE_IF_ERROR) or
// leave no grace (SHUTDOWN_GRACE); 0 written as 0 stays valid.
func TestDurationSettingsRefuseWhatRoundsToZero(t *testing.T) {
	t.Parallel()
	const ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	tests := []struct {
		env, v string
		ok     bool
	}{
		{"STALE_IF_ERROR", "0.5ns", false},
		{"STALE_IF_ERROR", "0.000000001ms", false},
		{"STALE_IF_ERROR", "0", true},
		{"STALE_IF_ERROR", "0s", true},
		{"STALE_IF_ERROR", "0.0h", true},
		{"STALE_IF_ERROR", "1.5ns", true},
		{"SHUTDOWN_GRACE", "0.9ns", false},
		{"SHUTDOWN_GRACE", "0s", true},
		{"UPSTREAM_TAG_TIMEOUT", "0.4ns", false},
		{"TAG_FRESHNESS", "0.4ns", false},
		{"TAG_FRESHNESS", "0", true},
		{"TAG_FRESHNESS", "soon", false},
		{"UPSTREAM_STALL_TIMEOUT", "0.4ns", false},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.v, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(nil, func(k string) string { return map[string]string{"UPSTREAM": ecr, tt.env: tt.v}[k] }, io.Discard)
			if tt.ok != (err == nil) {
				t.Fatalf("error %v, want ok = %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tt.env+`: "`+tt.v+`"`) {
				t.Fatalf("error %q does not name %s and %q", err, tt.env, tt.v)
			}
		})
	}
}

package registry

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestParseReference(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	tests := []struct {
		in   string
		want Reference
		bad  bool
	}{
		{in: "team/app:v1", want: Reference{Name: "team/app", Tag: "v1"}},
		{in: " team/app ", want: Reference{Name: "team/app", Tag: "latest"}},
		{in: "team/app@" + d.String(), want: Reference{Name: "team/app", Dgst: d}},
		{in: "docker-hub/library/alpine:3.19", want: Reference{Name: "docker-hub/library/alpine", Tag: "3.19"}},
		{in: "host:5000/app", bad: true}, // a registry host is not part of a mirror's name
		{in: ":v1", bad: true},
		{in: "app:", bad: true},
		{in: "../app:v1", bad: true},
		{in: "App:v1", bad: true},
		{in: "app@sha512:ab", bad: true},
		{in: "app@sha256:xyz", bad: true},
		{in: "app:-bad", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseReference(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseReference(%q) = %+v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseReference(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if back, err := ParseReference(got.String()); err != nil || back != got {
				t.Errorf("round trip of %q: %+v, %v", got.String(), back, err)
			}
		})
	}
}

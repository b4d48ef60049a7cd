package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// warm and export report an image the registry has not got with the
// registry's code and message, never its JSON body.
func TestImageCommandsShowRegistryErrorsAsMessages(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	putRawImage(fake, "team/app", "v1", newRawImage(52, nil))
	m := startMirror(t, fake, mirrorOpts{})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "warm, a missing tag", args: []string{"warm", "--mirror", m.URL, "team/app:v1", "team/app:nope"},
			want: "FAILED team/app:nope: manifest nope: MANIFEST_UNKNOWN: "},
		{name: "warm, a missing repository", args: []string{"warm", "--mirror", m.URL, "team/gone:v1"},
			want: "FAILED team/gone:v1: manifest v1: NAME_UNKNOWN: "},
		{name: "export, a missing tag", args: []string{"export", "--mirror", m.URL, "-o", filepath.Join(t.TempDir(), "x.tar"), "team/app:nope"},
			want: "ecr-mirror export: team/app:nope: manifest nope: MANIFEST_UNKNOWN: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := imageCommand(t, "", tt.args...)
			if code != exitFail || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, exitFail, tt.want, stderr)
			}
			if strings.Contains(stderr, `{"`) || strings.Contains(stderr, "404 Not Found") {
				t.Errorf("the output shows the registry's raw answer:\n%s", stderr)
			}
		})
	}
}

package imageclient

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

func TestDialChecksItsArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url         string
		concurrency int
		wantErr     string // "": a client
	}{
		{url: "http://mirror:5000", concurrency: 1},
		{url: "https://mirror", concurrency: 8},
		{url: "mirror:5000", concurrency: 1, wantErr: `"mirror:5000" is not an http(s) URL`},
		{url: "ftp://mirror", concurrency: 1, wantErr: `"ftp://mirror" is not an http(s) URL`},
		{url: "http://", concurrency: 1, wantErr: `"http://" is not an http(s) URL`},
		{url: "http://mirror", concurrency: 0, wantErr: "concurrency must be at least 1, got 0"},
	}
	for _, tt := range tests {
		c, err := Dial(tt.url, false, Options{Concurrency: tt.concurrency})
		switch {
		case tt.wantErr == "" && (err != nil || c == nil):
			t.Errorf("Dial(%q, %d) = %v, want a client", tt.url, tt.concurrency, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("Dial(%q, %d) = %v, want %q", tt.url, tt.concurrency, err, tt.wantErr)
		}
	}
}

// A dialled client reads through its own transport, which asks for no
// compression: the registry sees no Accept-Encoding.
func TestDialledClientAsksForNoCompression(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	top := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
	c, err := Dial(reg.srv.URL, false, Options{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.Warm(context.Background(), mustParse(t, "team/app:v1"), nil)
	if err != nil || img.Top.Digest != top.Digest {
		t.Fatalf("Warm = %v, %v; want %s", img, err, top.Digest)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	encodings := reg.encodings
	if len(encodings) != 3 {
		t.Fatalf("%d requests, want 3 (manifest, config, layer)", len(encodings))
	}
	for _, e := range encodings {
		if e != "" {
			t.Fatalf("Accept-Encoding %q sent, want none", e)
		}
	}
}

// PullWhole reads every platform through whatever the HTTP client dials,
// whatever host the URL names.
func TestPullWholeReadsEveryPlatformThroughItsClient(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	amd := reg.image("team/app", "", oci.MediaTypeImageManifest, 100)
	arm := reg.image("team/app", "", oci.MediaTypeImageManifest, 200)
	top := reg.index("team/app", "v1", oci.MediaTypeImageIndex, onPlatform(amd, "linux/amd64"), onPlatform(arm, "linux/arm64"))
	addr := reg.srv.Listener.Addr().String()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
	img, err := PullWhole(context.Background(), client, mustParse(t, "team/app:v1"), false)
	if err != nil || img.Top.Digest != top.Digest {
		t.Fatalf("PullWhole = %v, %v; want %s", img, err, top.Digest)
	}
	size := img.Size()
	if want := top.Size + amd.Size + arm.Size + 2*64 + 100 + 200; size != want {
		t.Errorf("size %d, want %d", size, want)
	}
	for _, path := range []string{manifestPath("team/app", amd.Digest.String()), manifestPath("team/app", arm.Digest.String())} {
		if reg.getsOf(path) != 1 {
			t.Errorf("%s read %d times, want once", path, reg.getsOf(path))
		}
	}
}

func TestReadImageList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, text string
		want       []string
		wantErr    string
	}{
		{name: "images, comments and blanks", text: "team/app:v1\n\n  # a comment\nbase/debian@sha256:" + strings.Repeat("a", 64) + "  # pinned\nteam/tool\n",
			want: []string{"team/app:v1", "base/debian@sha256:" + strings.Repeat("a", 64), "team/tool:latest"}},
		{name: "empty", text: "# nothing\n"},
		{name: "bad image", text: "team/app:v1\nTeam/App:v1\n", wantErr: `image "Team/App:v1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "images.txt")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			refs, err := ReadImageList(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("ReadImageList = %v, want an error naming %s and %s", err, path, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.String())
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("images %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := ReadImageList(filepath.Join(t.TempDir(), "missing.txt")); err == nil {
		t.Fatal("a missing file read without error")
	}
}

// ParseImages takes the command line's images first, then the files',
// and names the image or file at fault.
func TestParseImages(t *testing.T) {
	t.Parallel()
	list := filepath.Join(t.TempDir(), "images.txt")
	if err := os.WriteFile(list, []byte("team/b:v2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name          string
		images, files []string
		want, wantErr string
	}{
		{name: "arguments then files", images: []string{"team/a", "team/c:v3"}, files: []string{list}, want: "team/a:latest team/c:v3 team/b:v2"},
		{name: "none", want: ""},
		{name: "bad image", images: []string{"team/a", "Bad/Name"}, wantErr: `image "Bad/Name"`},
		{name: "missing file", files: []string{list + ".gone"}, wantErr: list + ".gone"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			refs, err := ParseImages(tt.images, tt.files)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseImages = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.String())
			}
			if err != nil || strings.Join(got, " ") != tt.want {
				t.Fatalf("ParseImages = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

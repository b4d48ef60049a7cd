package fakeecr

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

const sampleImage = "../../testdata/sample-image"

// The sample image's digests, as testdata/README.md lists them.
const (
	sampleManifest = "sha256:c7d5b98b839867758f51bc876adbe6985b54c646ff3bb7e818374eb9da71910d"
	sampleConfig   = "sha256:135bc6ce40e155955a08ae413f6248e27e7a39ee0aee193364e5ef49c50172ae"
	sampleLayer    = "sha256:7a17db4b96a93b5db620ab61000b706c34037bc316f3f050b2ea2024d5a71c42"
)

// TestLoadOCILayout loads testdata/sample-image and pulls it back over HTTP as
// a client would: manifest by tag, then config and layer through S3.
func TestLoadOCILayout(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	if err := f.LoadOCILayout(sampleImage, "sample/hello", "latest"); err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)

	r := do(t, c, http.MethodGet, f.URL()+"/v2/sample/hello/manifests/latest", auth)
	if r.StatusCode != http.StatusOK || r.Header.Get("Docker-Content-Digest") != sampleManifest ||
		r.Header.Get("Content-Type") != oci.MediaTypeImageManifest || digest.FromBytes(r.body) != sampleManifest {
		t.Fatalf("manifest: %d, digest %q, type %q", r.StatusCode, r.Header.Get("Docker-Content-Digest"), r.Header.Get("Content-Type"))
	}
	var m struct {
		Config oci.Descriptor   `json:"config"`
		Layers []oci.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest != sampleConfig || len(m.Layers) != 1 || m.Layers[0].Digest != sampleLayer {
		t.Fatalf("manifest references %s and %v", m.Config.Digest, m.Layers)
	}

	pull := func(d oci.Descriptor) []byte {
		t.Helper()
		r := do(t, c, http.MethodGet, f.URL()+"/v2/sample/hello/blobs/"+d.Digest.String(), auth)
		if r.StatusCode != http.StatusTemporaryRedirect {
			t.Fatalf("blob %s: %d", d.Digest, r.StatusCode)
		}
		r = do(t, c, http.MethodGet, r.Header.Get("Location"))
		if r.StatusCode != http.StatusOK || int64(len(r.body)) != d.Size || digest.FromBytes(r.body) != d.Digest {
			t.Fatalf("blob %s from S3: %d, %d bytes", d.Digest, r.StatusCode, len(r.body))
		}
		return r.body
	}
	var cfg struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			Cmd []string `json:"Cmd"`
		} `json:"config"`
		RootFS struct {
			DiffIDs []digest.Digest `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(pull(m.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "amd64" || cfg.OS != "linux" || strings.Join(cfg.Config.Cmd, " ") != "cat /hello.txt" || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("config %+v", cfg)
	}

	// The layer is a gzip'd tar holding hello.txt; its diff_id is right.
	zr, err := gzip.NewReader(bytes.NewReader(pull(m.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header has time %v, name %q: not reproducible", zr.ModTime, zr.Name)
	}
	uncompressed, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(uncompressed); got != cfg.RootFS.DiffIDs[0] {
		t.Errorf("diff_id %s, uncompressed layer %s", cfg.RootFS.DiffIDs[0], got)
	}
	tr := tar.NewReader(bytes.NewReader(uncompressed))
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	content, err := io.ReadAll(tr)
	if err != nil || hdr.Name != "hello.txt" || string(content) != "hello from ecr-mirror\n" {
		t.Errorf("layer holds %q = %q (%v)", hdr.Name, content, err)
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("layer holds more than hello.txt: %v", err)
	}
	if d, ok := f.ResolveTag("sample/hello", "latest"); !ok || d != sampleManifest {
		t.Errorf("ResolveTag = %s, %v", d, ok)
	}
}

func TestLoadOCILayoutErrors(t *testing.T) {
	t.Parallel()
	// copyLayout copies the sample into a temporary directory and lets edit
	// change it.
	copyLayout := func(t *testing.T, edit func(dir string)) string {
		t.Helper()
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(sampleImage)); err != nil {
			t.Fatal(err)
		}
		edit(dir)
		return dir
	}
	blobPath := func(dir, dgst string) string {
		return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(dgst, "sha256:"))
	}
	write := func(t *testing.T, path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name, repo, tag string
		edit            func(t *testing.T, dir string)
		wantErr         string
	}{
		{"not a layout", "r", "t", func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, "oci-layout")) }, "oci-layout is missing"},
		{"bad version", "r", "t", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "oci-layout"), `{"imageLayoutVersion":"9"}`)
		}, "imageLayoutVersion"},
		{"tampered layer", "r", "t", func(t *testing.T, dir string) { write(t, blobPath(dir, sampleLayer), "evil") }, "has digest"},
		{"missing config", "r", "t", func(t *testing.T, dir string) { _ = os.Remove(blobPath(dir, sampleConfig)) }, "is missing"},
		{"empty index", "r", "t", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "index.json"), `{"schemaVersion":2,"manifests":[]}`)
		}, "no manifests"},
		{"bad repository", "Bad/Name", "t", func(*testing.T, string) {}, "invalid repository"},
		{"bad tag", "r", "-t", func(*testing.T, string) {}, "invalid tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := copyLayout(t, func(dir string) { tc.edit(t, dir) })
			f := Start(t, Options{})
			err := f.LoadOCILayout(dir, tc.repo, tc.tag)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadOCILayout: %v, want an error containing %q", err, tc.wantErr)
			}
			// Nothing was loaded.
			if _, ok := f.ResolveTag(tc.repo, tc.tag); ok || len(f.store.blobs) != 0 {
				t.Errorf("a failed load left content behind")
			}
		})
	}
}

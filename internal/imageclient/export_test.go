package imageclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// recordedTasks records how each image's task was finished.
type recordedTasks struct {
	mu       sync.Mutex
	finished map[string]string // name: detail, or "error: ..."
}

func (r *recordedTasks) task(name string) Task { return &recordedTask{r: r, name: name} }

type recordedTask struct {
	countingProgress
	r    *recordedTasks
	name string
}

func (t *recordedTask) Finish(err error, detail string) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	if err != nil {
		detail = "error: " + err.Error()
	}
	t.r.finished[t.name] = detail
}

// Export writes every image, in order, to a file that reads back, and
// sums up what it wrote; a missing image leaves no file at all.
func TestExportWritesTheArchiveWholeOrNotAtAll(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	app := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10, 20)
	ecr := reg.image("team/ecr", "v2", oci.MediaTypeDockerManifest, 30)
	c := reg.client(Options{})
	for _, tt := range []struct {
		name    string
		refs    []string
		wantErr string
	}{
		{name: "two images", refs: []string{"team/app:v1", "team/ecr:v2"}},
		{name: "a missing image", refs: []string{"team/app:v1", "team/gone:v1"}, wantErr: "team/gone:v1: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var refs []registry.Reference
			for _, r := range tt.refs {
				refs = append(refs, mustParse(t, r))
			}
			path := filepath.Join(t.TempDir(), "out.tar")
			tasks := &recordedTasks{finished: map[string]string{}}
			sum, err := c.Export(context.Background(), path, refs, tasks.task)
			if tt.wantErr != "" {
				if _, serr := os.Stat(path); err == nil || !strings.Contains(err.Error(), tt.wantErr) || !os.IsNotExist(serr) {
					t.Fatalf("Export = %v (file: %v), want an error with %q and no file", err, serr, tt.wantErr)
				}
				if d := tasks.finished["team/gone:v1"]; !strings.HasPrefix(d, "error: ") {
					t.Fatalf("the missing image's task finished with %q, want its error", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkExported(t, path, sum, app.Digest, ecr.Digest)
			if d := tasks.finished["team/app:v1"]; d != "1 manifests, 3 blobs" {
				t.Fatalf("team/app:v1's task finished with %q", d)
			}
		})
	}
}

// checkExported checks the summary against the archive at path: app
// kept as it is, ecr's Docker manifest rewritten with its source named.
func checkExported(t *testing.T, path string, sum *ExportSummary, app, ecr digest.Digest) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	layout, err := ocilayout.Read(f, func(ocilayout.Blob) error { return nil })
	if err != nil || sum.File != path || sum.Bytes != fi.Size() || len(sum.Images) != 2 || len(layout.Index) != 2 {
		t.Fatalf("summary %+v of a %d-byte archive with %d images (%v)", sum, fi.Size(), len(layout.Index), err)
	}
	got, rewritten := sum.Images[0], sum.Images[1]
	if got.Name != "team/app:v1" || got.Digest != app || got.SourceDigest != "" || got.Blobs != 3 || got.MediaType != oci.MediaTypeImageManifest {
		t.Errorf("first image %+v, want team/app:v1 %s as it is with 3 blobs (config and 2 layers)", got, app)
	}
	if rewritten.Name != "team/ecr:v2" || rewritten.SourceDigest != ecr || rewritten.Digest == ecr || rewritten.MediaType != oci.MediaTypeImageManifest ||
		layout.Index[1].Digest != rewritten.Digest {
		t.Errorf("second image %+v, want team/ecr:v2 rewritten from %s, as index.json names it (%s)", rewritten, ecr, layout.Index[1].Digest)
	}
}

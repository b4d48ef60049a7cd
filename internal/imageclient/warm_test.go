package imageclient

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

func TestWarmReadsEveryBlobOnceAndCountsItsBytes(t *testing.T) {
	t.Parallel()
	for _, concurrency := range []int{0, 1, 4} {
		t.Run(fmt.Sprint("concurrency ", concurrency), func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			amd := reg.image("team/app", "", oci.MediaTypeDockerManifest, 100, 200, 300)
			arm := reg.image("team/app", "", oci.MediaTypeDockerManifest, 400)
			reg.index("team/app", "v1", oci.MediaTypeDockerManifestList, onPlatform(amd, "linux/amd64"), onPlatform(arm, "linux/arm64"))
			var prog countingProgress
			img, err := reg.client(Options{Concurrency: concurrency}).Warm(context.Background(), mustParse(t, "team/app:v1"), &prog)
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Blobs) != 6 {
				t.Fatalf("%d blobs, want 6", len(img.Blobs))
			}
			for _, b := range img.Blobs {
				if n := reg.getsOf(blobPath("team/app", b.Digest)); n != 1 {
					t.Errorf("blob %s read %d times, want once", b.Digest, n)
				}
			}
			if prog.total != img.Size() || prog.done != img.Size() {
				t.Errorf("progress %d of %d bytes, want %d of %d", prog.done, prog.total, img.Size(), img.Size())
			}
		})
	}
}

func TestWarmWithoutProgress(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	top := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
	img, err := reg.client(Options{}).Warm(context.Background(), mustParse(t, "team/app:v1"), nil)
	if err != nil || img.Top.Digest != top.Digest {
		t.Fatalf("Warm = %v, %v; want the image %s", img, err, top.Digest)
	}
}

func TestWarmRefusesBlobsThatDoNotMatchTheirManifest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		answer  func(body []byte) entry
		wantErr string
	}{
		{name: "other bytes of the same size", wantErr: "body hashes to sha256:", answer: func(body []byte) entry {
			return entry{body: make([]byte, len(body))}
		}},
		{name: "cut short", wantErr: "got 99 bytes, manifest says 100", answer: func(body []byte) entry {
			return entry{body: body[:99]}
		}},
		{name: "an error status", wantErr: "500 Internal Server Error: broken", answer: func([]byte) entry {
			return entry{body: []byte("broken"), status: http.StatusInternalServerError}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			cfg := reg.blob("team/app", "application/vnd.oci.image.config.v1+json", 10)
			layers := []oci.Descriptor{reg.blob("team/app", "application/vnd.oci.image.layer.v1.tar+gzip", 100)}
			for range 5 {
				layers = append(layers, reg.blob("team/app", "application/vnd.oci.image.layer.v1.tar+gzip", 10))
			}
			reg.manifest("team/app", "v1", oci.MediaTypeImageManifest, manifestDoc{SchemaVersion: 2,
				MediaType: oci.MediaTypeImageManifest, Config: &cfg, Layers: layers})
			bad := layers[0]
			reg.mu.Lock()
			body := reg.content[blobPath("team/app", bad.Digest)].body
			reg.mu.Unlock()
			reg.set(blobPath("team/app", bad.Digest), tt.answer(body))
			_, err := reg.client(Options{Concurrency: 2}).Warm(context.Background(), mustParse(t, "team/app:v1"), nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), bad.Digest.String()) {
				t.Fatalf("Warm = %v; want an error naming %s and containing %q", err, bad.Digest, tt.wantErr)
			}
		})
	}
}

// WarmAll warms every image, finishing each one's task with its summary
// or its error, and names those that failed; once the context is done
// it tries no more.
func TestWarmAllNamesTheImagesThatFailed(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
	reg.image("team/tool", "v1", oci.MediaTypeImageManifest, 20)
	c := reg.client(Options{})
	refs := []registry.Reference{mustParse(t, "team/app:v1"), mustParse(t, "team/gone:v1"), mustParse(t, "team/tool:v1")}
	tasks := &recordedTasks{finished: map[string]string{}}
	failed := c.WarmAll(context.Background(), refs, tasks.task)
	if strings.Join(failed, " ") != "team/gone:v1" {
		t.Fatalf("failed %q, want team/gone:v1", failed)
	}
	if tasks.finished["team/tool:v1"] != "1 manifests, 2 blobs" || !strings.HasPrefix(tasks.finished["team/gone:v1"], "error: ") {
		t.Fatalf("tasks finished as %q", tasks.finished)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := reg.getsOf(manifestPath("team/app", "v1"))
	if failed := c.WarmAll(ctx, refs[:1], nil); len(failed) != 1 || reg.getsOf(manifestPath("team/app", "v1")) != before {
		t.Fatalf("WarmAll after the context ended: failed %q, manifest read again: %v", failed, reg.getsOf(manifestPath("team/app", "v1")) != before)
	}
}

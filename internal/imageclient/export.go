package imageclient

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Task is the progress of one image of several: a [Progress], then
// Finish once with the image's error, or its summary line.
type Task interface {
	Progress
	Finish(err error, detail string)
}

// ExportSummary is what [Client.Export] wrote ("export --json").
type ExportSummary struct {
	File   string          `json:"file"`
	Bytes  int64           `json:"bytes"`
	Images []ExportedImage `json:"images"`
}

// ExportedImage is one image of an [ExportSummary].
type ExportedImage struct {
	Name      string        `json:"name"`
	Digest    digest.Digest `json:"digest"` // of the manifest index.json names
	MediaType string        `json:"mediaType"`
	// SourceDigest is ECR's manifest, when rewritten to OCI types.
	SourceDigest digest.Digest `json:"sourceDigest,omitempty"`
	Blobs        int           `json:"blobs"`
	Bytes        int64         `json:"bytes"`
	// Referrers are the referrers written with it (WithReferrers).
	Referrers []digest.Digest `json:"referrers,omitempty"`
}

// Export writes the images refs name to an OCI layout archive at path
// ([Client.WriteImage] each, in order), complete or not at all
// (ocilayout.WriteFile). task, when set, starts the progress of each
// image by its name.
func (c *Client) Export(ctx context.Context, path string, refs []registry.Reference, task func(name string) Task) (*ExportSummary, error) {
	sum := &ExportSummary{File: path, Images: []ExportedImage{}}
	size, err := ocilayout.WriteFile(path, func(aw *ocilayout.Writer) error {
		for _, r := range refs {
			img, err := c.exportImage(ctx, aw, r, task)
			if err != nil {
				return fmt.Errorf("%s: %w", r, err)
			}
			sum.Images = append(sum.Images, *img)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sum.Bytes = size
	return sum, nil
}

// exportImage adds one image to the archive, as a task of its own.
func (c *Client) exportImage(ctx context.Context, aw *ocilayout.Writer, r registry.Reference, task func(string) Task) (*ExportedImage, error) {
	t := startTask(task, r.String())
	w, err := c.WriteImage(ctx, aw, r, t)
	if err != nil {
		t.Finish(err, "")
		return nil, err
	}
	img := w.Image
	t.Finish(nil, img.Summary())
	out := &ExportedImage{Name: r.String(), Digest: w.Top.Digest, MediaType: w.Top.MediaType, Blobs: len(img.Blobs), Bytes: img.Size(),
		Referrers: img.ReferrerRoots()}
	if w.Top.Digest != img.Top.Digest {
		out.SourceDigest = img.Top.Digest
	}
	return out, nil
}

// startTask is task's Task for the image name; when task is nil, one
// that reports nothing.
func startTask(task func(name string) Task, name string) Task {
	if task == nil {
		return finishless{}
	}
	return task(name)
}

// finishless is the Task of a nil task function.
type finishless struct{ discard }

func (finishless) Finish(error, string) {}

// Summary is the line a command prints for an image it read: how many
// manifests, blobs and referrers.
func (img *Image) Summary() string {
	s := fmt.Sprintf("%d manifests, %d blobs", len(img.Manifests), len(img.Blobs))
	if n := len(img.ReferrerRoots()); n > 0 {
		s += fmt.Sprintf(", %d referrers", n)
	}
	return s
}

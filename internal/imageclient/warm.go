package imageclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Progress counts the bytes of one image as they are read; nil counts
// nothing.
type Progress interface {
	// AddTotal grows the expected total, as the image's size becomes
	// known.
	AddTotal(n int64)
	// Add counts n bytes done, from any of the blobs read at once.
	Add(n int64)
	// Reader counts what r yields.
	Reader(r io.Reader) io.Reader
}

// discard is the Progress of a nil Progress.
type discard struct{}

func (discard) AddTotal(int64)               {}
func (discard) Add(int64)                    {}
func (discard) Reader(r io.Reader) io.Reader { return r }

func orDiscard(p Progress) Progress {
	if p == nil {
		return discard{}
	}
	return p
}

// WarmAll warms each of refs in turn (Warm), each a [Task] of task's
// when set, and returns those that failed; once ctx is done, the rest
// fail without being tried.
func (c *Client) WarmAll(ctx context.Context, refs []registry.Reference, task func(name string) Task) (failed []string) {
	for _, r := range refs {
		if ctx.Err() != nil {
			failed = append(failed, r.String())
			continue
		}
		t := startTask(task, r.String())
		img, err := c.Warm(ctx, r, t)
		if err != nil {
			t.Finish(err, "")
			failed = append(failed, r.String())
			continue
		}
		t.Finish(nil, img.Summary())
	}
	return failed
}

// Warm reads r whole (with Options.WithReferrers, its referrers too),
// several blobs at once, verifying each, so that a mirror serving the
// registry API caches it; it returns the image.
func (c *Client) Warm(ctx context.Context, r registry.Reference, prog Progress) (*Image, error) {
	prog = orDiscard(prog)
	img, err := c.Resolve(ctx, r)
	if err != nil {
		return nil, err
	}
	prog.AddTotal(img.Size())
	for _, m := range slices.Concat(img.Manifests, img.Referrers) {
		prog.Add(m.Desc.Size)
	}
	if err := c.fetchBlobs(ctx, r.Name, img.Blobs, prog); err != nil {
		return nil, err
	}
	return img, nil
}

// fetchBlobs reads blobs, c.concurrency at once, counting their bytes
// against prog, and returns the first error (the others stop at once).
func (c *Client) fetchBlobs(ctx context.Context, repo string, blobs []oci.Descriptor, prog Progress) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, c.concurrency)
	var wg sync.WaitGroup
	for _, b := range blobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.fetchBlob(ctx, repo, b, prog); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// fetchBlob reads a blob to its end and checks its size and digest.
func (c *Client) fetchBlob(ctx context.Context, repo string, b oci.Descriptor, prog Progress) error {
	body, err := c.OpenBlob(ctx, repo, b)
	if err != nil {
		return err
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, prog.Reader(body))
	if err != nil {
		return fmt.Errorf("blob %s: after %d bytes: %w", b.Digest, n, err)
	}
	if b.Size > 0 && n != b.Size {
		return fmt.Errorf("blob %s: got %d bytes, manifest says %d", b.Digest, n, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.Digest.Encoded() {
		return fmt.Errorf("blob %s: body hashes to sha256:%s", b.Digest, got)
	}
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
	"github.com/ecr-mirror/ecr-mirror/internal/progress"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

const exportUsage = `Usage: ecr-mirror export [flags] -o FILE.tar IMAGE... [-f FILE]

Writes the images, read through a running mirror (from its cache, misses
fetched from ECR), to an OCI image-layout archive: "skopeo copy
oci-archive:FILE.tar:REPO:TAG ..." reads it, "docker load -i FILE.tar" loads
it, and "ecr-mirror import FILE.tar" fills another mirror's cache with it.
Each image is named in the archive as the mirror names it
(org.opencontainers.image.ref.name: repo:tag) and with the mirror's host
(io.containerd.image.name: host/repo:tag). An index is kept whole unless
--platform picks one of its platforms. Every digest is verified; the file
appears only once complete.

--with-referrers also writes each image's referrers (signatures, SBOMs,
attestations, and theirs; --referrers-type TYPE keeps the image's referrers of
that artifactType only), each with an index.json entry of its own that names
no image, as oras lays referrers out; import admits them with the image.

` + loginUsage + `
Example:
  ecr-mirror export --mirror http://mirror.internal:5000 -o site-b.tar team/app:v1.4 base/debian:12
  # at the site: ecr-mirror import site-b.tar

Flags:
`

// exportSummary is "export --json".
type exportSummary struct {
	File   string          `json:"file"`
	Bytes  int64           `json:"bytes"`
	Images []exportedImage `json:"images"`
}

type exportedImage struct {
	Name      string        `json:"name"`
	Digest    digest.Digest `json:"digest"` // of the manifest index.json names
	MediaType string        `json:"mediaType"`
	// SourceDigest is ECR's manifest, when rewritten to OCI types.
	SourceDigest digest.Digest `json:"sourceDigest,omitempty"`
	Blobs        int           `json:"blobs"`
	Bytes        int64         `json:"bytes"`
	// Referrers are the referrers written with it (--with-referrers).
	Referrers []digest.Digest `json:"referrers,omitempty"`
}

// runExport is "ecr-mirror export".
func runExport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runExportWith(ctx, args, os.Stdin, stdout, stderr)
}

// runExportWith is "ecr-mirror export" reading --password-stdin from
// stdin.
func runExportWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, exportUsage); fs.PrintDefaults() }
	var pf pullFlags
	pf.register(fs)
	out := fs.String("o", "", "the archive to write (required)")
	quiet := fs.Bool("quiet", false, "no progress; only failures and the summary")
	asJSON := fs.Bool("json", false, "print a JSON summary on stdout")
	refs, code, ok := pf.parse(fs, args, "export", stderr)
	if !ok {
		return code
	}
	if *out == "" {
		fmt.Fprint(stderr, "ecr-mirror export: -o FILE.tar is required\n")
		return exitUsage
	}
	c, code := pf.client(ctx, "export", stdin, stderr)
	if c == nil {
		return code
	}
	prog := progress.New(ctx, stderr, progress.Choose(stderr, *quiet || *asJSON), "export")
	sum, err := export(ctx, c, *out, refs, prog)
	prog.Wait()
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror export: %v\n", err)
		return exitFail
	}
	if *asJSON {
		return printJSON(stdout, stderr, "export", sum)
	}
	fmt.Fprintf(stderr, "wrote %s: %d images, %s\n", sum.File, len(sum.Images), progress.HumanBytes(sum.Bytes))
	return exitOK
}

// export writes the images to the archive path, complete or not at all.
func export(ctx context.Context, c *imageclient.Client, path string, refs []registry.Reference, prog *progress.Progress) (*exportSummary, error) {
	sum := &exportSummary{File: path, Images: []exportedImage{}}
	size, err := ocilayout.WriteFile(path, func(aw *ocilayout.Writer) error {
		for _, r := range refs {
			img, err := exportImage(ctx, c, aw, r, prog)
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

// exportImage adds one image to the archive, as a task of prog.
func exportImage(ctx context.Context, c *imageclient.Client, aw *ocilayout.Writer, r registry.Reference, prog *progress.Progress) (*exportedImage, error) {
	t := prog.Task(r.String(), 0)
	w, err := c.WriteImage(ctx, aw, r, t)
	if err != nil {
		t.Finish(err, "")
		return nil, err
	}
	img := w.Image
	t.Finish(nil, imageSummary(img))
	out := &exportedImage{Name: r.String(), Digest: w.Top.Digest, MediaType: w.Top.MediaType, Blobs: len(img.Blobs), Bytes: img.Size(),
		Referrers: img.ReferrerRoots()}
	if w.Top.Digest != img.Top.Digest {
		out.SourceDigest = img.Top.Digest
	}
	return out, nil
}

// printJSON writes v as indented JSON for --json.
func printJSON(stdout, stderr io.Writer, cmd string, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "ecr-mirror %s: %v\n", cmd, err)
		return exitFail
	}
	return exitOK
}

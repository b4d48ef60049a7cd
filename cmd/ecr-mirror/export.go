package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
	"github.com/ecr-mirror/ecr-mirror/internal/progress"
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
	sum, err := c.Export(ctx, *out, refs, func(name string) imageclient.Task { return prog.Task(name, 0) })
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

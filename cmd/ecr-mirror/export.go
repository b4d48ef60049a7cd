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

// runExport is "ecr-mirror export".
func runExport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runExportWith(ctx, args, os.Stdin, stdout, stderr)
}

// runExportWith is "ecr-mirror export" reading --password-stdin from
// stdin.
func runExportWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage("export")); fs.PrintDefaults() }
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

package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
)

// runVersion prints the build's version, commit, Go release and
// platform ("ecr-mirror version", "ecr-mirror --version").
func runVersion(_ context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: ecr-mirror version\n\nPrints the version, the commit it was built from, and the Go release and platform it was built with.\n")
	}
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "ecr-mirror version: unexpected arguments %q: it takes none\n", pos)
		return exitUsage
	}
	printVersion(stdout, buildinfo.Read())
	return exitOK
}

// printVersion writes info as the version command shows it.
func printVersion(w io.Writer, info buildinfo.Info) {
	fmt.Fprintf(w, "ecr-mirror %s\ncommit:   %s\ngo:       %s\nplatform: %s\n", info.Version, info.Commit, info.GoVersion, info.Platform)
}

// isVersionFlag tells whether a is the version flag, which runs the
// version command.
func isVersionFlag(a string) bool {
	return a == "--version" || a == "-version"
}

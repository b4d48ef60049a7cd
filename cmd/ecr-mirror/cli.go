package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/internal/settings"
)

// Exit statuses of the subcommands.
const (
	exitOK    = 0
	exitFail  = 1 // the work failed: an image, a bad entry, a locked store
	exitUsage = 2 // bad arguments
)

// command is one subcommand of ecr-mirror besides serve.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order help shows them.
func commands() []command {
	return []command{
		{name: "warm", summary: "pull whole images through a running mirror so its cache holds them", run: runWarm},
		{name: "export", summary: "write images from a running mirror to an OCI archive (a seed bundle)", run: runExport},
		{name: "import", summary: "verify an OCI archive and admit it to the cache, with its tags", run: runImport},
		{name: "cache", summary: "the cache: ls, verify, pin, unpin, purge", run: runCache},
		{name: "config", summary: "config check [FILE]: check the settings and print them as a config file", run: runConfig},
		{name: "healthcheck", summary: "ask the mirror configured here whether it is alive (a container HEALTHCHECK)", run: runHealthcheck},
		{name: "version", summary: "print the version, commit and Go release (also --version)", run: runVersion},
	}
}

// serverArgs tells whether args (os.Args[1:]) run the server, as
// "ecr-mirror [flags]" and "ecr-mirror serve [flags]" do, and returns the
// arguments for parseConfig. Anything else is for runCLI.
func serverArgs(args []string) ([]string, bool) {
	if len(args) == 0 {
		return args, true
	}
	switch a := args[0]; {
	case a == "serve" && len(args) > 1 && isHelp(args[1]):
		return nil, false // the settings' help, on stdout
	case a == "serve":
		return args[1:], true
	case isHelp(a), isVersionFlag(a):
		return nil, false
	case strings.HasPrefix(a, "-"):
		return args, true // server flags, optionally followed by "serve"
	}
	return nil, false
}

func isHelp(a string) bool {
	return a == "help" || a == "-h" || a == "-help" || a == "--help"
}

// runCLI runs a subcommand (args without the program name) and returns
// the process exit status.
func runCLI(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) {
		if len(args) > 1 { // "help warm" is "warm --help"
			return runCLI(ctx, []string{args[1], "--help"}, getenv, stdout, stderr)
		}
		printCommands(stdout)
		return exitOK
	}
	if args[0] == "serve" { // "serve --help", "help serve"
		settings.Usage(stdout)
		return exitOK
	}
	if isVersionFlag(args[0]) {
		args = append([]string{"version"}, args[1:]...)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "ecr-mirror: unknown command %q\n\n", args[0])
	printCommands(stderr)
	return exitUsage
}

func printCommands(w io.Writer) {
	fmt.Fprint(w, "Usage: ecr-mirror [COMMAND] [flags]\n\nCommands:\n")
	fmt.Fprintf(w, "  %-11s %s\n", "serve", "serve the registry API (the default with no command)")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "  help        show this list\n\nRun \"ecr-mirror COMMAND --help\" for a command's flags and an example.\n")
	fmt.Fprint(w, "The server's settings (flags, environment variables or CONFIG_FILE keys) are\n"+
		"listed by \"ecr-mirror serve --help\", and in README.md under Settings.\n")
}

// parseFlags parses args with fs, allowing flags after positional
// arguments ("warm app:v1 -f more.txt"); "--" ends the flags. It returns
// the positional arguments, and the exit status to return at once (help
// or a bad flag) with ok false.
func parseFlags(fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

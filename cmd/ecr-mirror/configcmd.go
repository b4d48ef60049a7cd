package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/internal/settings"
)

// runConfig runs "ecr-mirror config SUBCOMMAND".
func runConfig(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	switch {
	case len(args) > 0 && isHelp(args[0]):
		fmt.Fprint(stdout, usage("config"))
		return exitOK
	case len(args) == 0 || args[0] != "check":
		fmt.Fprint(stderr, usage("config"))
		return exitUsage
	}
	args = args[1:]
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, usage("config"))
		return exitOK
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		getenv, args = settings.WithConfigFile(getenv, args[0]), args[1:]
	}
	cfg, err := settings.Parse(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror: invalid configuration:\n%v\n", err)
		return exitFail
	}
	if err := cfg.WriteFile(stdout); err != nil {
		fmt.Fprintf(stderr, "ecr-mirror: %v\n", err)
		return exitFail
	}
	return exitOK
}

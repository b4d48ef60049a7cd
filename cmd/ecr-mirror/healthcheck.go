package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/healthcheck"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
)

// defaultHealthTimeout bounds a health check unless -timeout says
// otherwise; it stays under Docker's default HEALTHCHECK timeout (30s).
const defaultHealthTimeout = 10 * time.Second

// runHealthcheck is "ecr-mirror healthcheck": exit 0 when the configured
// mirror answers /healthz with 200, else 1 (Docker reserves 2).
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", defaultHealthTimeout, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage("healthcheck"))
		fs.PrintDefaults()
	}
	serverFlags, code, ok := parseFlags(fs, args)
	if !ok {
		return min(code, exitFail)
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "ecr-mirror healthcheck: -timeout %s: want a positive duration such as 10s\n", *timeout)
		return exitFail
	}
	cfg, err := settings.Parse(serverFlags, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror healthcheck: invalid configuration: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return exitFail
	}
	target, err := healthcheck.Target(cfg)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		err = target.Check(ctx, *timeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror healthcheck: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "ok: %s answered 200\n", target.URL)
	return exitOK
}

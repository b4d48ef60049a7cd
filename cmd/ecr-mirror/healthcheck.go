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

const healthcheckUsage = `Usage: ecr-mirror healthcheck [-timeout 10s] [-- SERVER FLAGS]

Asks the mirror configured here whether it is alive: GET /healthz on
METRICS_ADDR when set, else on LISTEN_ADDR (https when TLS_CERTIFICATE
is set; a wildcard host such as ":5000" is asked on 127.0.0.1). It reads
the settings the server reads (environment variables; server flags go
after "--"), so a container's HEALTHCHECK needs no arguments. Exits 0
when /healthz answers 200, else 1 with the reason on one line.

Over https the mirror must present the certificate in TLS_CERTIFICATE,
or one issued by a CA certificate that file holds; the names in it are
not checked, as the check dials a local address, not the mirror's name.

ALLOW_NETWORKS holds for /healthz on LISTEN_ADDR: when it leaves out
127.0.0.1 the check is refused (403 DENIED); set METRICS_ADDR, or allow
127.0.0.1/32.

Flags:
`

// runHealthcheck is "ecr-mirror healthcheck": exit 0 when the configured
// mirror answers /healthz with 200, else 1 (Docker reserves 2).
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", defaultHealthTimeout, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprint(stderr, healthcheckUsage)
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

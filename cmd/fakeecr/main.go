// Command fakeecr runs the repository's fake ECR (internal/fakeecr) for
// humans: a registry with its token API on one port and the S3 that blob
// downloads redirect to on another, seeded with an OCI image layout.
//
//	go run ./cmd/fakeecr [-addr 127.0.0.1:0] [-s3-addr 127.0.0.1:0]
//	    [-layout testdata/sample-image -repo sample/hello -tag latest]
//
// Both listen on free loopback ports unless told otherwise, so any number
// of fakes run side by side. It prints the environment a mirror needs to
// use it, with the chosen URLs (as shell lines on stdout), and a pull
// command to try, then serves until SIGINT or SIGTERM. The layout's bytes
// are served as they are, so every run serves the same digests: a mirror's
// cache from an earlier run stays valid.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// config is the command's whole configuration.
type config struct {
	Addr       string        // -addr; default "127.0.0.1:0" (a free port)
	S3Addr     string        // -s3-addr; default "127.0.0.1:0" (a free port)
	Layout     string        // -layout; default "testdata/sample-image"; "" for an empty registry
	Repo       string        // -repo; default "sample/hello"
	Tag        string        // -tag; default "latest"
	MirrorAddr string        // -mirror; default "127.0.0.1:5000"; only used in the printed pull command
	TokenTTL   time.Duration // -token-ttl; default 12h
	Verbose    bool          // -v; default false
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakeecr: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr, nil); err != nil {
		fmt.Fprintf(os.Stderr, "fakeecr: %v\n", err)
		os.Exit(1)
	}
}

// parseFlags parses and checks the command line.
func parseFlags(args []string, out io.Writer) (*config, error) {
	fs := flag.NewFlagSet("fakeecr", flag.ContinueOnError)
	fs.SetOutput(out)
	cfg := &config{}
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "listen address of the registry and the ECR token API (port 0: a free one)")
	fs.StringVar(&cfg.S3Addr, "s3-addr", "127.0.0.1:0", "listen address of the fake S3 that blob GETs redirect to (port 0: a free one)")
	fs.StringVar(&cfg.Layout, "layout", "testdata/sample-image", `OCI image layout directory to serve ("" for none)`)
	fs.StringVar(&cfg.Repo, "repo", "sample/hello", "repository to load the layout into")
	fs.StringVar(&cfg.Tag, "tag", "latest", "tag for the layout's image")
	fs.StringVar(&cfg.MirrorAddr, "mirror", "127.0.0.1:5000", "address of the mirror, for the printed pull command only")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", 12*time.Hour, "lifetime of the tokens the token API issues")
	fs.BoolVar(&cfg.Verbose, "v", false, "log every request to stderr")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: fakeecr [flags]\n\nRuns a fake AWS ECR (token API, registry, S3) seeded with an OCI image layout.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: fakeecr takes only flags", fs.Args())
	}

	var errs []error
	for _, a := range []struct{ flag, value string }{{"-addr", cfg.Addr}, {"-s3-addr", cfg.S3Addr}, {"-mirror", cfg.MirrorAddr}} {
		if err := checkAddr(a.value); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.flag, a.value, err))
		}
	}
	if cfg.Addr == cfg.S3Addr && cfg.Addr != "" {
		if _, port, _ := net.SplitHostPort(cfg.Addr); port != "0" {
			errs = append(errs, fmt.Errorf("-addr and -s3-addr are both %q: the registry and S3 need their own ports", cfg.Addr))
		}
	}
	if cfg.TokenTTL <= 0 {
		errs = append(errs, fmt.Errorf("-token-ttl %v: must be positive", cfg.TokenTTL))
	}
	if cfg.Layout != "" {
		if st, err := os.Stat(cfg.Layout); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("-layout %q is not a directory (run from the repository root, or pass -layout)", cfg.Layout))
		}
		if !fakeecr.ValidRepository(cfg.Repo) {
			errs = append(errs, fmt.Errorf("-repo %q is not a repository name: lower-case letters, digits and . _ - separators, in /-separated parts", cfg.Repo))
		}
		if !fakeecr.ValidTag(cfg.Tag) {
			errs = append(errs, fmt.Errorf("-tag %q is not a tag: up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -", cfg.Tag))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// checkAddr checks a host:port listen address.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("needs a host, e.g. 127.0.0.1")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not 0-65535", port)
	}
	return nil
}

// run starts the fake, prints how to use it, calls ready (when not nil) and
// serves until ctx ends. stdout gets only shell lines (comments and exports);
// stderr gets the logs.
func run(ctx context.Context, cfg *config, stdout, stderr io.Writer, ready func(*fakeecr.Server)) error {
	level := slog.LevelInfo
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	f, err := fakeecr.New(fakeecr.Options{
		RegistryAddr: cfg.Addr,
		S3Addr:       cfg.S3Addr,
		TokenTTL:     cfg.TokenTTL,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	defer f.Close()

	image := ""
	if cfg.Layout != "" {
		if err := f.LoadOCILayout(cfg.Layout, cfg.Repo, cfg.Tag); err != nil {
			return err
		}
		dgst, _ := f.ResolveTag(cfg.Repo, cfg.Tag)
		image = cfg.Repo + ":" + cfg.Tag
		log.Info("loaded image", "layout", cfg.Layout, "image", image, "digest", dgst.String())
	}
	log.Info("fake ECR serving", "registry", f.URL(), "token_api", f.TokenURL(), "s3", f.S3URL())

	fmt.Fprintf(stdout, "# Fake ECR: registry and token API at %s, S3 at %s.\n", f.URL(), f.S3URL())
	fmt.Fprintf(stdout, "# Environment for the mirror (any access key works):\n")
	for _, kv := range [][2]string{
		{"UPSTREAM", f.URL()},
		{"AWS_ENDPOINT_URL_ECR", f.TokenURL()},
		{"AWS_REGION", "us-east-1"},
		{"AWS_ACCESS_KEY_ID", "fake"},
		{"AWS_SECRET_ACCESS_KEY", "fake"},
	} {
		fmt.Fprintf(stdout, "export %s=%s\n", kv[0], kv[1])
	}
	if image != "" {
		fmt.Fprintf(stdout, "# Then start the mirror (go run ./cmd/ecr-mirror) and pull through it, e.g.:\n")
		fmt.Fprintf(stdout, "#   crane pull --insecure %s/%s hello.tar\n", cfg.MirrorAddr, image)
		fmt.Fprintf(stdout, "#   skopeo copy --src-tls-verify=false docker://%s/%s oci:hello\n", cfg.MirrorAddr, image)
	}
	fmt.Fprintf(stdout, "# Ctrl-C stops the fake.\n")

	if ready != nil {
		ready(f)
	}
	<-ctx.Done()
	log.Info("fake ECR stopping")
	return nil
}

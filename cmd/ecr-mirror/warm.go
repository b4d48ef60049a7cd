package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
	"github.com/ecr-mirror/ecr-mirror/internal/progress"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// runWarm is "ecr-mirror warm".
func runWarm(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runWarmWith(ctx, args, os.Stdin, stdout, stderr)
}

// runWarmWith is "ecr-mirror warm" reading --password-stdin from stdin.
func runWarmWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("warm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage("warm")); fs.PrintDefaults() }
	var pf pullFlags
	pf.register(fs)
	quiet := fs.Bool("quiet", false, "no progress; only failures and the summary")
	refs, code, ok := pf.parse(fs, args, "warm", stderr)
	if !ok {
		return code
	}
	c, code := pf.client(ctx, "warm", stdin, stderr)
	if c == nil {
		return code
	}
	prog := progress.New(ctx, stderr, progress.Choose(stderr, *quiet), "warm")
	failed := c.WarmAll(ctx, refs, func(name string) imageclient.Task { return prog.Task(name, 0) })
	prog.Wait()
	if len(failed) > 0 {
		fmt.Fprintf(stderr, "ecr-mirror warm: %d of %d images failed: %s\n", len(failed), len(refs), strings.Join(failed, " "))
		return exitFail
	}
	return exitOK
}

// pullFlags are the flags of the commands that read images through a
// running mirror.
type pullFlags struct {
	mirror, platform, namespace string
	allPlatforms                bool
	concurrency                 int
	insecure                    bool
	files                       []string
	withReferrers               bool
	referrerType                string
	loginFlags
}

func (pf *pullFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&pf.mirror, "mirror", "http://localhost:5000", "URL of the running mirror")
	fs.IntVar(&pf.concurrency, "concurrency", 4, "blobs fetched at once")
	fs.BoolVar(&pf.insecure, "insecure", false, "do not verify the mirror's TLS certificate")
	fs.StringVar(&pf.platform, "platform", "", "only these platforms of an index, os/arch[/variant][,...] (default: all)")
	fs.BoolVar(&pf.allPlatforms, "all-platforms", false, "every platform of an index (the default; exclusive with --platform)")
	fs.BoolVar(&pf.withReferrers, "with-referrers", false, "each image's referrers too (signatures, SBOMs, attestations, and theirs)")
	fs.StringVar(&pf.namespace, "namespace", "", "the upstream registry to read from, a host the mirror's UPSTREAM or PULL_THROUGHS names (sent as ns=, as containerd does; default: the mirror's default)")
	fs.StringVar(&pf.referrerType, "referrers-type", "", "with --with-referrers, only the image's referrers of this artifactType (theirs come whatever their type)")
	pf.loginFlags.register(fs)
	fs.Func("f", "file of images, one per line (# starts a comment); repeatable", func(v string) error {
		pf.files = append(pf.files, v)
		return nil
	})
}

// parse parses args and returns the images they and the -f files name.
func (pf *pullFlags) parse(fs *flag.FlagSet, args []string, cmd string, stderr io.Writer) ([]registry.Reference, int, bool) {
	images, code, ok := parseFlags(fs, args)
	if !ok {
		return nil, code, false
	}
	fail := func(err error) ([]registry.Reference, int, bool) {
		fmt.Fprintf(stderr, "ecr-mirror %s: %v\n", cmd, err)
		return nil, exitUsage, false
	}
	if pf.allPlatforms && pf.platform != "" {
		return fail(errors.New("--platform and --all-platforms exclude each other"))
	}
	if pf.referrerType != "" && !pf.withReferrers {
		return fail(errors.New("--referrers-type needs --with-referrers"))
	}
	refs, err := imageclient.ParseImages(images, pf.files)
	if err != nil {
		return fail(err)
	}
	if len(refs) == 0 {
		fmt.Fprintf(stderr, "ecr-mirror %s: no image given\n\n", cmd)
		fs.Usage()
		return nil, exitUsage, false
	}
	return refs, 0, true
}

// client is a client of the mirror, logged in when it asks for a login;
// nil with the exit status when there is none to be had (the line saying
// why is printed).
func (pf *pullFlags) client(ctx context.Context, cmd string, stdin io.Reader, stderr io.Writer) (*imageclient.Client, int) {
	ml, err := pf.login(pf.mirror, stdin, stderr, cmd)
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror %s: %v\n", cmd, err)
		return nil, exitUsage
	}
	c, err := imageclient.Dial(ml.URL, pf.insecure, imageclient.Options{Concurrency: pf.concurrency, Platforms: settings.SplitList(pf.platform),
		WithReferrers: pf.withReferrers, ReferrerType: pf.referrerType, Namespace: pf.namespace, Login: ml.Login, Keychain: authn.DefaultKeychain})
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror %s: --mirror/--concurrency: %v\n", cmd, err)
		return nil, exitUsage
	}
	if err := c.Ping(ctx); err != nil {
		fmt.Fprintf(stderr, "ecr-mirror %s: %s\n", cmd, imageclient.LoginHint(err, ml.URL, c.Host()))
		return nil, exitFail
	}
	return c, exitOK
}

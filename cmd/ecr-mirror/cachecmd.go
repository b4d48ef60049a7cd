package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/internal/progress"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
)

// cacheSub is a subcommand of "ecr-mirror cache".
type cacheSub struct {
	usage string
	// flags registers the subcommand's own flags and returns its work.
	flags func(fs *flag.FlagSet) cacheWork
	// args is how many positional arguments it takes (-1: any).
	args int
	// create makes a new store when the directory has none (import).
	create bool
}

// cacheWork is what a cache command does once its flags are parsed.
type cacheWork struct {
	// check, when set, checks the arguments before the cache is opened.
	check func(pos []string) error
	// run does the work on c with the positional arguments.
	run func(ctx context.Context, c admin.Cache, pos []string, o cmdOutput) int
	// readOnly, when set and true once the flags are parsed, says the
	// command only looks: a stopped mirror's store is opened read-only,
	// so nothing in it changes (no eviction, no cleanup).
	readOnly func() bool
}

// cmdOutput is where a command writes: results on stdout, progress and
// messages on stderr.
type cmdOutput struct {
	stdout, stderr io.Writer
	name           string // "cache ls", for messages
	json, quiet    bool
}

func (o cmdOutput) failf(format string, args ...any) int {
	fmt.Fprintf(o.stderr, "ecr-mirror %s: %s\n", o.name, fmt.Sprintf(format, args...))
	return exitFail
}

func cacheSubs() map[string]cacheSub {
	return map[string]cacheSub{
		"ls":     {usage: usage("cache-ls"), flags: lsFlags},
		"verify": {usage: usage("cache-verify"), flags: verifyFlags},
		"pin":    {usage: usage("cache-pin"), flags: pinFlags(true), args: 1},
		"unpin":  {usage: usage("cache-unpin"), flags: pinFlags(false), args: 1},
		"purge":  {usage: usage("cache-purge"), flags: purgeFlags, args: -1},
	}
}

// runCache is "ecr-mirror cache".
func runCache(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage("cache"))
		return exitUsage
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, usage("cache"))
		return exitOK
	}
	sub, ok := cacheSubs()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ecr-mirror cache: unknown subcommand %q\n\n%s", args[0], usage("cache"))
		return exitUsage
	}
	return runOnCache(ctx, "cache "+args[0], sub, args[1:], getenv, stdout, stderr)
}

// runOnCache parses a command's flags, reaches the cache (running or
// stopped) and runs the command on it.
func runOnCache(ctx context.Context, name string, sub cacheSub, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, sub.usage); fs.PrintDefaults() }
	var sf storeFlags
	sf.register(fs, getenv)
	o := cmdOutput{stdout: stdout, stderr: stderr, name: name}
	fs.BoolVar(&o.json, "json", false, "print the result as JSON on stdout")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress")
	work := sub.flags(fs)
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if sub.args >= 0 && len(pos) != sub.args {
		fmt.Fprintf(stderr, "ecr-mirror %s: want %d arguments, got %d %q\n\n", name, sub.args, len(pos), pos)
		fs.Usage()
		return exitUsage
	}
	if work.check != nil {
		if err := work.check(pos); err != nil {
			fmt.Fprintf(stderr, "ecr-mirror %s: %v\n", name, err)
			return exitUsage
		}
	}
	sf.readOnly = work.readOnly != nil && work.readOnly()
	c, closeCache, err := admin.Open(ctx, sf.dir, func() (admin.StoreOptions, error) { return sf.storeOptions(stderr, sub.create) })
	if err != nil {
		return o.failf("%v", err)
	}
	defer closeCache()
	return work.run(ctx, c, pos, o)
}

// storeFlags are the flags that locate the store.
type storeFlags struct {
	dir, maxSize string
	// upstream is the mirror's UPSTREAM, when set: imports into a
	// stopped mirror link their images to its repositories.
	upstream string
	// readOnly opens a stopped mirror's store read-only: the command
	// only looks, so nothing in it changes (no eviction, no cleanup).
	readOnly bool
}

func (sf *storeFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&sf.dir, "cache-dir", envOr(getenv, "CACHE_DIR"), "the mirror's cache directory [$CACHE_DIR]")
	fs.StringVar(&sf.maxSize, "cache-max-size", envOr(getenv, "CACHE_MAX_SIZE"), "the mirror's cache budget, for a stopped mirror [$CACHE_MAX_SIZE]")
	fs.StringVar(&sf.upstream, "upstream", strings.TrimSpace(getenv("UPSTREAM")), "the mirror's upstream registry, for a stopped mirror; imported images belong to it (default: the mirror's main upstream, whatever it is) [$UPSTREAM]")
}

func envOr(getenv func(string) string, env string) string {
	if v := strings.TrimSpace(getenv(env)); v != "" {
		return v
	}
	return settings.FileOrDefault(getenv, env)
}

// storeOptions are the options of a stopped mirror's store; the error is
// ready to print.
func (sf *storeFlags) storeOptions(stderr io.Writer, create bool) (admin.StoreOptions, error) {
	opts := admin.StoreOptions{Dir: sf.dir, ReadOnly: sf.readOnly, Create: create, Log: stderr}
	if sf.upstream != "" {
		ups, err := settings.ParseUpstreams(sf.upstream)
		if err != nil {
			return opts, fmt.Errorf("-upstream/UPSTREAM: %w", err)
		}
		opts.Registry = ups[0].Host // the main upstream: imports belong to it
	}
	var err error
	if opts.MaxSize, err = settings.ParseSize(sf.maxSize); err != nil {
		return opts, fmt.Errorf("--cache-max-size (CACHE_MAX_SIZE): %v", err)
	}
	return opts, nil
}

func lsFlags(fs *flag.FlagSet) cacheWork {
	return cacheWork{readOnly: func() bool { return true }, run: func(ctx context.Context, c admin.Cache, _ []string, o cmdOutput) int {
		l, err := c.List(ctx)
		if err != nil {
			return o.failf("%v", err)
		}
		if o.json {
			return printJSON(o.stdout, o.stderr, o.name, l)
		}
		tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		if len(l.Tags) > 0 {
			fmt.Fprintln(tw, "REGISTRY\tREPOSITORY\tTAG\tDIGEST\tCHECKED\tSTORED")
			for _, t := range l.Tags {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", cmp.Or(t.Registry, "(main upstream)"), t.Repository, t.Tag, t.Digest, t.Checked.Format(time.RFC3339), t.Stored)
			}
			fmt.Fprintln(tw)
		}
		if len(l.Referrers) > 0 {
			fmt.Fprintln(tw, "REFERRERS OF\tREPOSITORY\tARTIFACT TYPE\tLISTED\tCHECKED")
			for _, r := range l.Referrers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", r.Subject, r.Repository, cmp.Or(r.ArtifactType, "(any)"), r.Manifests, r.Checked.Format(time.RFC3339))
			}
			fmt.Fprintln(tw)
		}
		if len(l.Pins) > 0 {
			fmt.Fprintln(tw, "PINNED\tNAMES\tSIZE\tSINCE")
			for _, p := range l.Pins {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Digest, strings.Join(p.Names, ","), progress.HumanBytes(p.Bytes), p.Pinned.Format(time.RFC3339))
			}
			fmt.Fprintln(tw)
		}
		fmt.Fprintln(tw, "DIGEST\tKIND\tSIZE\tLAST ACCESS\tPINNED\tMEDIA TYPE")
		for _, e := range l.Entries {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%v\t%s\n", e.Digest, e.Kind, e.Size, e.LastAccess.Format(time.RFC3339), e.Pinned, e.MediaType)
		}
		tw.Flush()
		t := l.Totals
		fmt.Fprintf(o.stdout, "%d entries (%d manifests, %d blobs), %s (%d bytes) of %s (%.1f%%); %d pins, %s pinned\n",
			t.Entries, t.Manifests, t.Blobs, progress.HumanBytes(t.Bytes), t.Bytes, progress.HumanBytes(t.MaxBytes),
			100*float64(t.Bytes)/float64(max(t.MaxBytes, 1)), len(l.Pins), progress.HumanBytes(t.PinnedBytes))
		return exitOK
	}}
}

func verifyFlags(fs *flag.FlagSet) cacheWork {
	repair := fs.Bool("repair", false, "remove the bad entries")
	return cacheWork{readOnly: func() bool { return !*repair }, run: func(ctx context.Context, c admin.Cache, _ []string, o cmdOutput) int {
		prog := progress.New(ctx, o.stderr, progress.Choose(o.stderr, o.quiet || o.json), o.name)
		rehash := prog.Counter("rehashing the cache")
		rep, err := c.Verify(ctx, *repair, rehash.Report)
		rehash.Finish(err)
		prog.Wait()
		if err != nil {
			return o.failf("%v", err)
		}
		if o.json {
			if code := printJSON(o.stdout, o.stderr, o.name, rep); code != exitOK {
				return code
			}
		} else {
			for _, b := range rep.Bad {
				fmt.Fprintf(o.stdout, "bad %s: %s\n", b.Digest, b.Error)
			}
			for _, d := range rep.Removed {
				fmt.Fprintf(o.stdout, "removed %s\n", d)
			}
			fmt.Fprintf(o.stderr, "verified %d entries, %s in %s: %d bad", rep.Entries, progress.HumanBytes(rep.Bytes), rep.Duration.Round(time.Millisecond), len(rep.Bad))
			if *repair {
				fmt.Fprintf(o.stderr, ", %d removed", len(rep.Removed))
			}
			fmt.Fprintln(o.stderr)
		}
		if len(rep.Bad) > 0 {
			return exitFail
		}
		return exitOK
	}}
}

func pinFlags(pin bool) func(*flag.FlagSet) cacheWork {
	return func(fs *flag.FlagSet) cacheWork {
		var opts admin.PinOptions
		if pin {
			fs.BoolVar(&opts.Referrers, "with-referrers", false, "pin the image's referrers (signatures, SBOMs) too; a running mirror only")
		}
		return cacheWork{run: func(ctx context.Context, c admin.Cache, pos []string, o cmdOutput) int {
			op, verb := c.Unpin, "unpinned"
			if pin {
				op, verb = func(ctx context.Context, image string) (*admin.PinReport, error) { return c.Pin(ctx, image, opts) }, "pinned"
			}
			rep, err := op(ctx, pos[0])
			if err != nil {
				return o.failf("%v", err)
			}
			if o.json {
				return printJSON(o.stdout, o.stderr, o.name, rep)
			}
			fmt.Fprintf(o.stdout, "%s %s (%s, %s)", verb, rep.Image, rep.Digest, progress.HumanBytes(rep.Bytes))
			if len(rep.Referrers) > 0 {
				fmt.Fprintf(o.stdout, " and %d referrers", len(rep.Referrers))
			}
			fmt.Fprintln(o.stdout)
			return exitOK
		}}
	}
}

func purgeFlags(fs *flag.FlagSet) cacheWork {
	var age time.Duration
	fs.Func("older-than", "remove the images not used for this long (30d, 12h, 90m)", func(v string) error {
		d, err := settings.ParseAge(v)
		age = d
		return err
	})
	all := fs.Bool("all", false, "remove every image that is not pinned")
	check := func(pos []string) error {
		if len(pos) > 1 {
			return fmt.Errorf("one image or digest at a time, got %q", pos)
		}
		if n := len(pos) + btoi(age > 0) + btoi(*all); n != 1 {
			return errors.New("give exactly one of IMAGE, DIGEST, --older-than or --all")
		}
		return nil
	}
	return cacheWork{check: check, run: func(ctx context.Context, c admin.Cache, pos []string, o cmdOutput) int {
		req := admin.PurgeRequest{OlderThan: age, All: *all}
		if len(pos) == 1 {
			req.Image = pos[0]
		}
		rep, err := c.Purge(ctx, req)
		if err != nil {
			return o.failf("%v", err)
		}
		if o.json {
			return printJSON(o.stdout, o.stderr, o.name, rep)
		}
		if !o.quiet {
			for _, e := range rep.Removed {
				fmt.Fprintf(o.stdout, "removed %s (%s, %s)\n", e.Digest, e.Kind, progress.HumanBytes(e.Size))
			}
		}
		fmt.Fprintf(o.stdout, "purged %d entries, %s; %d tag records and %d referrers records forgotten; %d pinned images kept\n",
			len(rep.Removed), progress.HumanBytes(rep.Bytes), rep.TagsForgotten, rep.ReferrersForgotten, rep.PinnedKept)
		return exitOK
	}}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runImport is "ecr-mirror import".
func runImport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runOnCache(ctx, "import", cacheSub{usage: usage("import"), flags: importFlags, args: 1, create: true}, args, getenv, stdout, stderr)
}

func importFlags(fs *flag.FlagSet) cacheWork {
	return cacheWork{run: func(ctx context.Context, c admin.Cache, pos []string, o cmdOutput) int {
		f, err := os.Open(pos[0])
		if err != nil {
			return o.failf("%v", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return o.failf("%v", err)
		}
		prog := progress.New(ctx, o.stderr, progress.Choose(o.stderr, o.quiet || o.json), o.name)
		t := prog.Task(filepath.Base(pos[0]), fi.Size())
		rep, err := c.Import(ctx, t.Reader(f))
		t.Finish(err, "")
		prog.Wait()
		if err != nil {
			return o.failf("%s: %v", pos[0], err)
		}
		if o.json {
			return printJSON(o.stdout, o.stderr, o.name, rep)
		}
		for _, img := range rep.Images {
			name := img.Name
			if name == "" {
				name = "(unnamed: served by digest only)"
			}
			fmt.Fprintf(o.stdout, "imported %s %s\n", name, img.Digest)
		}
		fmt.Fprintf(o.stdout, "%d images, %d blobs (%d new), %s", len(rep.Images), rep.Blobs, rep.New, progress.HumanBytes(rep.Bytes))
		if rep.Referrers > 0 {
			fmt.Fprintf(o.stdout, "; %d referrers linked with their images", rep.Referrers)
		}
		fmt.Fprintln(o.stdout)
		return exitOK
	}}
}

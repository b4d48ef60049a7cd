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

const cacheUsage = `Usage: ecr-mirror cache SUBCOMMAND [flags]

Works on the mirror's CACHE_DIR both ways: on a running mirror through its
admin socket (CACHE_DIR/admin.sock, reachable by the mirror's user only), and
directly on a stopped mirror's CACHE_DIR.

Subcommands:
  ls       list repositories and tags, manifests, blobs and pins, with totals
  verify   rehash every stored entry; --repair removes the bad ones
  pin      keep an image whole in the cache, never evicted
  unpin    let a pinned image be evicted again
  purge    remove an image, a digest, what was not used for a while, or all

Run "ecr-mirror cache SUBCOMMAND --help" for its flags and an example.
`

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
		"ls":     {usage: cacheLsUsage, flags: lsFlags},
		"verify": {usage: cacheVerifyUsage, flags: verifyFlags},
		"pin":    {usage: cachePinUsage, flags: pinFlags(true), args: 1},
		"unpin":  {usage: cacheUnpinUsage, flags: pinFlags(false), args: 1},
		"purge":  {usage: cachePurgeUsage, flags: purgeFlags, args: -1},
	}
}

// runCache is "ecr-mirror cache".
func runCache(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, cacheUsage)
		return exitUsage
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, cacheUsage)
		return exitOK
	}
	sub, ok := cacheSubs()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ecr-mirror cache: unknown subcommand %q\n\n%s", args[0], cacheUsage)
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

const cacheLsUsage = `Usage: ecr-mirror cache ls [--cache-dir DIR] [--json]

Lists the repositories and tags the mirror has seen, with their upstream
registry (the manifest each names, and when the upstream or an import last
said so), the referrers lists recorded (subject, repository, filter, how many
referrers), the pinned images, and every stored
manifest and blob (kind, size, last access, pinned), then the totals against
CACHE_MAX_SIZE. On a stopped mirror the cache is opened read-only: nothing in
it changes, whatever --cache-max-size says (only the mirror's start evicts
down to its budget and drops leftovers of a crash).

Example:
  ecr-mirror cache ls --json | jq '.totals'

Flags:
`

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

const cacheVerifyUsage = `Usage: ecr-mirror cache verify [--cache-dir DIR] [--repair] [--json] [--quiet]

Rehashes every stored entry and prints each bad digest; exits non-zero if any
is bad. Without --repair nothing in the cache changes (a stopped mirror's
cache is opened read-only). With --repair the bad entries are removed (the
mirror fetches them again when asked); the exit status is still non-zero.

Example:
  ecr-mirror cache verify --cache-dir /var/lib/ecr-mirror --repair

Flags:
`

func verifyFlags(fs *flag.FlagSet) cacheWork {
	repair := fs.Bool("repair", false, "remove the bad entries")
	return cacheWork{readOnly: func() bool { return !*repair }, run: func(ctx context.Context, c admin.Cache, _ []string, o cmdOutput) int {
		prog := progress.New(ctx, o.stderr, progress.Choose(o.stderr, o.quiet || o.json), o.name)
		var t *progress.Task
		var last int64
		rep, err := c.Verify(ctx, *repair, func(done, total int64) {
			if t == nil {
				t = prog.Task("rehashing the cache", total)
			}
			t.Add(done - last)
			last = done
		})
		if t != nil {
			t.Finish(err, "")
		}
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

const cachePinUsage = `Usage: ecr-mirror cache pin [--cache-dir DIR] [--json] [--with-referrers] IMAGE

Pins IMAGE (repo:tag or repo@sha256:<hex>): the image, an index with every
platform's manifest and every blob, stays in the cache and is never evicted.
A running mirror first pulls what the cache lacks (revalidating the tag); on a
stopped mirror the image must already be whole and a tag is resolved from the
cache's records. Pinned bytes count against CACHE_MAX_SIZE: a pin that cannot
fit is refused. Pins survive restarts.

--with-referrers (a running mirror only) also pulls the image's referrers
(signatures, SBOMs, attestations, and theirs) and pins each under the name
"referrer of IMAGE"; unpinning IMAGE unpins them.

pin talks to the mirror through its admin socket (or opens a stopped
mirror's CACHE_DIR), never through its registry API: it needs no login, even
with HTPASSWD_FILE; being allowed to use CACHE_DIR is the permission.

Example:
  ecr-mirror cache pin team/base:2026.11
  ecr-mirror cache pin --with-referrers team/app:v1.4

Flags:
`

const cacheUnpinUsage = `Usage: ecr-mirror cache unpin [--cache-dir DIR] [--json] IMAGE

Unpins IMAGE (the name it was pinned by, or repo@sha256:<hex>): it is evicted
again like any other image when room is needed.

Example:
  ecr-mirror cache unpin team/base:2026.11

Flags:
`

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

const cachePurgeUsage = `Usage: ecr-mirror cache purge [--cache-dir DIR] [--json] IMAGE | DIGEST | --older-than AGE | --all

Removes content from the cache, safely while the mirror serves: a client
already reading a removed file reads it whole. IMAGE (repo:tag, resolved from
the cache's records, or repo@sha256:<hex>) or DIGEST (sha256:<hex>) removes
that image and the content no other stored image shares; --older-than AGE
(e.g. 30d, 12h) removes every image not used for that long; --all removes every
image. Pinned images are never purged (unpin them first). Tag records whose
manifest is gone are forgotten.

Example:
  ecr-mirror cache purge --older-than 30d
  ecr-mirror cache purge team/app:v1.3

Flags:
`

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

const importUsage = `Usage: ecr-mirror import [--cache-dir DIR] [--json] [--quiet] FILE.tar

Verifies every manifest and blob of an OCI image-layout archive (from
"ecr-mirror export", "skopeo copy ... oci-archive:FILE.tar" or "docker save")
against its digest and admits them to the cache, on a running mirror (through
its admin socket) or a stopped one. Each image named repo:tag in the archive
(io.containerd.image.name, else org.opencontainers.image.ref.name) gets a tag
record dated now, so that a mirror with STALE_IF_ERROR serves it by tag while
ECR cannot be reached; by digest it is served in any case. An image's
referrers in the archive (signatures, SBOMs: "export --with-referrers") are
served by digest under its repository too, and its referrers lists are
recorded as if ECR had just answered them. A tampered or incomplete archive is
refused, naming the bad digest, and admits nothing.

Example:
  ecr-mirror export -o site-b.tar team/app:v1.4     # where ECR is reachable
  ecr-mirror import --cache-dir /var/lib/ecr-mirror site-b.tar   # at the site

Flags:
`

// runImport is "ecr-mirror import".
func runImport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runOnCache(ctx, "import", cacheSub{usage: importUsage, flags: importFlags, args: 1, create: true}, args, getenv, stdout, stderr)
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

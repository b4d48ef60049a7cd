package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

const cacheUsage = `Usage: ecr-mirror cache SUBCOMMAND [flags]

Works directly on a stopped mirror's CACHE_DIR (the running mirror locks it).

Subcommands:
  ls       list stored entries and totals against CACHE_MAX_SIZE
  verify   rehash every stored entry; --repair removes the bad ones

Run "ecr-mirror cache SUBCOMMAND --help" for its flags and an example.
`

const cacheLsUsage = `Usage: ecr-mirror cache ls [--cache-dir DIR] [--cache-max-size SIZE] [--json]

Lists every entry of a stopped mirror's cache (digest, size, media type,
last access), then the totals against the budget. Opening the cache does what
the server's start does: it drops leftovers of a crash and evicts down to the
budget, so give the budget the server uses.

Example:
  CACHE_DIR=/var/lib/ecr-mirror ecr-mirror cache ls --json | jq '.entries | length'

Flags:
`

const cacheVerifyUsage = `Usage: ecr-mirror cache verify [--cache-dir DIR] [--cache-max-size SIZE] [--repair]

Rehashes every entry of a stopped mirror's cache and prints each bad digest;
exits non-zero if any is bad. With --repair the bad entries are removed (the
mirror fetches them again when asked); the exit status is still non-zero.

Example:
  ecr-mirror cache verify --cache-dir /var/lib/ecr-mirror --repair

Flags:
`

// runCache is "ecr-mirror cache".
func runCache(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) {
		w := stdout
		if len(args) == 0 {
			w = stderr
		}
		fmt.Fprint(w, cacheUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "ls":
		return runCacheLs(args[1:], getenv, stdout, stderr)
	case "verify":
		return runCacheVerify(ctx, args[1:], getenv, stdout, stderr)
	}
	fmt.Fprintf(stderr, "ecr-mirror cache: unknown subcommand %q\n\n%s", args[0], cacheUsage)
	return exitUsage
}

// storeFlags are the flags that locate the store.
type storeFlags struct {
	dir, maxSize string
}

func (sf *storeFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&sf.dir, "cache-dir", envOr(getenv, "CACHE_DIR"), "the mirror's cache directory [$CACHE_DIR]")
	fs.StringVar(&sf.maxSize, "cache-max-size", envOr(getenv, "CACHE_MAX_SIZE"), "the mirror's cache budget [$CACHE_MAX_SIZE]")
}

func envOr(getenv func(string) string, env string) string {
	if v := strings.TrimSpace(getenv(env)); v != "" {
		return v
	}
	return defaultSetting(env)
}

// openEntries parses a cache command's flags (which take no arguments),
// opens the stopped mirror's store and lists its entries. On failure it
// has printed why and returns the exit code; the caller closes s.
func openEntries(fs *flag.FlagSet, sf *storeFlags, args []string, stderr io.Writer) (s *cache.Store, infos []cache.Info, code int, ok bool) {
	name := "ecr-mirror " + fs.Name()
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return nil, nil, code, false
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, pos)
		return nil, nil, exitUsage, false
	}
	s, err := sf.open(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, nil, exitFail, false
	}
	if infos, err = s.Entries(); err != nil {
		s.Close()
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, nil, exitFail, false
	}
	return s, infos, 0, true
}

// open opens the store of a stopped mirror; the error is ready to print.
func (sf *storeFlags) open(stderr io.Writer) (*cache.Store, error) {
	maxSize, err := parseSize(sf.maxSize)
	if err != nil {
		return nil, fmt.Errorf("--cache-max-size: %v", err)
	}
	// Open would create a store anywhere: insist on an existing one.
	if fi, err := os.Stat(filepath.Join(sf.dir, "index")); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a cache directory: it has no index/ (set --cache-dir or CACHE_DIR)", sf.dir)
	}
	running := func() error {
		return fmt.Errorf("%s is locked: the mirror is running: stop it, or use the admin socket (not yet implemented)", sf.dir)
	}
	if err := cache.CheckUnlocked(sf.dir); errors.Is(err, cache.ErrLocked) {
		return nil, running()
	} else if err != nil {
		return nil, err
	}
	s, err := cache.Open(cache.Options{Dir: sf.dir, MaxSize: maxSize,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		if errors.Is(cache.CheckUnlocked(sf.dir), cache.ErrLocked) {
			return nil, running() // started in between
		}
		return nil, err
	}
	return s, nil
}

// lsEntry is one entry of "cache ls --json".
type lsEntry struct {
	Digest     string    `json:"digest"`
	Size       int64     `json:"size"`
	MediaType  string    `json:"mediaType"`
	LastAccess time.Time `json:"lastAccess"`
}

// lsOutput is "cache ls --json".
type lsOutput struct {
	Entries    []lsEntry `json:"entries"`
	TotalBytes int64     `json:"totalBytes"`
	MaxBytes   int64     `json:"maxBytes"`
}

func runCacheLs(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cache ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, cacheLsUsage); fs.PrintDefaults() }
	var sf storeFlags
	sf.register(fs, getenv)
	asJSON := fs.Bool("json", false, "print JSON")
	s, infos, code, ok := openEntries(fs, &sf, args, stderr)
	if !ok {
		return code
	}
	defer s.Close()
	out := lsOutput{Entries: []lsEntry{}, MaxBytes: s.MaxSize()}
	for _, in := range infos {
		out.Entries = append(out.Entries, lsEntry{Digest: in.Digest.String(), Size: in.Size, MediaType: in.MediaType, LastAccess: in.LastAccess.UTC()})
		out.TotalBytes += in.Size
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "ecr-mirror cache ls: %v\n", err)
			return exitFail
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tSIZE\tMEDIA TYPE\tLAST ACCESS")
	for _, e := range out.Entries {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", e.Digest, e.Size, e.MediaType, e.LastAccess.Format(time.RFC3339))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d entries, %s (%d bytes) of %s (%.1f%%)\n", len(out.Entries), humanBytes(out.TotalBytes), out.TotalBytes,
		humanBytes(out.MaxBytes), 100*float64(out.TotalBytes)/float64(out.MaxBytes))
	return exitOK
}

func runCacheVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cache verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, cacheVerifyUsage); fs.PrintDefaults() }
	var sf storeFlags
	sf.register(fs, getenv)
	repair := fs.Bool("repair", false, "remove the bad entries")
	s, infos, code, ok := openEntries(fs, &sf, args, stderr)
	if !ok {
		return code
	}
	defer s.Close()
	start := time.Now()
	var bytes int64
	bad, removed := 0, 0
	for _, in := range infos {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "ecr-mirror cache verify: interrupted\n")
			return exitFail
		}
		err := s.Verify(in.Digest)
		if errors.Is(err, cache.ErrNotFound) {
			continue // gone meanwhile
		}
		bytes += in.Size
		if err == nil {
			continue
		}
		bad++
		fmt.Fprintf(stdout, "bad %s: %v\n", in.Digest, err)
		if *repair {
			if err := s.Delete(in.Digest); err != nil && !errors.Is(err, cache.ErrNotFound) {
				fmt.Fprintf(stderr, "ecr-mirror cache verify: removing %s: %v\n", in.Digest, err)
				continue
			}
			removed++
			fmt.Fprintf(stdout, "removed %s\n", in.Digest)
		}
	}
	fmt.Fprintf(stderr, "verified %d entries, %s in %s: %d bad", len(infos), humanBytes(bytes), time.Since(start).Round(time.Millisecond), bad)
	if *repair {
		fmt.Fprintf(stderr, ", %d removed", removed)
	}
	fmt.Fprintln(stderr)
	if bad > 0 {
		return exitFail
	}
	return exitOK
}

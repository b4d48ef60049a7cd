package settings

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"time"
)

// Reload reads the configuration again as Parse read c, with the same
// flags and variables: what changes is the config file.
func (c *Config) Reload() (*Config, error) {
	if c.source == nil {
		return nil, errors.New("configuration was not read by Parse")
	}
	return Parse(c.source.args, c.source.getenv, io.Discard)
}

// Changed names the settings (by variable) whose values differ between c
// and next, both made by Parse, split into those a running server applies
// (Reloadable) and those that need a restart.
func (c *Config) Changed(next *Config) (reload, restart []string) {
	if c.source == nil || next.source == nil {
		return nil, nil
	}
	was := map[string]string{}
	for _, s := range c.source.all {
		was[s.env] = s.value
	}
	for _, s := range next.source.all {
		if s.value == was[s.env] || s.env == configFileEnv {
			continue
		}
		if s.reload {
			reload = append(reload, s.env)
		} else {
			restart = append(restart, s.env)
		}
	}
	return reload, restart
}

// DefaultCheckEvery is how often a Watcher looks at the config file.
const DefaultCheckEvery = time.Second

// Watcher re-reads the config file of a running server when it changes
// (a new inode, modification time or size), or when asked, and hands
// the settings it may apply to its apply function; every other change
// is logged as needing a restart, once per change. A file that does not
// parse, or whose new settings apply refuses, is logged with its errors
// and the running configuration stays.
type Watcher struct {
	apply func(next *Config) error
	log   *slog.Logger
	// Used by Check only, which runs one at a time (Run's loop).
	applied *Config     // the configuration whose reloadable settings run
	last    *Config     // the last configuration read well
	seen    os.FileInfo // the version of the file last read
}

// NewWatcher watches cfg's config file; apply gets each new
// configuration that changes a Reloadable setting.
func NewWatcher(cfg *Config, apply func(next *Config) error, log *slog.Logger) *Watcher {
	return &Watcher{apply: apply, log: log, applied: cfg, last: cfg, seen: stat(cfg.ConfigFile)}
}

// Run checks the file every interval, and at once when poke receives
// (SIGHUP), until ctx is done.
func (w *Watcher) Run(ctx context.Context, every time.Duration, poke <-chan os.Signal) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Check(false)
		case <-poke:
			w.Check(true)
		}
	}
}

// Check reads the file again when it changed since last read, or when
// force is set.
func (w *Watcher) Check(force bool) {
	fi := stat(w.applied.ConfigFile)
	if !force && sameFile(fi, w.seen) {
		return
	}
	w.seen = fi
	next, err := w.applied.Reload()
	if err != nil {
		w.log.Error("config file changed but is invalid; the running configuration stays", "file", w.applied.ConfigFile, "error", err)
		return
	}
	// Restart-only changes are told once, against the last file read;
	// reloadable ones are applied until they take.
	_, restart := w.last.Changed(next)
	w.last = next
	for _, env := range restart {
		w.log.Warn("config file changed a setting that needs a restart to take effect", "setting", env, "file", w.applied.ConfigFile)
	}
	reload, _ := w.applied.Changed(next)
	if len(reload) == 0 {
		return
	}
	if err := w.apply(next); err != nil {
		w.log.Error("config file changed but its new settings do not apply; the running ones stay", "settings", reload, "error", err)
		return
	}
	w.applied = next
	w.log.Info("configuration reloaded", "settings", reload, "file", w.applied.ConfigFile)
}

// stat is path's FileInfo, or nil.
func stat(path string) os.FileInfo {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return fi
}

// sameFile reports whether a and b are the same version of a file: the
// same inode (an editor's rename or a Kubernetes ConfigMap update makes a
// new one), modification time and size. Two missing files are the same.
func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

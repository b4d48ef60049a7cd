package settings

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// A Watcher hands a changed file's reloadable settings to apply, logs
// every other change once as needing a restart, and keeps the running
// configuration when the file is bad or apply refuses it.
func TestWatcher(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("upstream: " + testECR + "\naccess_rules: [\"pull:*:*\"]\n")
	env := map[string]string{"CONFIG_FILE": path}
	cfg, err := Parse(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var applied []*Config
	var refuse error
	logs := &testkit.SyncBuffer{}
	w := NewWatcher(cfg, func(next *Config) error {
		if refuse != nil {
			return refuse
		}
		applied = append(applied, next)
		return nil
	}, slog.New(slog.NewTextHandler(logs, nil)))
	rulesOf := func(c *Config) string { return c.Access.Rules[0].String() }

	w.Check(false) // unchanged: nothing
	write("upstream: " + testECR + "\naccess_rules: [\"pull:*:team/\"]\nupstream_retries: 9\n")
	w.Check(false)
	if len(applied) != 1 || rulesOf(applied[0]) != "pull:*:team" || applied[0].Retries != 9 {
		t.Fatalf("applied %d configurations, want the one with pull:*:team/", len(applied))
	}
	write("upstream: " + testECR + "\naccess_rules: [\"pull:*:app/\"]\nupstream_retries: 9\n")
	w.Check(false)
	if n := strings.Count(logs.String(), "setting=UPSTREAM_RETRIES"); n != 1 {
		t.Fatalf("UPSTREAM_RETRIES logged %d times, want once:\n%s", n, logs)
	}

	write("upstream: " + testECR + "\naccess_rules: [\"pull:*:x/\"]\nlisten_addr: 5000\n")
	w.Check(false)
	refuse = errors.New("htpasswd file: no such file")
	write("upstream: " + testECR + "\naccess_rules: [\"pull:*:y/\"]\nupstream_retries: 9\n")
	w.Check(false)
	if len(applied) != 2 || rulesOf(applied[1]) != "pull:*:app" {
		t.Fatalf("applied %d configurations; a bad file or a refused one was applied", len(applied))
	}
	refuse = nil
	w.Check(true) // SIGHUP: read again though unchanged
	if len(applied) != 3 || rulesOf(applied[2]) != "pull:*:y" {
		t.Fatalf("a forced check did not apply the file: %d", len(applied))
	}
	for _, want := range []string{`config.yaml:3: listen_addr: \"5000\" is not host:port`, "no such file", "configuration reloaded"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// Changed splits the settings that differ into reloadable and
// restart-only ones.
func TestChanged(t *testing.T) {
	t.Parallel()
	a, err := parseWith(t, "upstream: "+testECR+"\nallow_networks: [10.0.0.0/8]\n", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseWith(t, "upstream: "+testECR+"\nallow_networks: [10.0.0.0/9]\ncache_dir: /x\n", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reload, restart := a.Changed(b)
	if !slices.Equal(reload, []string{"ALLOW_NETWORKS"}) || !slices.Equal(restart, []string{"CACHE_DIR"}) {
		t.Fatalf("Changed = %v, %v", reload, restart)
	}
}

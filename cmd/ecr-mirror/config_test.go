package main

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// replaceConfig writes text to path as an editor or a ConfigMap update
// does: a new file renamed over the old one.
func replaceConfig(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitLogged waits until the mirror's log holds want n times.
func waitLogged(t *testing.T, m *mirror, want string, n int) {
	t.Helper()
	testwait.Until(t, "log line "+want, func() bool { return strings.Count(m.Logs.String(), want) >= n })
}

// A running mirror applies a changed config file's access rules without
// a restart; a file that does not parse leaves them in force, and a
// setting that needs a restart is logged once, by name.
func TestConfigFileReloadChangesAccessRules(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(1, nil)
	putRawImage(fake, "team/app", "v1", img)
	path := filepath.Join(t.TempDir(), "config.yaml")
	replaceConfig(t, path, "access_rules: [\"pull:*:team/\"]\n")
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"CONFIG_FILE": path}})
	manifest := m.URL + "/v2/team/app/manifests/v1"
	status := func() int {
		resp, _, err := get(t, http.MethodGet, manifest, http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("pull under pull:*:team/: %d, want 200", got)
	}

	replaceConfig(t, path, "access_rules:\n  - \"pull:*:other/\"\n")
	waitLogged(t, m, "configuration reloaded", 1)
	if got := status(); got != http.StatusForbidden {
		t.Fatalf("pull after the rules moved to other/: %d, want 403", got)
	}

	replaceConfig(t, path, "access_rules: [\"pull:*:team/\"]\ncache_max_size: 7x\n")
	waitLogged(t, m, "config file changed but is invalid", 1)
	if !strings.Contains(m.Logs.String(), `config.yaml:2: cache_max_size: \"7x\" is not a size`) {
		t.Fatalf("the log does not name the bad key and its line:\n%s", m.Logs)
	}
	if got := status(); got != http.StatusForbidden {
		t.Fatalf("pull after an invalid file: %d, want 403 (the rules in force stay)", got)
	}

	replaceConfig(t, path, "access_rules: [\"pull:*:team/\"]\nupstream_retries: 9\n")
	waitLogged(t, m, "configuration reloaded", 2)
	if got := status(); got != http.StatusOK {
		t.Fatalf("pull after the rules came back: %d, want 200", got)
	}
	replaceConfig(t, path, "access_rules: [\"pull:*:*\"]\nupstream_retries: 9\n")
	waitLogged(t, m, "configuration reloaded", 3)
	logs := m.Logs.String()
	if n := strings.Count(logs, "needs a restart to take effect"); n != 1 || !strings.Contains(logs, "setting=UPSTREAM_RETRIES") {
		t.Fatalf("restart-only change logged %d times, want once naming UPSTREAM_RETRIES:\n%s", n, logs)
	}
}

// A changed config file that turns on an htpasswd file makes the
// running mirror ask for a login.
func TestConfigFileReloadTurnsLoginOn(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	path := filepath.Join(t.TempDir(), "config.yaml")
	replaceConfig(t, path, "# nothing yet\n")
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"CONFIG_FILE": path}})
	if resp, _, err := get(t, http.MethodGet, m.URL+"/v2/", nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ without access control: %v %v", resp, err)
	}
	htpasswd := writeHtpasswd(t, map[string]string{"alice": "alice-pw"})
	replaceConfig(t, path, "htpasswd_file: "+htpasswd+"\n")
	waitLogged(t, m, "configuration reloaded", 1)
	if resp, _, err := get(t, http.MethodGet, m.URL+"/v2/", nil); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ after the htpasswd file was set: %v %v, want 401", resp, err)
	}
}

// "config check" prints the configuration in effect as a config file
// that, run alone, gives the same configuration; a bad file is refused
// naming the key and its line.
func TestConfigCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	replaceConfig(t, path, "upstream: [https://123456789012.dkr.ecr.eu-west-1.amazonaws.com]\naccess_rules: [\"pull:*:*\"]\ncache_max_size: 3g\n")
	env := map[string]string{"CACHE_MAX_SIZE": "2g"}

	code, out, errOut := cli(t, env, "config", "check", path, "-push")
	if code != exitOK {
		t.Fatalf("config check: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"cache_max_size: 2g", "# from $CACHE_MAX_SIZE", "push: true", "# from flag -push", "  - pull:*:*", "# listen_addr: :5000"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// What it printed, checked again alone, prints the same settings.
	printed := filepath.Join(dir, "printed.yaml")
	replaceConfig(t, printed, out)
	code, again, errOut := cli(t, map[string]string{"CONFIG_FILE": printed}, "config", "check")
	if code != exitOK {
		t.Fatalf("config check of its own output: exit %d\n%s", code, errOut)
	}
	if stripOrigins(again) != stripOrigins(out) {
		t.Fatalf("printed again:\n%s\nfirst:\n%s", again, out)
	}

	replaceConfig(t, path, "upstream: https://123456789012.dkr.ecr.eu-west-1.amazonaws.com\n\ncache_max_size: 7x\nbogus: 1\n")
	code, out, errOut = cli(t, map[string]string{"CONFIG_FILE": path}, "config", "check")
	if code != exitFail || out != "" || !strings.Contains(errOut, `config.yaml:3: cache_max_size: "7x" is not a size`) || !strings.Contains(errOut, `config.yaml:4: unknown setting "bogus"`) {
		t.Fatalf("config check of a bad file: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
}

// stripOrigins drops the "# from ..." lines, which say where each value
// came from and so differ between a file and its printout.
func stripOrigins(s string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "# from ") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// Help: the command list says where the settings are, and "serve
// --help" (or "help serve") lists them.
func TestHelpNamesSettings(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"help"}} {
		if code, out, _ := cli(t, nil, args...); code != exitOK || !strings.Contains(out, `"ecr-mirror serve --help"`) || !strings.Contains(out, "config ") {
			t.Errorf("%q: exit %d, output:\n%s", args, code, out)
		}
	}
	for _, args := range [][]string{{"help", "serve"}, {"serve", "--help"}, {"serve", "-h"}} {
		code, out, _ := cli(t, nil, args...)
		if code != exitOK || !strings.Contains(out, "-cache-max-size SIZE") || !strings.Contains(out, "$CACHE_MAX_SIZE, file key cache_max_size") {
			t.Errorf("%q: exit %d, output:\n%s", args, code, out)
		}
	}
}

// A changed config file that names other TLS files makes the running
// mirror serve their certificate on new connections; turning TLS off is
// logged as needing a restart and changes nothing.
func TestConfigFileReloadSwitchesCertificate(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	ca := tlstest.NewCA(t)
	certA, keyA := ca.IssueFiles(t, t.TempDir(), "localhost", "127.0.0.1")
	certB, keyB := ca.IssueFiles(t, t.TempDir(), "mirror.test", "127.0.0.1")
	path := filepath.Join(t.TempDir(), "config.yaml")
	replaceConfig(t, path, "tls_certificate: "+certA+"\ntls_private_key: "+keyA+"\n")
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"CONFIG_FILE": path}})
	served := func() []string {
		conn, err := tls.Dial("tcp", m.Host, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].DNSNames
	}
	if got := served(); !slices.Equal(got, []string{"localhost"}) {
		t.Fatalf("served %v, want the first certificate", got)
	}
	replaceConfig(t, path, "tls_certificate: "+certB+"\ntls_private_key: "+keyB+"\n")
	waitLogged(t, m, "configuration reloaded", 1)
	if got := served(); !slices.Equal(got, []string{"mirror.test"}) {
		t.Fatalf("served %v after the files changed, want the second certificate", got)
	}
	replaceConfig(t, path, "# TLS off\n")
	waitLogged(t, m, "TLS on or off: that needs a restart", 1)
	if got := served(); !slices.Equal(got, []string{"mirror.test"}) {
		t.Fatalf("served %v after TLS was turned off in the file, want the second certificate still", got)
	}
	replaceConfig(t, path, "tls_certificate: "+certA+"\ntls_private_key: "+keyA+"\n")
	waitLogged(t, m, "configuration reloaded", 3)
	if got := served(); !slices.Equal(got, []string{"localhost"}) {
		t.Fatalf("served %v after TLS came back in the file with the first files, want the first certificate", got)
	}
	if n := strings.Count(m.Logs.String(), "TLS on or off"); n != 1 {
		t.Fatalf("TLS on/off logged %d times, want once", n)
	}
}

// SIGHUP makes the binary read its config file even when the file's
// stat shows no change (rewritten in place, same size and time); without
// CONFIG_FILE the binary logs SIGHUP and keeps serving.
func TestProcessSIGHUPReadsConfigFile(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	putRawImage(fake, "team/app", "v1", newRawImage(2, nil))
	path := filepath.Join(t.TempDir(), "config.yaml")
	replaceConfig(t, path, "access_rules: [\"pull:*:team/\"]\n")
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, bin, fake, t.TempDir(), "CONFIG_FILE="+path)
	status := func() int {
		resp, _, err := get(t, http.MethodGet, "http://"+p.addr+"/v2/team/app/manifests/v1", nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("pull under pull:*:team/: %d", got)
	}
	// Same inode, size and modification time: only SIGHUP can tell.
	if err := os.WriteFile(path, []byte("access_rules: [\"pull:*:teax/\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the rules read on SIGHUP to deny team/", func() bool { return status() == http.StatusForbidden })

	plain := startProcess(t, bin, fake, t.TempDir())
	if err := plain.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "SIGHUP logged", func() bool { return strings.Contains(plain.logs.String(), "SIGHUP ignored") })
	if resp, _, err := get(t, http.MethodGet, "http://"+plain.addr+"/v2/", nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after SIGHUP without CONFIG_FILE: %v %v", resp, err)
	}
}

// The cache commands find the cache in CONFIG_FILE's cache_dir when
// CACHE_DIR is unset.
func TestCacheCommandsReadConfigFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "cache-from-file")
	path := filepath.Join(t.TempDir(), "config.yaml")
	replaceConfig(t, path, "cache_dir: "+dir+"\n")
	code, _, errOut := cli(t, map[string]string{"CONFIG_FILE": path}, "cache", "ls")
	if code != exitFail || !strings.Contains(errOut, dir+" is not a cache directory") {
		t.Fatalf("cache ls: exit %d, stderr %q; want it to look in %s", code, errOut, dir)
	}
	code, _, errOut = cli(t, map[string]string{"CONFIG_FILE": path, "CACHE_DIR": dir + "-env"}, "cache", "ls")
	if code != exitFail || !strings.Contains(errOut, dir+"-env is not a cache directory") {
		t.Fatalf("cache ls with CACHE_DIR set: exit %d, stderr %q; want the variable to win", code, errOut)
	}
}

// "config" alone, or with an unknown subcommand, prints its usage and
// fails; its help succeeds.
func TestConfigUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		code int
	}{
		{args: []string{"config"}, code: exitUsage},
		{args: []string{"config", "show"}, code: exitUsage},
		{args: []string{"config", "--help"}, code: exitOK},
		{args: []string{"config", "check", "-h"}, code: exitOK},
		{args: []string{"help", "config"}, code: exitOK},
	}
	for _, tt := range tests {
		code, out, errOut := cli(t, nil, tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, "Usage: ecr-mirror config check [FILE]") {
			t.Errorf("%q: exit %d, want %d; output:\n%s%s", tt.args, code, tt.code, out, errOut)
		}
	}
}

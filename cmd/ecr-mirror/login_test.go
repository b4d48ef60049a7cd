package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// loginPassword is the password of user alice on loginMirror's mirrors.
const loginPassword = "alice-S3cret-pw"

// loginMirror starts a mirror with HTPASSWD_FILE holding alice, over a
// fake holding team/app:v1.
func loginMirror(t *testing.T) (*mirror, rawImage) {
	t.Helper()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(51, nil)
	putRawImage(fake, "team/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"HTPASSWD_FILE": writeHtpasswd(t, map[string]string{"alice": loginPassword})}})
	return m, img
}

// imageCommand runs warm or export in-process with stdin and returns its
// status and output.
func imageCommand(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut testkit.SyncBuffer
	run := runWarmWith
	if args[0] == "export" {
		run = runExportWith
	}
	code = run(context.Background(), args[1:], strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// --username with --password-stdin logs warm and export in; a password in
// the URL does too, with a warning, and shows up nowhere.
func TestImageCommandsLogInWithFlagsOrURL(t *testing.T) {
	t.Parallel()
	m, img := loginMirror(t)
	withPassword := "http://alice:" + loginPassword + "@" + m.Host
	tests := []struct {
		name, stdin string
		args        []string
		wantWarning bool
	}{
		{name: "warm --password-stdin", stdin: loginPassword + "\n", args: []string{"warm", "--mirror", m.URL, "--username", "alice", "--password-stdin"}},
		{name: "warm --password-stdin, no newline", stdin: loginPassword, args: []string{"warm", "--username", "alice", "--password-stdin", "--mirror", m.URL}},
		{name: "export --password-stdin", stdin: loginPassword + "\r\n", args: []string{"export", "--mirror", m.URL, "--username", "alice", "--password-stdin", "--json"}},
		{name: "warm, password in the URL", args: []string{"warm", "--mirror", withPassword}, wantWarning: true},
		{name: "export, password in the URL", args: []string{"export", "--mirror", withPassword}, wantWarning: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			archive := filepath.Join(t.TempDir(), "out.tar")
			if args[0] == "export" {
				args = append(args, "-o", archive)
			}
			code, stdout, stderr := imageCommand(t, tt.stdin, append(args, "team/app:v1")...)
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, stderr)
			}
			if args[0] == "export" {
				if _, err := os.Stat(archive); err != nil {
					t.Errorf("no archive: %v", err)
				}
			}
			warned := strings.Contains(stderr, "warning: the password in --mirror is visible in process lists and shell history")
			if warned != tt.wantWarning {
				t.Errorf("warning printed %v, want %v:\n%s", warned, tt.wantWarning, stderr)
			}
			if strings.Contains(stdout+stderr, loginPassword) {
				t.Errorf("the password shows in the output:\n%s\n%s", stdout, stderr)
			}
			waitStored(t, m, img.Dgst, img.LayerDgst, img.ConfigDgst)
		})
	}
}

// Wrong flags or a wrong login fail with one line that names the mirror
// and says how to log in: no JSON, no password.
func TestImageCommandsRefuseBadLogins(t *testing.T) {
	t.Parallel()
	m, _ := loginMirror(t)
	tests := []struct {
		name, stdin string
		args        []string
		code        int
		want        string
	}{
		{name: "--password-stdin alone", stdin: loginPassword, args: []string{"warm", "--password-stdin"}, code: exitUsage, want: "ecr-mirror warm: --password-stdin needs --username"},
		{name: "--username alone", args: []string{"export", "-o", "x.tar", "--username", "alice"}, code: exitUsage, want: "ecr-mirror export: --username needs --password-stdin"},
		{name: "empty stdin", args: []string{"warm", "--username", "alice", "--password-stdin"}, code: exitUsage, want: "ecr-mirror warm: --password-stdin: stdin gave no password"},
		{name: "two logins", stdin: loginPassword, args: []string{"warm", "--mirror", "http://bob:" + loginPassword + "@" + m.Host, "--username", "alice", "--password-stdin"},
			code: exitUsage, want: "give the login once"},
		{name: "wrong password", stdin: "wrong-pw\n", args: []string{"warm", "--mirror", m.URL, "--username", "alice", "--password-stdin"}, code: exitFail,
			want: `ecr-mirror warm: mirror ` + m.URL + ` refused the login of user "alice" (from --username): wrong user name or password; log in with "docker login ` + m.Host + `"`},
		{name: "wrong password in the URL", args: []string{"export", "-o", "x.tar", "--mirror", "http://alice:wrong-pw@" + m.Host}, code: exitFail,
			want: `ecr-mirror export: mirror ` + m.URL + ` refused the login of user "alice" (from the --mirror URL)`},
		{name: "a URL that does not parse", args: []string{"warm", "--mirror", "http://alice:" + loginPassword + "@[::1"}, code: exitUsage,
			want: `--mirror "http://xxxxx@[::1" is not an http(s) URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := imageCommand(t, tt.stdin, append(tt.args, "team/app:v1")...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tt.code, tt.want, stderr)
			}
			if strings.Contains(stdout+stderr, loginPassword) || strings.Contains(stdout+stderr, "wrong-pw") || strings.Contains(stderr, `{"errors"`) {
				t.Errorf("the output shows a password or raw JSON:\n%s\n%s", stdout, stderr)
			}
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); tt.code == exitFail && len(lines) > 2 {
				t.Errorf("%d lines, want the refusal (after any warning) only:\n%s", len(lines), stderr)
			}
		})
	}
}

// dockerLogin is a Docker config directory and the environment the
// binary runs in with it: HOME, DOCKER_CONFIG and PATH (for credential
// helpers) of the test's own.
type dockerLogin struct {
	dir, helpers string
	env          []string
}

func newDockerLogin(t *testing.T) *dockerLogin {
	t.Helper()
	d := &dockerLogin{dir: t.TempDir(), helpers: t.TempDir()}
	d.env = append(os.Environ(), "HOME="+t.TempDir(), "DOCKER_CONFIG="+d.dir, "XDG_CONFIG_HOME="+t.TempDir(), "XDG_RUNTIME_DIR=", "REGISTRY_AUTH_FILE=",
		"PATH="+d.helpers+string(os.PathListSeparator)+os.Getenv("PATH"))
	return d
}

// writeConfig writes config.json.
func (d *dockerLogin) writeConfig(t *testing.T, cfg map[string]any) {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeHelper writes docker-credential-<name>, a credential helper that
// answers "get" with user and password for any host, and appends each
// host it is asked for to the file it returns.
func (d *dockerLogin) writeHelper(t *testing.T, name, user, password string) (asked string) {
	t.Helper()
	asked = filepath.Join(d.helpers, name+".asked")
	script := fmt.Sprintf("#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r host\necho \"$host\" >>%q\n"+
		"printf '{\"ServerURL\":\"%%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}\\n' \"$host\"\n", asked, user, password)
	if err := os.WriteFile(filepath.Join(d.helpers, "docker-credential-"+name), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return asked
}

// run runs the binary with the login's environment.
func (d *dockerLogin) run(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = d.env
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// The binary's warm and export log in with the Docker config, as docker
// and crane do: an auths entry, a credential helper for the mirror's host
// (credHelpers), or the default helper (credsStore); with none, or a
// wrong one, they fail with one line saying how to log in.
func TestImageCommandsLogInWithTheDockerConfig(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	m, img := loginMirror(t)
	basic := func(user, pw string) string { return base64.StdEncoding.EncodeToString([]byte(user + ":" + pw)) }
	tests := []struct {
		name string
		// setup writes the config and returns the file a helper logs the
		// hosts it is asked for to ("": no helper).
		setup func(t *testing.T, d *dockerLogin) string
		want  string // "": logged in; else in stderr, with exit 1
	}{
		{name: "auths", setup: func(t *testing.T, d *dockerLogin) string {
			d.writeConfig(t, map[string]any{"auths": map[string]any{m.Host: map[string]string{"auth": basic("alice", loginPassword)}}})
			return ""
		}},
		{name: "auths keyed by URL", setup: func(t *testing.T, d *dockerLogin) string {
			d.writeConfig(t, map[string]any{"auths": map[string]any{m.URL: map[string]string{"auth": basic("alice", loginPassword)}}})
			return ""
		}},
		{name: "credHelpers", setup: func(t *testing.T, d *dockerLogin) string {
			d.writeConfig(t, map[string]any{"credHelpers": map[string]string{m.Host: "mirrortest"}})
			return d.writeHelper(t, "mirrortest", "alice", loginPassword)
		}},
		{name: "credsStore", setup: func(t *testing.T, d *dockerLogin) string {
			d.writeConfig(t, map[string]any{"credsStore": "storetest"})
			return d.writeHelper(t, "storetest", "alice", loginPassword)
		}},
		{name: "no login", setup: func(t *testing.T, d *dockerLogin) string {
			d.writeConfig(t, map[string]any{"auths": map[string]any{"elsewhere.example:5000": map[string]string{"auth": basic("alice", loginPassword)}}})
			return ""
		}, want: "mirror " + m.URL + " asks for a login, and none is given for it; log in with \"docker login " + m.Host + "\""},
		{name: "wrong password", setup: func(t *testing.T, d *dockerLogin) string {
			d.writeConfig(t, map[string]any{"credHelpers": map[string]string{m.Host: "wrongtest"}})
			return d.writeHelper(t, "wrongtest", "alice", "wrong-pw")
		}, want: "mirror " + m.URL + " refused the login of user \"alice\" (from the Docker config): wrong user name or password; log in with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDockerLogin(t)
			asked := tt.setup(t, d)
			archive := filepath.Join(t.TempDir(), "out.tar")
			for _, args := range [][]string{{"warm", "--mirror", m.URL, "team/app:v1"}, {"export", "--mirror", m.URL, "-o", archive, "team/app:v1"}} {
				code, stdout, stderr := d.run(t, bin, args...)
				if tt.want == "" && code != exitOK {
					t.Fatalf("%s: exit %d\n%s", args[0], code, stderr)
				}
				if tt.want != "" && (code != exitFail || !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0) {
					t.Fatalf("%s: exit %d, want %d and one line with %q:\n%s", args[0], code, exitFail, tt.want, stderr)
				}
				if strings.Contains(stdout+stderr, loginPassword) || strings.Contains(stdout+stderr, "wrong-pw") {
					t.Errorf("%s: the output shows the password:\n%s\n%s", args[0], stdout, stderr)
				}
			}
			if asked != "" {
				b, err := os.ReadFile(asked)
				if err != nil || strings.TrimSpace(string(b)) != m.Host+"\n"+m.Host {
					t.Errorf("the helper was asked for %q (%v), want %s once per command", b, err, m.Host)
				}
			}
			if tt.want == "" {
				if _, err := os.Stat(archive); err != nil {
					t.Errorf("export wrote no archive: %v", err)
				}
				waitStored(t, m, img.Dgst, img.LayerDgst, img.ConfigDgst)
			}
		})
	}
}

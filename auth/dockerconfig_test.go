package auth_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

func TestLoadDockerConfigNamesSettingAndFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, path, content, want string
	}{
		{name: "missing file", path: filepath.Join(dir, "nope.json"), want: "no such file"},
		{name: "directory", path: dir, want: "is a directory"},
		{name: "not JSON", content: "auths: {}", want: "not a valid Docker config.json"},
		{name: "auth not base64", content: `{"auths":{"r.example":{"auth":"!!s3cret!!"}}}`, want: "not a valid Docker config.json"},
		{name: "auth without colon", content: `{"auths":{"r.example":{"auth":"` + b64("s3cret") + `"}}}`, want: "not a valid Docker config.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := tc.path
			if path == "" {
				path = writeDockerConfig(t, tc.content)
			}
			_, err := auth.LoadDockerConfig(path, nil)
			if err == nil {
				t.Fatal("LoadDockerConfig succeeded, want an error")
			}
			msg := err.Error()
			for _, want := range []string{"UPSTREAM_DOCKER_CONFIG", path, tc.want} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if strings.Contains(msg, "s3cret") {
				t.Errorf("error %q contains the secret", msg)
			}
		})
	}
}

// installCredentialHelper puts docker-credential-<name> on PATH: a script
// that logs the server URL it is asked about and answers user:pass for
// host, "credentials not found" for anything else. It returns the log.
func installCredentialHelper(t *testing.T, name, host, user, pass string) string {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "asked")
	script := fmt.Sprintf(`#!/bin/sh
[ "$1" = get ] || exit 1
read -r url
echo "$url" >> %q
if [ "$url" = %q ]; then
  printf '{"ServerURL":"%%s","Username":%q,"Secret":%q}' "$url"
else
  echo "credentials not found in native keychain"
  exit 1
fi
`, logFile, host, user, pass)
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return logFile
}

// TestDockerConfigCredentialHelpers runs credential helper scripts from
// PATH (t.Setenv, so not in parallel).
func TestDockerConfigCredentialHelpers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config func(host string) string
	}{
		{name: "credHelpers entry", config: func(host string) string {
			return fmt.Sprintf(`{"credHelpers":{%q:"mirrortest"}}`, host)
		}},
		{name: "credsStore", config: func(string) string { return `{"credsStore":"mirrortest"}` }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bearer := range []bool{true, false} {
				var realm *tokenServer
				if bearer {
					realm = newTokenServer(t, map[string]string{"helperuser": "helper-s3cret"})
					realm.loginRequired = true
				}
				reg := newTestRegistry(t, realm, "helperuser", "helper-s3cret")
				asked := installCredentialHelper(t, "mirrortest", reg.host(), "helperuser", "helper-s3cret")
				dc, err := auth.LoadDockerConfig(writeDockerConfig(t, tc.config(reg.host())), nil)
				if err != nil {
					t.Fatal(err)
				}
				client := &http.Client{Transport: dc.Transport(reg.host(), ownTransport(t))}
				for range 3 {
					if status, body := get(t, client, reg.URL+"/v2/app/manifests/latest"); status != http.StatusOK {
						t.Fatalf("bearer=%v: GET = %d %s, want 200 with the helper's login", bearer, status, body)
					}
				}
				log, err := os.ReadFile(asked)
				if err != nil {
					t.Fatalf("the helper was never run: %v", err)
				}
				if got := strings.Fields(string(log)); len(got) != 1 || got[0] != reg.host() {
					t.Errorf("bearer=%v: helper asked about %q, want %s once (its answer is reused)", bearer, got, reg.host())
				}
			}
		})
	}
}

func TestLoadDockerConfigRefusesHelpersNotOnPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, config := range []string{`{"credsStore":"desktop"}`, `{"credHelpers":{"ghcr.io":"gh"}}`} {
		path := writeDockerConfig(t, config)
		_, err := auth.LoadDockerConfig(path, nil)
		if err == nil || !strings.Contains(err.Error(), "UPSTREAM_DOCKER_CONFIG") || !strings.Contains(err.Error(), path) ||
			!strings.Contains(err.Error(), "cannot be run") {
			t.Errorf("config %s with its helper missing: error %v, want one naming the setting, the file and the helper", config, err)
		}
	}
}

func TestDockerConfigHelperFailureIsACredentialsError(t *testing.T) {
	// The helper runs but fails (not a "credentials not found").
	reg := newTestRegistry(t, nil, "u", "p")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-failing"), []byte("#!/bin/sh\necho 'keyring locked'\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	dc, err := auth.LoadDockerConfig(writeDockerConfig(t, fmt.Sprintf(`{"credHelpers":{%q:"failing"}}`, reg.host())), nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: dc.Transport(reg.host(), ownTransport(t))}
	_, err = client.Get(reg.URL + "/v2/app/manifests/latest")
	var ce *auth.CredentialsError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "UPSTREAM_DOCKER_CONFIG") || !strings.Contains(err.Error(), "keyring locked") {
		t.Fatalf("GET with a failing helper: %v, want a CredentialsError naming UPSTREAM_DOCKER_CONFIG and the helper's message", err)
	}
}

func TestDockerConfigLoginPerRegistry(t *testing.T) {
	t.Parallel()
	path := writeDockerConfig(t, `{"auths":{
		"https://index.docker.io/v1/":{"auth":"`+b64("hubuser:hub-s3cret")+`"},
		"ghcr.io":{"username":"gh","password":"gh-s3cret"},
		"https://quay.io":{"auth":"`+b64("q:q-s3cret")+`"}}}`)
	dc, err := auth.LoadDockerConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"registry-1.docker.io": "hubuser:hub-s3cret",
		"docker.io":            "hubuser:hub-s3cret",
		"ghcr.io":              "gh:gh-s3cret",
		"ghcr.io:443":          "gh:gh-s3cret",
		"quay.io":              "q:q-s3cret",
		"registry.k8s.io":      ":",
	} {
		login := dc.Login(host)
		c, err := login(t.Context())
		if err != nil {
			t.Fatalf("Login(%s): %v", host, err)
		}
		if got := c.Username + ":" + c.Password; got != want {
			t.Errorf("Login(%s) = %q, want %q", host, got, want)
		}
	}
	anon, err := auth.LoadDockerConfig("", nil)
	if err != nil || anon.Login("ghcr.io") != nil {
		t.Errorf("LoadDockerConfig(\"\") = %v, %v; want anonymous logins (nil)", anon, err)
	}
}

func TestDockerConfigNeverPrintsLogins(t *testing.T) {
	t.Parallel()
	path := writeDockerConfig(t, authsConfig("ghcr.io", "gh", "gh-s3cret"))
	dc, err := auth.LoadDockerConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("loaded", "logins", dc)
	for _, out := range []string{fmt.Sprint(dc), fmt.Sprintf("%+v", dc), fmt.Sprintf("%#v", dc), b.String()} {
		if strings.Contains(out, "gh-s3cret") || strings.Contains(out, b64("gh:gh-s3cret")) {
			t.Errorf("output shows a login: %s", out)
		}
	}
	if !strings.Contains(fmt.Sprint(dc), path) {
		t.Errorf("fmt.Sprint = %q, want the file's path", fmt.Sprint(dc))
	}
}

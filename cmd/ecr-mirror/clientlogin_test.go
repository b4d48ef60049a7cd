//go:build linux

// Real clients against a mirror with TLS and HTPASSWD_FILE on, configured
// as README's "TLS and logins for clients" says: containerd by hosts.toml
// (ca, Authorization header), skopeo by a docker certs.d directory and a
// docker config.json, go-containerregistry by the same config.json.

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// tlsLoginMirror is a mirror serving HTTPS with a certificate for 127.0.0.1
// from a throwaway CA, and asking clients for one htpasswd login.
type tlsLoginMirror struct {
	*mirror
	fake           *fakeecr.Server
	caFile         string // the CA that issued the mirror's certificate, PEM
	user, password string
}

// startTLSLoginMirror starts a mirror in front of a new fake with TLS and
// HTPASSWD_FILE on.
func startTLSLoginMirror(t *testing.T) *tlsLoginMirror {
	t.Helper()
	fake := fakeecr.Start(t, fakeecr.Options{})
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, "127.0.0.1")
	lm := &tlsLoginMirror{fake: fake, caFile: filepath.Join(dir, "ca.pem"), user: "node", password: "n0de-pull-s3cret"}
	if err := os.WriteFile(lm.caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	lm.mirror = startMirror(t, fake, mirrorOpts{env: map[string]string{
		"TLS_CERTIFICATE": certFile,
		"TLS_PRIVATE_KEY": keyFile,
		"HTPASSWD_FILE":   writeHtpasswd(t, map[string]string{lm.user: lm.password}),
	}})
	return lm
}

// basicAuth is an Authorization header value for user and password.
func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// readmeLoginHostsToml returns the hosts.toml example of README.md's "TLS
// and logins for clients".
func readmeLoginHostsToml(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n### TLS and logins for clients\n")
	if !ok {
		t.Fatal(`README.md has no section "### TLS and logins for clients"`)
	}
	_, block, ok := strings.Cut(section, "```toml\n")
	if !ok {
		t.Fatal(`README.md's "TLS and logins for clients" has no toml example`)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// writeLoginHostsToml writes README's hosts.toml example for registry,
// pointed at this test's server, mirror, CA file and Authorization header
// (none when authorization is ""), readable by its owner only. The
// server gets only the push capability, so that a pull never falls back
// to it and every answer comes from the mirror.
func writeLoginHostsToml(t *testing.T, hostsDir, registry, server, mirrorHost, caFile, authorization string) {
	t.Helper()
	toml := readmeLoginHostsToml(t)
	for _, r := range []struct{ example, test string }{
		{`server = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"` + "\n",
			fmt.Sprintf("server = %q\ncapabilities = [\"push\"]\n", server)},
		{`"https://mirror:5000"`, fmt.Sprintf("%q", "https://"+mirrorHost)},
		{`"/etc/containerd/certs.d/mirror-ca.pem"`, fmt.Sprintf("%q", caFile)},
		{`Authorization = "Basic bm9kZTpzM2NyZXQ="`, fmt.Sprintf("Authorization = %q", authorization)},
	} {
		if !strings.Contains(toml, r.example) {
			t.Fatalf("README's hosts.toml example no longer holds %s (update this test with it):\n%s", r.example, toml)
		}
		toml = strings.ReplaceAll(toml, r.example, r.test)
	}
	if authorization == "" {
		// Drop the header's table, from its line to the end.
		i := strings.Index(toml, ".header]")
		if i < 0 {
			t.Fatalf("README's hosts.toml example has no header table:\n%s", toml)
		}
		toml = toml[:strings.LastIndex(toml[:i], "\n")+1]
	}
	t.Logf("hosts.toml:\n%s", toml)
	path := filepath.Join(hostsDir, registry, "hosts.toml")
	writeFile(t, path, toml)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// containerd pulls an ECR image through a mirror that has TLS and an
// htpasswd login, configured as README says: hosts.toml with the mirror's
// CA and an Authorization header. Without the header the mirror answers
// 401 and nothing is fetched; with a wrong password, likewise; with
// another CA, containerd refuses the mirror's certificate before sending
// a request. The password never reaches the mirror's log.
func TestContainerdPullsOverTLSWithLogin(t *testing.T) {
	t.Parallel()
	ctrd := startContainerd(t)
	lm := startTLSLoginMirror(t)
	manifest, blobs := putImage(t, lm.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, tlstest.NewCA(t).CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := lm.fake.Host() + "/team/app:v1"
	good := basicAuth(lm.user, lm.password)

	for _, tt := range []struct {
		name, ca, authorization string
		wantErr                 []string // any of them, lower case; none: the pull works
		wantStatus              string   // the mirror's log has a request with this status
	}{
		{"no login", lm.caFile, "", []string{"401", "unauthorized"}, "status=401"},
		{"wrong password", lm.caFile, basicAuth(lm.user, "guess"), []string{"401", "unauthorized"}, "status=401"},
		{"another CA", otherCA, good, []string{"x509", "certificate signed by unknown authority", "tls"}, ""},
		{"CA and login", lm.caFile, good, nil, "status=200"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hosts := t.TempDir()
			writeLoginHostsToml(t, hosts, lm.fake.Host(), lm.fake.URL(), lm.Host, tt.ca, tt.authorization)
			logged := len(lm.Logs.String())
			_, err := ctrd.fetch(t, hosts, ref)
			served := lm.Logs.String()[logged:]
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("fetching %s through the mirror: %v\nmirror log:\n%s", ref, err, served)
				}
			} else if err == nil {
				t.Fatalf("fetching %s succeeded; want an error naming one of %q", ref, tt.wantErr)
			} else if msg := strings.ToLower(err.Error()); !slices.ContainsFunc(tt.wantErr, func(w string) bool { return strings.Contains(msg, w) }) {
				t.Fatalf("fetching %s failed, but not with one of %q: %v", ref, tt.wantErr, err)
			} else {
				t.Logf("refused, as expected: %s", lastLine(err.Error()))
			}
			if tt.wantStatus != "" && !strings.Contains(served, tt.wantStatus) {
				t.Errorf("the mirror logged no request with %s:\n%s", tt.wantStatus, served)
			}
			if tt.wantStatus == "" && strings.Contains(served, "msg=request") {
				t.Errorf("a request reached the mirror over a connection containerd should have refused:\n%s", served)
			}
		})
	}

	checkFetched(t, ctrd, ref, manifest, blobs)
	logs := lm.Logs.String()
	for _, secret := range []string{lm.password, strings.TrimPrefix(good, "Basic ")} {
		if strings.Contains(logs, secret) {
			t.Errorf("the mirror's log holds the client's password or its Authorization header")
		}
	}
}

// copyFrom runs `skopeo copy` with srcOpts in place of copy's plain-HTTP,
// anonymous source options.
func (s *skopeo) copyFrom(t *testing.T, src, dst string, srcOpts ...string) error {
	t.Helper()
	args := []string{
		"--policy", s.policy, "--registries.d", s.regsd, "--tmpdir", s.tmp,
		"--command-timeout", clientCmdTimeout.String(), "copy",
	}
	args = append(append(args, srcOpts...), src, dst)
	_, _, err := runTool(t, s.env, s.bin, args...)
	return err
}

// writeDockerLogin writes what `docker login host` leaves in
// ~/.docker/config.json and returns the file's path.
func writeDockerLogin(t *testing.T, dir, host, user, password string) string {
	t.Helper()
	path := filepath.Join(dir, "config.json")
	writeFile(t, path, fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`+"\n",
		host, base64.StdEncoding.EncodeToString([]byte(user+":"+password))))
	return path
}

// skopeo and go-containerregistry pull from the TLS mirror with the login
// `docker login` writes into config.json, trusting the mirror's CA as
// docker does, from certs.d/<host:port>/ca.crt (skopeo) or the CA file
// (go-containerregistry): the image arrives with its digests. With no
// login, both get 401. The password never reaches the mirror's log.
func TestDockerConfigLoginOverTLS(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	lm := startTLSLoginMirror(t)
	manifest, blobs := putImage(t, lm.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))
	certsD := filepath.Join(t.TempDir(), "certs.d")
	caPEM, err := os.ReadFile(lm.caFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(certsD, lm.Host, "ca.crt"), string(caPEM))
	dockerConfig := writeDockerLogin(t, t.TempDir(), lm.Host, lm.user, lm.password)
	src := "docker://" + lm.Host + "/team/app:v1"

	// skopeo, the way docker reads its files.
	tlsArgs := []string{"--src-tls-verify=true", "--src-cert-dir", filepath.Join(certsD, lm.Host)}
	dir := t.TempDir()
	if err := sk.copyFrom(t, src, "dir:"+dir, append(tlsArgs, "--src-authfile", dockerConfig)...); err != nil {
		t.Fatalf("skopeo with config.json: %v\nmirror log:\n%s", err, lm.Logs)
	}
	got, top := readDirLayout(t, dir)
	if top != manifest || !sameDigests(got, blobs) {
		t.Errorf("skopeo copied manifest %s, blobs %v; want %s, %v", top, got, manifest, blobs)
	}
	err = sk.copyFrom(t, src, "dir:"+t.TempDir(), append(tlsArgs, "--src-no-creds")...)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Errorf("skopeo with no login: %v; want unauthorized", err)
	}

	// go-containerregistry, with the login from the same config.json.
	f, err := os.Open(dockerConfig)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := config.LoadFromReader(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	login, err := cf.GetAuthConfig(lm.Host)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("the CA file holds no certificate")
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	ref, err := name.ParseReference(lm.Host + "/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: login.Username, Password: login.Password, Auth: login.Auth})
	img, err := remote.Image(ref, remote.WithTransport(tr), remote.WithAuth(auth))
	if err != nil {
		t.Fatalf("go-containerregistry with config.json: %v", err)
	}
	if d, err := img.Digest(); err != nil || d.String() != manifest.String() {
		t.Errorf("go-containerregistry got %v (%v), want %s", d, err, manifest)
	}
	if _, err := remote.Image(ref, remote.WithTransport(tr)); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("go-containerregistry with no login: %v; want UNAUTHORIZED", err)
	}
	if strings.Contains(lm.Logs.String(), lm.password) {
		t.Error("the mirror's log holds the client's password")
	}
}

// `ecr-mirror warm` fills a TLS mirror with a login as README says: the
// CA from SSL_CERT_FILE, the login from the Docker config or from
// --username and --password-stdin. Without the CA it refuses the
// mirror's certificate; without a login the mirror refuses it. Each case
// has a mirror of its own, so what one warmed is never another's success.
func TestWarmOverTLSWithLogin(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	for _, tt := range []struct {
		name      string
		ca, login bool     // SSL_CERT_FILE names the CA; the Docker config has the login
		args      []string // more warm flags (stdin always holds the password)
		wantErr   string   // in the output, lower case; "": exit 0, image stored
	}{
		{name: "no CA", login: true, wantErr: "x509"},
		{name: "CA, no login", ca: true, wantErr: "login"},
		{name: "CA and docker login", ca: true, login: true},
		{name: "CA and --password-stdin", ca: true, args: []string{"--username", "node", "--password-stdin"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lm := startTLSLoginMirror(t)
			manifest, blobs := putImage(t, lm.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))
			home := t.TempDir()
			var env []string
			if tt.ca {
				env = append(env, "SSL_CERT_FILE="+lm.caFile)
			}
			if tt.login {
				writeDockerLogin(t, filepath.Join(home, ".docker"), lm.Host, lm.user, lm.password)
			}
			args := append(append([]string{"warm"}, tt.args...), "--mirror", "https://"+lm.Host, "team/app:v1")
			cmd := exec.Command(bin, args...)
			cmd.Env = isolatedEnv(home, env...)
			cmd.Stdin = strings.NewReader(lm.password + "\n")
			out, err := cmd.CombinedOutput()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("warm: %v\n%s", err, out)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("warm succeeded; want a failure naming %q\n%s", tt.wantErr, out)
			case tt.wantErr != "" && !strings.Contains(strings.ToLower(string(out)), tt.wantErr):
				t.Fatalf("warm failed, but not naming %q: %s", tt.wantErr, out)
			}
			if strings.Contains(string(out), lm.password) {
				t.Errorf("warm's output holds the password:\n%s", out)
			}
			if tt.wantErr == "" {
				waitStored(t, lm.mirror, append([]digest.Digest{manifest}, blobs...)...)
			} else if lm.stored(manifest) {
				t.Errorf("a refused warm stored the image")
			}
		})
	}
}

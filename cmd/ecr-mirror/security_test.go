package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// A pull over HTTPS (HTTP/2 allowed) with the mirror's certificate from a
// test CA; plain HTTP to the TLS port gets nowhere.
func TestTLSPull(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(32<<10, 2)
	manifest, _ := putImage(t, fake, "team/app", "v1", img)
	ca := tlstest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, t.TempDir(), "localhost", "127.0.0.1")
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"TLS_CERTIFICATE": certFile, "TLS_PRIVATE_KEY": keyFile}})

	tr := pullOverTLS(t, m.Host, "team/app:v1", ca.Pool(), manifest)
	resp, err := (&http.Client{Transport: tr}).Get("https://" + m.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
	if resp, err := http.Get("http://" + m.Host + "/v2/"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP to the TLS listener was served")
	}
}

// writeHtpasswd writes a bcrypt htpasswd file.
func writeHtpasswd(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Client access control end to end: log in like docker does, pull what
// the rules grant, get 401/403 OCI errors otherwise; probes need no login.
func TestAccessControl(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(4096, 1)
	putImage(t, fake, "team/app", "v1", img)
	putImage(t, fake, "other/app", "v1", img)
	const password = "s3cret-pass"
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{
		"HTPASSWD_FILE": writeHtpasswd(t, map[string]string{"alice": password, "bob": "bobpass"}),
		"ACCESS_RULES":  "pull:alice:team/; pull:bob:*",
	}})
	pull := func(user, pass, repo string) error {
		ref, _ := name.ParseReference(m.Host+"/"+repo+":v1", name.Insecure)
		opts := []remote.Option{}
		if user != "" {
			opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
		}
		img, err := remote.Image(ref, opts...)
		if err == nil {
			_, err = img.RawConfigFile()
		}
		return err
	}
	tests := []struct {
		name, user, pass, repo string
		wantErr                string
	}{
		{name: "alice pulls her prefix", user: "alice", pass: password, repo: "team/app"},
		{name: "bob pulls anything", user: "bob", pass: "bobpass", repo: "other/app"},
		{name: "alice outside her prefix", user: "alice", pass: password, repo: "other/app", wantErr: "DENIED"},
		{name: "wrong password", user: "alice", pass: "nope", repo: "team/app", wantErr: "UNAUTHORIZED"},
		{name: "anonymous", repo: "team/app", wantErr: "UNAUTHORIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pull(tt.user, tt.pass, tt.repo)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("pull: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("pull error %v, want %s", err, tt.wantErr)
			}
		})
	}
	resp, body, err := get(t, "GET", m.URL+"/v2/team/app/manifests/v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != 401 || code != registry.CodeUnauthorized ||
		!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm=") {
		t.Fatalf("anonymous: %d %s, WWW-Authenticate %q", resp.StatusCode, code, resp.Header.Get("WWW-Authenticate"))
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		testwait.Until(t, p+" without a login", func() bool {
			resp, _, err := get(t, "GET", m.URL+p, nil)
			return err == nil && resp.StatusCode == 200
		})
	}
	if strings.Contains(m.Logs.String(), password) {
		t.Fatal("the logs contain a client's password")
	}
}

// Clients outside ALLOW_NETWORKS are refused with 403 DENIED.
func TestAllowNetworks(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8"}})
	resp, body, err := get(t, "GET", m.URL+"/v2/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != 403 || code != registry.CodeDenied {
		t.Fatalf("from 127.0.0.1: %d %s, want 403 DENIED", resp.StatusCode, code)
	}
	m2 := startMirror(t, fake, mirrorOpts{env: map[string]string{"ALLOW_NETWORKS": "127.0.0.0/8, ::1"}})
	if resp, _, _ := get(t, "GET", m2.URL+"/v2/", nil); resp.StatusCode != 200 {
		t.Fatalf("from an allowed network: %d", resp.StatusCode)
	}
}

// A cross-repository mount reads its source repository, so ACCESS_RULES
// must grant the client pull there: alice, who may push to team-a/ but not
// pull team-b/, cannot copy team-b/private's blobs into team-a/ by a mount.
// Her mount is never forwarded; she gets a plain upload session instead.
func TestMountChecksSourceAgainstRules(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	secret := fake.PutBlob("team-b/private", testkit.RandomBytes(11, 4096))
	own := fake.PutBlob("team-a/app", testkit.RandomBytes(12, 4096))
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{
		"PUSH":          "true",
		"HTPASSWD_FILE": writeHtpasswd(t, map[string]string{"alice": "a-pw", "bob": "b-pw"}),
		"ACCESS_RULES":  "pull:alice:team-a/; push:alice:team-a/; pull:bob:team-b/",
	}})
	c := &http.Client{Transport: newTransport(t)}
	post := func(query string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("POST", m.URL+"/v2/team-a/stolen/blobs/uploads/?"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("alice", "a-pw")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}

	resp, body := post("mount=" + secret.String() + "&from=team-b/private")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("mount from team-b/private: %d %s, want 202 (a plain upload)", resp.StatusCode, body)
	}
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, m.URL+"/v2/team-a/stolen/blobs/uploads/") {
		t.Fatalf("Location %q, want an upload session on the mirror", loc)
	}
	for _, r := range fake.Counters().Requests {
		if strings.Contains(r.Query, "mount") || strings.Contains(r.Query, "team-b") {
			t.Fatalf("upstream saw %s %s?%s", r.Method, r.Path, r.Query)
		}
	}
	if fake.HasBlob("team-a/stolen", secret) || fake.PushCounters().Mounts != 0 {
		t.Fatal("team-b/private's blob was mounted into team-a/stolen")
	}

	// Invalid source names are refused outright.
	resp, body = post("mount=" + secret.String() + "&from=team-b//private")
	if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != 400 || code != registry.CodeNameInvalid {
		t.Fatalf("invalid from: %d %s, want 400 NAME_INVALID", resp.StatusCode, body)
	}

	// A mount from a repository alice may pull still works.
	resp, body = post("mount=" + own.String() + "&from=team-a/app")
	if resp.StatusCode != http.StatusCreated || !fake.HasBlob("team-a/stolen", own) || fake.PushCounters().Mounts != 1 {
		t.Fatalf("mount from team-a/app: %d %s, mounts %d", resp.StatusCode, body, fake.PushCounters().Mounts)
	}
}

// Clients choose the method; metrics must not give each choice a series of
// its own. 5,000 random methods leave a handful of series.
func TestMetricsLabelsStayBounded(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{})
	c := &http.Client{Transport: newTransport(t)}
	paths := []string{"/v2/", "/v2/team/app/manifests/v1", "/v2/team/app/blobs/uploads/", "/v2/nope", "/elsewhere"}
	// 500 distinct methods: five times the series the check below
	// allows, should methods ever become labels.
	for i := range 500 {
		req, err := http.NewRequest(fmt.Sprintf("M%x", testkit.RandomBytes(uint64(i), 6)), m.URL+paths[i%len(paths)], nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	series := map[string]int{}
	for key := range scrape(t, m.URL+"/metrics") {
		name, labels, _ := strings.Cut(key, "{")
		switch name {
		case "ecr_mirror_http_requests_total", "ecr_mirror_http_request_duration_seconds_count":
			series[name]++
			if !strings.Contains(labels, `method="other"`) && strings.Contains(labels, `method="M`) {
				t.Errorf("a client's method became a label: %s", key)
			}
		}
	}
	for _, name := range []string{"ecr_mirror_http_requests_total", "ecr_mirror_http_request_duration_seconds_count"} {
		if n := series[name]; n == 0 || n >= 100 {
			t.Errorf("%s: %d series after 500 random methods, want 1 to 99", name, n)
		}
	}
	t.Logf("series: %v", series)
}

// ALLOW_NETWORKS holds for every path of a registry listener: a refused
// network can neither read metrics nor probe. METRICS_ADDR, the operator's
// port, serves metrics and probes to any network that reaches it.
func TestAllowNetworksCoversEveryPath(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8"}})
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/v2/", "/elsewhere"} {
		resp, body, err := get(t, "GET", m.URL+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != 403 || code != registry.CodeDenied {
			t.Errorf("%s from 127.0.0.1: %d %s, want 403 DENIED", p, resp.StatusCode, body)
		}
	}

	m2 := startMirror(t, fake, mirrorOpts{env: map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8", "METRICS_ADDR": "127.0.0.1:0"}})
	ops := listenAddr(t, m2, "metrics and probes")
	for _, p := range []string{"/metrics", "/healthz"} {
		if resp, body, err := get(t, "GET", "http://"+ops+p, nil); err != nil || resp.StatusCode != 200 {
			t.Errorf("%s on METRICS_ADDR: %v %v %s", p, err, resp, body)
		}
	}
	testwait.Until(t, "/readyz on METRICS_ADDR", func() bool {
		resp, _, err := get(t, "GET", "http://"+ops+"/readyz", nil)
		return err == nil && resp.StatusCode == 200
	})
	if resp, _, _ := get(t, "GET", "http://"+ops+"/v2/", nil); resp.StatusCode != 404 {
		t.Errorf("/v2/ on METRICS_ADDR: %d, want 404", resp.StatusCode)
	}
	if resp, _, _ := get(t, "GET", m2.URL+"/healthz", nil); resp.StatusCode != 403 {
		t.Errorf("/healthz on LISTEN_ADDR from a refused network: %d, want 403", resp.StatusCode)
	}
}

// listenAddr finds the address of the listener whose startup log line says
// it serves what.
func listenAddr(t *testing.T, m *mirror, what string) string {
	t.Helper()
	re := regexp.MustCompile(`msg=listening addr=(\S+) serves="?` + regexp.QuoteMeta(what))
	match := re.FindStringSubmatch(m.Logs.String())
	if match == nil {
		t.Fatalf("no listener for %s in the log:\n%s", what, m.Logs)
	}
	return match[1]
}

package main

import (
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// healthEnv is the environment "ecr-mirror healthcheck" runs with
// beside the mirror m in front of fake: the settings m was started
// with, its listener's real address, and more.
func healthEnv(fake *fakeecr.Server, m *mirror, more map[string]string) map[string]string {
	env := map[string]string{"UPSTREAM": fake.URL(), "AWS_REGION": "eu-west-1", "LISTEN_ADDR": m.Host}
	for k, v := range more {
		env[k] = v
	}
	return env
}

// slowOK are the health check's flags in tests that expect an answer:
// a timeout no loaded machine reaches, so that only the answer decides.
var slowOK = []string{"-timeout", "2m"}

// checkHealth runs "ecr-mirror healthcheck" with slowOK, then args.
func checkHealth(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return cli(t, env, append(append([]string{"healthcheck"}, slowOK...), args...)...)
}

// opsAddr is the METRICS_ADDR listener's address, from m's log.
func opsAddr(t *testing.T, m *mirror) string {
	t.Helper()
	match := regexp.MustCompile(`msg=listening addr=(\S+) serves="metrics and probes"`).FindStringSubmatch(m.Logs.String())
	if match == nil {
		t.Fatalf("no METRICS_ADDR listener in the log:\n%s", m.Logs)
	}
	return match[1]
}

// The health check passes while the mirror runs and fails, saying
// why, once it has stopped.
func TestHealthcheckPassesWhileTheMirrorRunsAndFailsOnceStopped(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{})
	env := healthEnv(fake, m, nil)
	code, out, errOut := checkHealth(t, env)
	if code != exitOK || !strings.Contains(out, "http://"+m.Host+"/healthz answered 200") {
		t.Fatalf("healthcheck of a running mirror: exit %d\n%s%s", code, out, errOut)
	}
	// Server flags after "--", as the server would take them.
	delete(env, "LISTEN_ADDR")
	if code, out, errOut := checkHealth(t, env, "--", "-listen-addr", m.Host); code != exitOK {
		t.Fatalf("healthcheck -- -listen-addr %s: exit %d\n%s%s", m.Host, code, out, errOut)
	}
	m.Stop()
	code, _, errOut = checkHealth(t, healthEnv(fake, m, nil))
	if code != exitFail || !strings.Contains(errOut, "no answer from http://"+m.Host+"/healthz (LISTEN_ADDR)") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("healthcheck of a stopped mirror: exit %d %q, want %d and one line saying it got no answer", code, errOut, exitFail)
	}
}

// With TLS on, the check asks over https and trusts the certificate
// in TLS_CERTIFICATE, whatever names it holds; another certificate
// fails it.
func TestHealthcheckOverTLSTrustsTheConfiguredCertificate(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	dir := t.TempDir()
	// Issued for the mirror's public name only, not the address asked.
	certFile, keyFile := tlstest.NewCA(t).IssueFiles(t, dir, "mirror.example.com")
	tlsEnv := map[string]string{"TLS_CERTIFICATE": certFile, "TLS_PRIVATE_KEY": keyFile}
	m := startMirror(t, fake, mirrorOpts{env: tlsEnv})
	code, out, errOut := checkHealth(t, healthEnv(fake, m, tlsEnv))
	if code != exitOK || !strings.Contains(out, "https://"+m.Host+"/healthz answered 200") {
		t.Fatalf("healthcheck over TLS: exit %d\n%s%s", code, out, errOut)
	}
	otherCert, otherKey := tlstest.NewCA(t).IssueFiles(t, t.TempDir(), "mirror.example.com")
	code, _, errOut = checkHealth(t, healthEnv(fake, m, map[string]string{"TLS_CERTIFICATE": otherCert, "TLS_PRIVATE_KEY": otherKey}))
	if code != exitFail || !strings.Contains(errOut, "not the one in TLS_CERTIFICATE "+otherCert) {
		t.Fatalf("healthcheck trusting another certificate: exit %d %q, want %d naming TLS_CERTIFICATE", code, errOut, exitFail)
	}
}

// ALLOW_NETWORKS holds for /healthz on LISTEN_ADDR: a list without
// loopback refuses the check, which says so; METRICS_ADDR, outside
// ALLOW_NETWORKS, is where the check then asks, and passes.
func TestHealthcheckUnderAllowNetworksWithoutLoopback(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	deny := map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8"}
	m := startMirror(t, fake, mirrorOpts{env: deny})
	code, _, errOut := checkHealth(t, healthEnv(fake, m, deny))
	if code != exitFail || !strings.Contains(errOut, "answered 403 Forbidden: DENIED") || !strings.Contains(errOut, "ALLOW_NETWORKS leaves out loopback") ||
		strings.Count(errOut, "\n") != 1 {
		t.Fatalf("healthcheck from outside ALLOW_NETWORKS: exit %d %q, want %d and 403 DENIED", code, errOut, exitFail)
	}
	withOps := map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8", "METRICS_ADDR": "127.0.0.1:0"}
	m = startMirror(t, fake, mirrorOpts{env: withOps})
	withOps["METRICS_ADDR"] = opsAddr(t, m)
	code, out, errOut := checkHealth(t, healthEnv(fake, m, withOps))
	if code != exitOK || !strings.Contains(out, "http://"+withOps["METRICS_ADDR"]+"/healthz") {
		t.Fatalf("healthcheck on METRICS_ADDR: exit %d\n%s%s", code, out, errOut)
	}
}

// A mirror that accepts the connection but never answers fails the
// check when -timeout runs out, and the reason names the flag.
func TestHealthcheckGivesUpAfterTimeout(t *testing.T) {
	t.Parallel()
	// Connections are accepted by the kernel and never answered.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	env := map[string]string{"UPSTREAM": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "LISTEN_ADDR": ln.Addr().String()}
	code, _, errOut := cli(t, env, "healthcheck", "-timeout", "100ms")
	if code != exitFail || !strings.Contains(errOut, "within 100ms (-timeout)") {
		t.Fatalf("healthcheck of a silent server: exit %d %q, want %d naming -timeout", code, errOut, exitFail)
	}
}

// Bad settings and flags fail the check (exit 1: Docker reserves 2)
// with a message naming what is wrong.
func TestHealthcheckRejectsBadInput(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "no upstream", env: map[string]string{}, want: "invalid configuration: UPSTREAM"},
		{name: "bad listen address", env: map[string]string{"UPSTREAM": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "LISTEN_ADDR": "nowhere"}, want: "LISTEN_ADDR"},
		{name: "unreadable certificate", env: map[string]string{"UPSTREAM": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
			"TLS_CERTIFICATE": "/nonexistent/cert.pem", "TLS_PRIVATE_KEY": "/nonexistent/key.pem"}, want: "TLS_CERTIFICATE: open /nonexistent/cert.pem"},
		{name: "unknown flag", env: map[string]string{}, args: []string{"-listen-addr", ":1"}, want: "-listen-addr"},
		{name: "zero timeout", env: map[string]string{}, args: []string{"-timeout", "0s"}, want: "-timeout 0s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := cli(t, tt.env, append([]string{"healthcheck"}, tt.args...)...)
			if code != exitFail || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d %q, want %d and a message with %q", code, errOut, exitFail, tt.want)
			}
		})
	}
}

package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// With TLS_CERTIFICATE set, the forward proxy speaks TLS with the
// registry listeners' certificate: a Go client whose proxy is
// https://USER:PASSWORD@mirror pulls an image by its ECR name, its
// login sent inside TLS; a wrong login gets 407.
func TestForwardProxyOverTLSWithLogin(t *testing.T) {
	t.Parallel()
	htpasswd := writeHtpasswd(t, map[string]string{"alice": "alice-pw"})
	p := startProxied(t, proxyOpts{tls: true, env: map[string]string{"HTPASSWD_FILE": htpasswd}})
	putImage(t, p.fake, "team/app", "v1", ociImage(t, linuxAMD64, 1))

	_, resp := p.connect(t, ecrName+":443")
	if resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("CONNECT over TLS without a login: %s, want 407", resp.Status)
	}
	if err := p.pullByUpstreamName(t, p.transport(t, "alice", "wrong"), "team/app", "v1"); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("pull through the TLS proxy with a wrong password: %v, want 407", err)
	}
	if err := p.pullByUpstreamName(t, p.transport(t, "alice", "alice-pw"), "team/app", "v1"); err != nil {
		t.Fatalf("pull through the TLS proxy with alice's login: %v\n%s", err, p.Logs)
	}
	if strings.Contains(p.Logs.String(), "alice-pw") {
		t.Error("the proxy password reached the log")
	}
}

// curl with --proxy https://… (trusting the listener's CA with
// --proxy-cacert, the mirror's CA with --cacert) fetches a manifest and
// a layer by the ECR name through the TLS proxy with a login; the same
// proxy named http:// fails, for the port speaks TLS only.
func TestForwardProxyOverTLSCurl(t *testing.T) {
	t.Parallel()
	curl := requireClientTool(t, "curl")
	htpasswd := writeHtpasswd(t, map[string]string{"alice": "alice-pw"})
	p := startProxied(t, proxyOpts{tls: true, env: map[string]string{"HTPASSWD_FILE": htpasswd}})
	img := newRawImage(23, nil)
	putRawImage(p.fake, "team/app", "v1", img)
	ca, proxyCA := p.caFile(t), p.listenerCAFile(t)
	fetch := func(proxy, path string) (string, error) {
		out, errOut, err := runTool(t, nil, curl, "-sS", "--fail", "--proxy", proxy, "--proxy-user", "alice:alice-pw",
			"--proxy-cacert", proxyCA, "--cacert", ca,
			"-H", "Accept: application/vnd.oci.image.manifest.v1+json", "https://"+ecrName+path)
		if err != nil {
			return "", fmt.Errorf("%w: %s", err, errOut)
		}
		return out, nil
	}
	for _, c := range []struct {
		path string
		want digest.Digest
	}{
		{"/v2/team/app/manifests/v1", img.Dgst},
		{"/v2/team/app/blobs/" + string(img.LayerDgst), img.LayerDgst},
	} {
		out, err := fetch(p.proxyURL(), c.path)
		if err != nil {
			t.Fatalf("curl through the TLS proxy, %s: %v", c.path, err)
		}
		if got := digest.FromString(out); got != c.want {
			t.Errorf("%s through the TLS proxy: %s, want %s", c.path, got, c.want)
		}
	}
	if _, err := fetch("http://"+p.proxy, "/v2/team/app/manifests/v1"); err == nil {
		t.Error("curl reached the registry through the TLS proxy port in plain HTTP")
	}
}

// The TLS proxy port answers a plain-HTTP CONNECT with no tunnel,
// offers HTTP/1.1 alone (CONNECT over HTTP/2 is another protocol), and
// with FORWARD_PROXY_OTHERS=tunnel passes a CONNECT made inside its TLS
// through untouched.
func TestForwardProxyOverTLSListener(t *testing.T) {
	t.Parallel()
	p := startProxied(t, proxyOpts{tls: true, env: map[string]string{"FORWARD_PROXY_OTHERS": "tunnel"}})

	c, err := net.Dial("tcp", p.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "CONNECT "+ecrName+":443 HTTP/1.1\r\nHost: "+ecrName+":443\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Error("a plain-HTTP CONNECT to the TLS proxy port got a tunnel")
	}

	tc, err := tls.Dial("tcp", p.proxy, &tls.Config{ServerName: "127.0.0.1", RootCAs: p.listenerCA.Pool(), NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatalf("TLS to the proxy port with the listener's certificate: %v", err)
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Errorf("the proxy port negotiated %q, want http/1.1", got)
	}
	tc.Close()
	if tc, err := tls.Dial("tcp", p.proxy, &tls.Config{ServerName: "127.0.0.1", RootCAs: p.listenerCA.Pool(), NextProtos: []string{"h2"}}); err == nil {
		if got := tc.ConnectionState().NegotiatedProtocol; got == "h2" {
			t.Error("the proxy port negotiated h2 with a client offering h2 alone")
		}
		tc.Close()
	}

	conn, resp := p.connect(t, outsideName+":443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT inside TLS with tunnel: %s", resp.Status)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.outside.Certificate())
	inner := tls.Client(conn, &tls.Config{ServerName: "example.com", RootCAs: pool})
	if err := inner.Handshake(); err != nil {
		t.Fatalf("TLS through the tunnel inside the proxy's TLS: %v", err)
	}
	if got := inner.ConnectionState().PeerCertificates[0]; !got.Equal(p.outside.Certificate()) {
		t.Errorf("tunnel: certificate %s, want the outside server's own", got.Subject)
	}
	if _, err := io.WriteString(inner, "GET / HTTP/1.1\r\nHost: "+outsideName+"\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(inner)
	if err != nil || !strings.Contains(string(body), "the outside server") {
		t.Errorf("through the tunnel: %q, %v", body, err)
	}
}

// skopeo whose HTTPS_PROXY is https://USER:PASSWORD@mirror copies an
// image by its ECR name through the TLS proxy: its certificate
// directory holds the mirror's CA and the listener's, the roots it
// checks the registry and the proxy with (only the mirror reaches that
// name: the copy can only have come through the proxy).
func TestForwardProxyOverTLSSkopeo(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	htpasswd := writeHtpasswd(t, map[string]string{"node": "node-pw"})
	p := startProxied(t, proxyOpts{tls: true, env: map[string]string{"HTPASSWD_FILE": htpasswd}})
	manifest, blobs := putImage(t, p.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))
	certs := t.TempDir()
	for name, pem := range map[string][]byte{"ca.crt": p.caPEM(t), "proxy-ca.crt": p.listenerCA.CertPEM()} {
		if err := os.WriteFile(filepath.Join(certs, name), pem, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proxy := "https://node:node-pw@" + p.proxy
	sk.env = append(sk.env, "HTTPS_PROXY="+proxy, "https_proxy="+proxy, "NO_PROXY=", "no_proxy=")
	out := t.TempDir()
	if err := sk.copy(t, "docker://"+ecrName+"/team/app:v1", "oci:"+out+":v1", "--src-tls-verify=true", "--src-cert-dir", certs); err != nil {
		t.Fatalf("copy through the TLS forward proxy: %v\n%s", err, p.Logs)
	}
	got, refs := readOCILayout(t, out)
	if want := append([]digest.Digest{manifest}, blobs...); refs["v1"] != manifest || !sameDigests(got, want) {
		t.Errorf("index.json %v, blobs %v; want v1 -> %s, blobs %v", refs, got, manifest, want)
	}
	if n := p.fake.Counters().BlobGet; n != int64(len(blobs)) {
		t.Errorf("ECR saw %d blob GETs, want %d (the mirror's, one per blob)", n, len(blobs))
	}
	if strings.Contains(p.Logs.String(), "node-pw") {
		t.Error("the proxy password reached the log")
	}
}

// containerd's ctr fetches an image by its ECR name through the TLS
// proxy with a login, trusting both CAs from SSL_CERT_FILE.
func TestForwardProxyOverTLSContainerd(t *testing.T) {
	t.Parallel()
	ctrd := startContainerd(t)
	htpasswd := writeHtpasswd(t, map[string]string{"node": "node-pw"})
	p := startProxied(t, proxyOpts{tls: true, env: map[string]string{"HTPASSWD_FILE": htpasswd}})
	manifest, blobs := putImage(t, p.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))
	roots := filepath.Join(t.TempDir(), "roots.crt")
	if err := os.WriteFile(roots, append(p.caPEM(t), p.listenerCA.CertPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy := "https://node:node-pw@" + p.proxy
	ctrd.env = append(ctrd.env, "HTTPS_PROXY="+proxy, "https_proxy="+proxy, "NO_PROXY=", "no_proxy=", "SSL_CERT_FILE="+roots)
	ref := ecrName + "/team/app:v1"
	if _, err := ctrd.fetch(t, t.TempDir(), ref); err != nil {
		t.Fatalf("fetching %s through the TLS forward proxy: %v\nmirror log:\n%s", ref, err, p.Logs)
	}
	checkFetched(t, ctrd, ref, manifest, blobs)
	if n := p.fake.Counters().BlobGet; n != int64(len(blobs)) {
		t.Errorf("ECR saw %d blob GETs, want %d", n, len(blobs))
	}
}

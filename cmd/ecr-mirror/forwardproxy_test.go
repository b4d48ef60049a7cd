package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// ecrName is the registry host the forward-proxy tests pull by: a real
// ECR name, which only the mirror resolves (to the fake's TLS listener).
const ecrName = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

// outsideName is a host that is no registry: the test's own TLS server.
const outsideName = "outside.example.test"

// proxied is a mirror with a forward proxy in front of a fake ECR that
// serves TLS as ecrName.
type proxied struct {
	*mirror
	fake  *fakeecr.Server
	proxy string // host:port of FORWARD_PROXY_ADDR
	// outside is the TLS server outsideName:443 leads to, outsideHits
	// the requests it answered.
	outside     *httptest.Server
	outsideHits *atomic.Int64
	// listenerCA issued the mirror's TLS_CERTIFICATE (for 127.0.0.1),
	// which the proxy listener serves too; nil: plain HTTP.
	listenerCA *tlstest.CA
}

// proxyOpts are the settings of startProxied beyond the defaults.
type proxyOpts struct {
	env map[string]string
	dir string
	tls bool // TLS_CERTIFICATE set: the listeners, the proxy's too, speak TLS
}

// startProxied starts a fake ECR reachable as ecrName:443 over TLS (its
// certificate from a CA only the mirror trusts), a TLS server as
// outsideName:443, and a mirror with FORWARD_PROXY_ADDR whose upstream
// is https://ecrName; only the mirror's dials know those names.
func startProxied(t *testing.T, o proxyOpts) *proxied {
	t.Helper()
	upCA := tlstest.NewCA(t)
	certPEM, keyPEM := upCA.Issue(t, ecrName)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	fake := fakeecr.Start(t, fakeecr.Options{TLS: &tls.Config{Certificates: []tls.Certificate{pair}}, DirectBlobs: true})
	hits := &atomic.Int64{}
	outside := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		io.WriteString(w, "the outside server\n")
	}))
	t.Cleanup(outside.Close)
	routes := map[string]string{ecrName + ":443": fake.TLSAddr(), outsideName + ":443": outside.Listener.Addr().String()}
	env := map[string]string{
		"UPSTREAM":           "https://" + ecrName,
		"FORWARD_PROXY_ADDR": "127.0.0.1:0",
	}
	var listenerCA *tlstest.CA
	if o.tls {
		listenerCA = tlstest.NewCA(t)
		env["TLS_CERTIFICATE"], env["TLS_PRIVATE_KEY"] = listenerCA.IssueFiles(t, t.TempDir(), "127.0.0.1")
	}
	for k, v := range o.env {
		env[k] = v
	}
	m := startMirror(t, fake, mirrorOpts{dir: o.dir, env: env, edit: func(cfg *settings.Config) {
		cfg.UpstreamRootCAs = upCA.Pool()
		cfg.UpstreamDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			to, ok := routes[addr]
			if !ok {
				return nil, fmt.Errorf("test dialer: no route to %s", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, to)
		}
	}})
	return &proxied{mirror: m, fake: fake, proxy: m.Extra[len(m.Extra)-1], outside: outside, outsideHits: hits, listenerCA: listenerCA}
}

// proxyURL is the forward proxy's URL: https:// when the mirror has TLS.
func (p *proxied) proxyURL() string {
	if p.listenerCA != nil {
		return "https://" + p.proxy
	}
	return "http://" + p.proxy
}

// listenerCAFile writes the CA of the listeners' certificate to a file,
// for curl's --proxy-cacert.
func (p *proxied) listenerCAFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "listener-ca.crt")
	if err := os.WriteFile(path, p.listenerCA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// caPEM is the forward proxy's CA certificate as the registry listener
// serves it at /ca.crt.
func (p *proxied) caPEM(t *testing.T) []byte {
	t.Helper()
	var resp *http.Response
	var body []byte
	var err error
	if p.listenerCA == nil {
		resp, body, err = get(t, http.MethodGet, p.URL+"/ca.crt", nil)
	} else {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.listenerCA.Pool()}}}
		if resp, err = c.Get("https://" + p.Host + "/ca.crt"); err == nil {
			defer resp.Body.Close()
			body, err = io.ReadAll(resp.Body)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ca.crt: %s: %s", resp.Status, body)
	}
	return body
}

// caFile writes the CA certificate from /ca.crt to a file, for curl and
// skopeo.
func (p *proxied) caFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mirror-ca.crt")
	if err := os.WriteFile(path, p.caPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// transport is an HTTP client's transport that uses the forward proxy
// (with user:password as its login, unless empty) and trusts its CA,
// and the listener's CA when the proxy speaks TLS (the transport's TLS
// configuration serves both).
func (p *proxied) transport(t *testing.T, user, password string) *http.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM(t)) {
		t.Fatal("/ca.crt holds no certificate")
	}
	u := &url.URL{Scheme: "http", Host: p.proxy}
	if p.listenerCA != nil {
		u.Scheme = "https"
		pool.AppendCertsFromPEM(p.listenerCA.CertPEM())
	}
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	return &http.Transport{Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
}

// connect sends CONNECT addr to the forward proxy (over TLS, trusting
// the listener's CA, when the mirror has TLS) with the extra header
// lines, and returns the connection and the proxy's answer.
func (p *proxied) connect(t *testing.T, addr string, header ...string) (net.Conn, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", p.proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p.listenerCA != nil {
		c = tls.Client(c, &tls.Config{ServerName: "127.0.0.1", RootCAs: p.listenerCA.Pool(), NextProtos: []string{"http/1.1"}})
		t.Cleanup(func() { c.Close() })
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", addr, err)
	}
	if resp.StatusCode == http.StatusOK && br.Buffered() > 0 {
		t.Fatalf("CONNECT %s: %d bytes after the answer", addr, br.Buffered())
	}
	return c, resp
}

// pullByUpstreamName pulls ecrName/repo:tag through the forward proxy
// with go-containerregistry, reading every blob (digests verified).
func (p *proxied) pullByUpstreamName(t *testing.T, tr http.RoundTripper, repo, tag string) error {
	t.Helper()
	ref, err := name.ParseReference(ecrName + "/" + repo + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithTransport(tr))
	if err != nil {
		return err
	}
	return readWhole(img)
}

// A Go client whose HTTPS_PROXY is the forward proxy pulls an image by
// its ECR name, unrenamed: the mirror intercepts the ECR host with a
// certificate for that host from its CA, and serves the pull from the
// cache; a second pull downloads no blob from ECR.
func TestForwardProxyServesTheECRHostFromTheCache(t *testing.T) {
	t.Parallel()
	p := startProxied(t, proxyOpts{})
	manifest, blobs := putImage(t, p.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))

	if err := p.pullByUpstreamName(t, p.transport(t, "", ""), "team/app", "v1"); err != nil {
		t.Fatalf("first pull through the forward proxy: %v\n%s", err, p.Logs)
	}
	waitStored(t, p.mirror, append(blobs, manifest)...)
	first := p.fake.Counters().BlobGet
	if first != int64(len(blobs)) {
		t.Errorf("first pull: ECR saw %d blob GETs, want %d (one per blob)", first, len(blobs))
	}
	if err := p.pullByUpstreamName(t, p.transport(t, "", ""), "team/app", "v1"); err != nil {
		t.Fatalf("second pull: %v", err)
	}
	if got := p.fake.Counters().BlobGet; got != first {
		t.Errorf("second pull: ECR saw %d more blob GETs, want none", got-first)
	}
	if n := metric(t, p.mirror, `ecr_mirror_forward_proxy_requests_total{outcome="intercepted"}`); n < 2 {
		t.Errorf("intercepted CONNECTs counted: %v, want one per connection of the two pulls", n)
	}
}

// The certificate a client gets for the ECR host is for that host only,
// issued by the CA the registry listener serves at /ca.crt, which is the
// one in FORWARD_PROXY_CA_DIR.
func TestForwardProxyCertificateIsTheHostsFromTheMirrorCA(t *testing.T) {
	t.Parallel()
	p := startProxied(t, proxyOpts{})
	caPEM := p.caPEM(t)
	onDisk, err := os.ReadFile(filepath.Join(p.Dir, "forward-proxy-ca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(caPEM) {
		t.Error("/ca.crt is not FORWARD_PROXY_CA_DIR's ca.crt")
	}
	block, _ := pem.Decode(caPEM)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	conn, resp := p.connect(t, ecrName+":443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	tc := tls.Client(conn, &tls.Config{ServerName: ecrName, RootCAs: pool})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS through the proxy, trusting only the mirror's CA: %v", err)
	}
	leaf := tc.ConnectionState().PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != ecrName || len(leaf.IPAddresses) != 0 {
		t.Errorf("leaf names %v %v, want only %s", leaf.DNSNames, leaf.IPAddresses, ecrName)
	}
	if err := leaf.CheckSignatureFrom(caCert); err != nil {
		t.Errorf("leaf is not signed by the mirror's CA: %v", err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 48*3600e9 {
		t.Errorf("leaf lives %v: want a short-lived certificate", life)
	}
}

// curl with --proxy and the mirror's CA fetches a manifest and a blob
// from the ECR host by its own name, bytes and digests as ECR has them.
func TestForwardProxyCurl(t *testing.T) {
	t.Parallel()
	curl := requireClientTool(t, "curl")
	p := startProxied(t, proxyOpts{})
	img := newRawImage(17, nil)
	putRawImage(p.fake, "team/app", "v1", img)
	ca := p.caFile(t)
	fetch := func(path string) []byte {
		out, _, err := runTool(t, nil, curl, "-sS", "--fail", "--proxy", "http://"+p.proxy, "--cacert", ca,
			"-H", "Accept: application/vnd.oci.image.manifest.v1+json", "https://"+ecrName+path)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(out)
	}
	if got := digest.FromBytes(fetch("/v2/team/app/manifests/v1")); got != img.Dgst {
		t.Errorf("manifest through curl: %s, want %s", got, img.Dgst)
	}
	if got := digest.FromBytes(fetch("/v2/team/app/blobs/" + string(img.LayerDgst))); got != img.LayerDgst {
		t.Errorf("layer through curl: %s, want %s", got, img.LayerDgst)
	}
	// A plain http:// request for the host is served by the mirror too.
	out, _, err := runTool(t, nil, curl, "-sS", "--fail", "--proxy", "http://"+p.proxy,
		"http://"+ecrName+"/v2/team/app/blobs/"+string(img.LayerDgst))
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes([]byte(out)); got != img.LayerDgst {
		t.Errorf("layer through curl over http://: %s, want %s", got, img.LayerDgst)
	}
	// Without the mirror's CA, curl refuses the certificate.
	if _, _, err := runTool(t, nil, curl, "-sS", "--fail", "--proxy", "http://"+p.proxy, "https://"+ecrName+"/v2/"); err == nil {
		t.Error("curl trusted the intercepted host without the mirror's CA")
	}
}

// A host that is no registry is refused with 403 naming it and the
// setting (the default, deny), and with FORWARD_PROXY_OTHERS=tunnel is
// passed through untouched: the client sees that server's own
// certificate.
func TestForwardProxyOtherHosts(t *testing.T) {
	t.Parallel()
	t.Run("deny", func(t *testing.T) {
		t.Parallel()
		p := startProxied(t, proxyOpts{})
		_, resp := p.connect(t, outsideName+":443")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), outsideName) || !strings.Contains(string(body), "FORWARD_PROXY_OTHERS") {
			t.Errorf("CONNECT to a host that is no registry: %s %q, want 403 naming the host and FORWARD_PROXY_OTHERS", resp.Status, body)
		}
		if n := p.outsideHits.Load(); n != 0 {
			t.Errorf("the outside server saw %d requests", n)
		}
		if n := metric(t, p.mirror, `ecr_mirror_forward_proxy_requests_total{outcome="denied"}`); n != 1 {
			t.Errorf("denied requests counted: %v, want 1", n)
		}
	})
	t.Run("tunnel", func(t *testing.T) {
		t.Parallel()
		p := startProxied(t, proxyOpts{env: map[string]string{"FORWARD_PROXY_OTHERS": "tunnel"}})
		conn, resp := p.connect(t, outsideName+":443")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT with tunnel: %s", resp.Status)
		}
		pool := x509.NewCertPool()
		pool.AddCert(p.outside.Certificate())
		tc := tls.Client(conn, &tls.Config{ServerName: "example.com", RootCAs: pool})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS through the tunnel: %v", err)
		}
		if got := tc.ConnectionState().PeerCertificates[0]; !got.Equal(p.outside.Certificate()) {
			t.Errorf("the client saw certificate %q, not the server's own", got.Subject)
		}
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: "+outsideName+"\r\nConnection: close\r\n\r\n")
		resp2, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp2.Body)
		if string(body) != "the outside server\n" {
			t.Errorf("through the tunnel: %q", body)
		}
		if n := metric(t, p.mirror, `ecr_mirror_forward_proxy_requests_total{outcome="tunnelled"}`); n != 1 {
			t.Errorf("tunnelled requests counted: %v, want 1", n)
		}
	})
}

// Access rules apply to the forward proxy's clients by their
// Proxy-Authorization: none gets 407 with Proxy-Authenticate, a wrong
// password too, a user the rules grant the repository pulls it, and
// one they do not is denied it.
func TestForwardProxyAccessByProxyLogin(t *testing.T) {
	t.Parallel()
	htpasswd := writeHtpasswd(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})
	p := startProxied(t, proxyOpts{env: map[string]string{
		"HTPASSWD_FILE": htpasswd,
		"ACCESS_RULES":  "pull:alice:team/; pull:bob:other/",
	}})
	putImage(t, p.fake, "team/app", "v1", ociImage(t, linuxAMD64, 1))

	_, resp := p.connect(t, ecrName+":443")
	if resp.StatusCode != http.StatusProxyAuthRequired || !strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), "Basic ") {
		t.Errorf("CONNECT without a login: %s, Proxy-Authenticate %q; want 407 with a Basic challenge", resp.Status, resp.Header.Get("Proxy-Authenticate"))
	}
	if err := p.pullByUpstreamName(t, p.transport(t, "alice", "wrong"), "team/app", "v1"); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("pull with a wrong proxy password: %v, want 407", err)
	}
	if err := p.pullByUpstreamName(t, p.transport(t, "alice", "alice-pw"), "team/app", "v1"); err != nil {
		t.Errorf("alice, whom the rules grant team/, cannot pull: %v\n%s", err, p.Logs)
	}
	err := p.pullByUpstreamName(t, p.transport(t, "bob", "bob-pw"), "team/app", "v1")
	if err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("bob, whom no rule grants team/, pulled it: %v", err)
	}
	if strings.Contains(p.Logs.String(), "alice-pw") || strings.Contains(p.Logs.String(), "bob-pw") {
		t.Error("a proxy password reached the log")
	}
}

// A generated CA's key is its user's only (0600, directory 0700), and a
// restart on the same CACHE_DIR issues from the same CA.
func TestForwardProxyCAIsKeptAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startProxied(t, proxyOpts{dir: dir})
	first := p.caPEM(t)
	p.Stop()
	caDir := filepath.Join(dir, "forward-proxy-ca")
	for path, want := range map[string]os.FileMode{caDir: 0o700, filepath.Join(caDir, "ca.key"): 0o600} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	key, _ := os.ReadFile(filepath.Join(caDir, "ca.key"))
	if strings.Contains(p.Logs.String(), strings.TrimSpace(string(key))) || strings.Contains(p.Logs.String(), "PRIVATE KEY") {
		t.Error("the CA key reached the log")
	}
	if !strings.Contains(p.Logs.String(), "sha256_fingerprint") {
		t.Error("the log does not give the CA's fingerprint")
	}
	if pemLine := strings.ReplaceAll(strings.TrimSpace(string(first)), "\n", `\n`); !strings.Contains(p.Logs.String(), pemLine) {
		t.Error("the first start's log does not print the generated CA's certificate")
	}
	again := startProxied(t, proxyOpts{dir: dir})
	if string(again.caPEM(t)) != string(first) {
		t.Error("a restart generated another CA")
	}
}

// skopeo with HTTPS_PROXY set to the forward proxy and the mirror's CA
// in its certificate directory (TLS verified) copies an image by its
// ECR name, bit for bit; a second copy downloads no blob from ECR.
func TestForwardProxySkopeo(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	p := startProxied(t, proxyOpts{})
	manifest, blobs := putImage(t, p.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))
	certs := t.TempDir()
	if err := os.WriteFile(filepath.Join(certs, "ca.crt"), p.caPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	sk.env = append(sk.env, "HTTPS_PROXY=http://"+p.proxy, "https_proxy=http://"+p.proxy, "NO_PROXY=", "no_proxy=")
	src := "docker://" + ecrName + "/team/app:v1"
	want := append([]digest.Digest{manifest}, blobs...)
	for i := range 2 {
		out := t.TempDir()
		if err := sk.copy(t, src, "oci:"+out+":v1", "--src-tls-verify=true", "--src-cert-dir", certs); err != nil {
			t.Fatalf("copy %d through the forward proxy: %v\n%s", i+1, err, p.Logs)
		}
		got, refs := readOCILayout(t, out)
		if refs["v1"] != manifest || !sameDigests(got, want) {
			t.Errorf("copy %d: index.json %v, blobs %v; want v1 -> %s, blobs %v", i+1, refs, got, manifest, want)
		}
		if i == 0 {
			waitStored(t, p.mirror, want...)
		}
		if n := p.fake.Counters().BlobGet; n != int64(len(blobs)) {
			t.Errorf("after copy %d: ECR saw %d blob GETs, want %d (one per blob, the first time)", i+1, n, len(blobs))
		}
	}
}

// containerd (ctr, which resolves and fetches itself; the daemon's CRI
// pulls honour the same variables) with HTTPS_PROXY set to the forward
// proxy and the mirror's CA as SSL_CERT_FILE pulls an image by its ECR
// name, with no hosts.toml: the requests keep the image's own path.
func TestForwardProxyContainerd(t *testing.T) {
	t.Parallel()
	ctrd := startContainerd(t)
	p := startProxied(t, proxyOpts{})
	manifest, blobs := putImage(t, p.fake, "team/app", "v1", ociImage(t, linuxAMD64, 2))
	ctrd.env = append(ctrd.env, "HTTPS_PROXY=http://"+p.proxy, "https_proxy=http://"+p.proxy, "NO_PROXY=", "no_proxy=",
		"SSL_CERT_FILE="+p.caFile(t))
	ref := ecrName + "/team/app:v1"
	sent, err := ctrd.fetch(t, t.TempDir(), ref)
	if err != nil {
		t.Fatalf("fetching %s through the forward proxy: %v\nmirror log:\n%s", ref, err, p.Logs)
	}
	for _, req := range sent {
		if !strings.Contains(req, " /v2/team/app/") || strings.Contains(req, "ns=") {
			t.Errorf("containerd sent %q: want the image's own path, no ns", req)
		}
	}
	if len(sent) == 0 {
		t.Error("ctr dumped no request")
	}
	checkFetched(t, ctrd, ref, manifest, blobs)
	if n := p.fake.Counters().BlobGet; n != int64(len(blobs)) {
		t.Errorf("ECR saw %d blob GETs, want %d", n, len(blobs))
	}
}

// A FORWARD_PROXY_CA_DIR holding half a CA stops the start with an
// error naming the setting and the directory.
func TestForwardProxyRefusesHalfACA(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	caDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(caDir, "ca.crt"), tlstest.NewCA(t).CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := mirrorConfig(t, fake, mirrorOpts{env: map[string]string{"FORWARD_PROXY_ADDR": "127.0.0.1:0", "FORWARD_PROXY_CA_DIR": caDir}})
	err := run(context.Background(), cfg, slog.New(slog.DiscardHandler), func([]net.Addr) { t.Error("the mirror started") })
	if err == nil || !strings.Contains(err.Error(), "FORWARD_PROXY_CA_DIR "+caDir) || !strings.Contains(err.Error(), "ca.key") {
		t.Errorf("run: %v, want an error naming FORWARD_PROXY_CA_DIR, the directory and the missing key", err)
	}
}

// Stopping the mirror closes the forward proxy's intercepted connections
// and tunnels too: the server that handed them over does not track them.
func TestForwardProxyShutdownClosesTunnels(t *testing.T) {
	t.Parallel()
	p := startProxied(t, proxyOpts{env: map[string]string{"FORWARD_PROXY_OTHERS": "tunnel"}})
	intercepted, resp := p.connect(t, ecrName+":443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %s", ecrName, resp.Status)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM(t))
	tc := tls.Client(intercepted, &tls.Config{ServerName: ecrName, RootCAs: pool})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tunnel, resp := p.connect(t, outsideName+":443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %s", outsideName, resp.Status)
	}
	p.Stop()
	for name, c := range map[string]net.Conn{"intercepted": tc, "tunnel": tunnel} {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("the %s connection is still open after the mirror stopped", name)
		}
	}
}

// Docker Hub, a FORWARD_PROXY_REGISTRIES entry mapped by PULL_THROUGHS,
// is intercepted under its API hosts and served from the ECR
// pull-through-cache prefix, official images under library/.
func TestForwardProxyServesDockerHubFromItsECRPrefix(t *testing.T) {
	t.Parallel()
	p := startProxied(t, proxyOpts{env: map[string]string{
		"PULL_THROUGHS":            "docker.io=docker-hub",
		"FORWARD_PROXY_REGISTRIES": "docker.io",
	}})
	_, blobs := putImage(t, p.fake, "docker-hub/library/alpine", "3", ociImage(t, linuxAMD64, 1))
	// go-containerregistry names Docker Hub index.docker.io.
	ref, err := name.ParseReference("alpine:3")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithTransport(p.transport(t, "", "")))
	if err == nil {
		err = readWhole(img)
	}
	if err != nil {
		t.Fatalf("pulling alpine:3 through the forward proxy: %v\n%s", err, p.Logs)
	}
	if got := requestsFor(p.fake.Counters().Requests, "docker-hub/library/alpine"); len(got) == 0 {
		t.Error("ECR saw no request for docker-hub/library/alpine")
	}
	if n := p.fake.Counters().BlobGet; n != int64(len(blobs)) {
		t.Errorf("ECR saw %d blob GETs, want %d", n, len(blobs))
	}
	// registry-1.docker.io, which the Docker daemon and containerd use,
	// gets a certificate for that name.
	conn, resp := p.connect(t, "registry-1.docker.io:443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT registry-1.docker.io: %s", resp.Status)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM(t))
	if err := tls.Client(conn, &tls.Config{ServerName: "registry-1.docker.io", RootCAs: pool}).Handshake(); err != nil {
		t.Errorf("TLS for registry-1.docker.io: %v", err)
	}
}

// ALLOW_NETWORKS holds on the forward proxy: a client from another
// network is refused (403) before any host is looked at, a client from
// an allowed one is served.
func TestForwardProxyAccessByNetwork(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		networks string
		status   int
	}{
		{"10.0.0.0/8", http.StatusForbidden},
		{"127.0.0.0/8", http.StatusOK},
	} {
		t.Run(tt.networks, func(t *testing.T) {
			t.Parallel()
			p := startProxied(t, proxyOpts{env: map[string]string{"ALLOW_NETWORKS": tt.networks}})
			_, resp := p.connect(t, ecrName+":443")
			if resp.StatusCode != tt.status {
				t.Errorf("CONNECT from 127.0.0.1 with ALLOW_NETWORKS=%s: %s, want %d", tt.networks, resp.Status, tt.status)
			}
		})
	}
}

package main

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// gateUsers are two teams sharing one mirror, each allowed its own prefix.
var gateUsers = map[string]string{"alice": "alice-pass", "bob": "bob-pass"}

const gateRules = "pull:alice:team-a/; pull:bob:team-b/"

// asUser sends one request to the mirror with a user's Basic credentials.
func asUser(t *testing.T, m *mirror, user, method, path string, hdr http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, m.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.SetBasicAuth(user, gateUsers[user])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// pullAs pulls repo:tag through the mirror with go-containerregistry,
// every layer read to the end, as user.
func pullAs(t *testing.T, m *mirror, user, ref string) error {
	t.Helper()
	r, err := name.ParseReference(m.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: user, Password: gateUsers[user]}))
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc) // verified against its digest at EOF
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Two teams, two prefixes: once bob has pulled team-b's image, alice
// still gets none of it under a repository of her own, by any digest
// request (GET, HEAD, Range, manifest), also after a restart with ECR
// down, while bob keeps pulling it offline.
func TestGateTeamsShareNothing(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := ociImage(t, linuxAMD64, 2)
	manifest, blobs := putImage(t, fake, "team-b/private", "v1", img)
	putImage(t, fake, "team-a/app", "v1", ociImage(t, linuxAMD64, 1))
	env := map[string]string{
		"HTPASSWD_FILE":  writeHtpasswd(t, gateUsers),
		"ACCESS_RULES":   gateRules,
		"STALE_IF_ERROR": "always",
	}
	m := startMirror(t, fake, mirrorOpts{env: env})
	if err := pullAs(t, m, "bob", "team-b/private:v1"); err != nil {
		t.Fatalf("bob pulls his image: %v", err)
	}
	waitStored(t, m, append([]digest.Digest{manifest}, blobs...)...)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[len(layers)-1].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(rc)
	rc.Close()
	layerDgst := blobs[len(layers)-1] // putImage lists the layers, then the config
	if err != nil || digest.FromBytes(layer) != layerDgst {
		t.Fatalf("blob %s is not the last layer (%v)", layerDgst, err)
	}

	probe := func(t *testing.T, m *mirror, wantStatus func(int) bool, want string) {
		t.Helper()
		for _, c := range []struct {
			method, path string
			hdr          http.Header
		}{
			{http.MethodGet, "/v2/team-a/app/blobs/" + layerDgst.String(), nil},
			{http.MethodHead, "/v2/team-a/app/blobs/" + layerDgst.String(), nil},
			{http.MethodGet, "/v2/team-a/app/blobs/" + layerDgst.String(), http.Header{"Range": {"bytes=10-99"}}},
			{http.MethodGet, "/v2/team-a/app/manifests/" + manifest.String(), nil},
			{http.MethodHead, "/v2/team-a/app/manifests/" + manifest.String(), nil},
			{http.MethodGet, "/v2/team-a/anything/blobs/" + layerDgst.String(), nil},
		} {
			status, body := asUser(t, m, "alice", c.method, c.path, c.hdr)
			if !wantStatus(status) || bytes.Contains(body, layer[10:99]) {
				t.Errorf("alice %s %s (Range %q): %d, %d bytes; want %s without team-b's content",
					c.method, c.path, c.hdr.Get("Range"), status, len(body), want)
			}
		}
		if status, _ := asUser(t, m, "alice", http.MethodGet, "/v2/team-b/private/manifests/v1", nil); status != http.StatusForbidden {
			t.Errorf("alice GET team-b/private:v1: %d, want 403", status)
		}
	}
	probe(t, m, func(s int) bool { return s == http.StatusNotFound }, "404")

	// Offline after a restart: what bob pulled stays his alone.
	m.Stop()
	fake.SetDown(true)
	m = startMirror(t, fake, mirrorOpts{dir: m.Dir, env: env})
	if err := pullAs(t, m, "bob", "team-b/private:v1"); err != nil {
		t.Fatalf("bob pulls by tag offline after a restart: %v", err)
	}
	if err := pullAs(t, m, "bob", "team-b/private@"+manifest.String()); err != nil {
		t.Fatalf("bob pulls by digest offline after a restart: %v", err)
	}
	probe(t, m, func(s int) bool { return s >= 500 }, "a 5xx (ECR cannot confirm)")
	if strings.Contains(m.Logs.String(), gateUsers["alice"]) {
		t.Error("the logs hold a password")
	}
}

// A blob pushed with the exact bytes of another repository's manifest
// leaves that manifest pullable by skopeo, by tag and by digest, with
// the type upstream declared.
func TestPushedBlobDoesNotRetypeManifest(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: pushEnv})
	img := ociImage(t, linuxAMD64, 1)
	manifest, _ := putImage(t, fake, "team-b/private", "v1", img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.NewRepository(m.Host+"/team-a/x", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(dst, static.NewLayer(raw, types.OCILayer), remote.WithTransport(newTransport(t))); err != nil {
		t.Fatalf("pushing the manifest's bytes as a blob: %v", err)
	}
	waitStored(t, m, manifest)

	for _, ref := range []struct{ image, path string }{
		{"team-b/private:v1", "team-b/private/manifests/v1"},
		{"team-b/private@" + manifest.String(), "team-b/private/manifests/" + manifest.String()},
	} {
		dir := t.TempDir()
		if err := sk.copy(t, "docker://"+m.Host+"/"+ref.image, "dir:"+dir); err != nil {
			t.Fatalf("skopeo copy %s after the blob push: %v", ref.image, err)
		}
		if _, top := readDirLayout(t, dir); top != manifest {
			t.Errorf("skopeo copied manifest %s for %s, want %s", top, ref.image, manifest)
		}
		resp, _, err := get(t, http.MethodHead, m.URL+"/v2/"+ref.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != string(types.OCIManifestSchema1) {
			t.Errorf("HEAD %s: Content-Type %q, want %s", ref.path, ct, types.OCIManifestSchema1)
		}
	}
}

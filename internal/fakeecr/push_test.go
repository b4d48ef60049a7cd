package fakeecr

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// send is do with a request body.
func send(t *testing.T, c *http.Client, method, url string, body []byte, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{Response: resp, body: b, err: err}
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d (body %q)", r.Request.Method, r.Request.URL, r.StatusCode, status, r.body)
	}
}

// startUpload POSTs a new upload and returns its absolute Location.
func startUpload(t *testing.T, f *Server, c *http.Client, auth, repo string) string {
	t.Helper()
	r := send(t, c, http.MethodPost, f.URL()+"/v2/"+repo+"/blobs/uploads/", nil, auth)
	wantStatus(t, r, http.StatusAccepted)
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, f.URL()+"/v2/"+repo+"/blobs/uploads/") {
		t.Fatalf("Location %q is not an absolute upload URL on the registry", loc)
	}
	if id := r.Header.Get("Docker-Upload-UUID"); id == "" || !strings.HasSuffix(loc, "/"+id) {
		t.Fatalf("Docker-Upload-UUID %q does not end Location %q", id, loc)
	}
	if rng := r.Header.Get("Range"); rng != "0-0" {
		t.Fatalf("Range %q, want 0-0", rng)
	}
	return loc
}

// A chunked upload: POST, PATCHes in order, a status check, and a PUT
// that completes it; chunks out of order are refused with the Range the
// upload has.
func TestPushChunkedUpload(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	data := bytes.Repeat([]byte("0123456789"), 1000)
	dgst := digest.FromBytes(data)

	loc := startUpload(t, f, c, auth, "team/app")
	r := send(t, c, http.MethodPatch, loc, data[:4000], auth, "Content-Range: 0-3999", "Content-Type: application/octet-stream")
	wantStatus(t, r, http.StatusAccepted)
	if r.Header.Get("Range") != "0-3999" || r.Header.Get("Location") != loc {
		t.Fatalf("PATCH answered Range %q Location %q", r.Header.Get("Range"), r.Header.Get("Location"))
	}
	r = send(t, c, http.MethodPatch, loc, data[5000:], auth, "Content-Range: 5000-9999")
	wantOCIError(t, r, http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid)
	if r.Header.Get("Range") != "0-3999" {
		t.Errorf("416 Range %q, want 0-3999", r.Header.Get("Range"))
	}
	r = send(t, c, http.MethodPatch, loc, data[4000:], auth) // no Content-Range: appended
	wantStatus(t, r, http.StatusAccepted)
	r = do(t, c, http.MethodGet, loc, auth)
	wantStatus(t, r, http.StatusNoContent)
	if r.Header.Get("Range") != "0-9999" {
		t.Fatalf("status Range %q", r.Header.Get("Range"))
	}
	if f.HasBlob("team/app", dgst) {
		t.Fatal("blob stored before the upload was completed")
	}
	r = send(t, c, http.MethodPut, loc+"?digest="+dgst.String(), nil, auth)
	wantStatus(t, r, http.StatusCreated)
	if r.Header.Get("Location") != f.URL()+"/v2/team/app/blobs/"+dgst.String() || r.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Fatalf("PUT answered Location %q digest %q", r.Header.Get("Location"), r.Header.Get("Docker-Content-Digest"))
	}
	if !f.HasBlob("team/app", dgst) {
		t.Fatal("completed blob not stored")
	}
	// The blob is served like any other.
	r = do(t, c, http.MethodGet, f.URL()+"/v2/team/app/blobs/"+dgst.String(), auth)
	wantStatus(t, r, http.StatusTemporaryRedirect)
	// The upload is over.
	wantOCIError(t, send(t, c, http.MethodPatch, loc, []byte("x"), auth), http.StatusNotFound, codeBlobUploadUnknown)

	got := f.PushCounters()
	want := PushCounters{UploadsStarted: 1, Patches: 2, BlobPuts: 1, UploadStatus: 1, Errors: 2, BytesReceived: int64(len(data))} // refused chunks are not read
	if got != want {
		t.Fatalf("PushCounters = %+v, want %+v", got, want)
	}
}

// A PUT whose digest does not match the bytes is refused and ends the
// upload; nothing is stored.
func TestPushDigestMismatch(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	loc := startUpload(t, f, c, auth, "team/app")
	wantStatus(t, send(t, c, http.MethodPatch, loc, []byte("hello"), auth), http.StatusAccepted)
	wrong := digest.FromString("something else")
	r := send(t, c, http.MethodPut, loc+"?digest="+wrong.String(), []byte(" world"), auth)
	wantOCIError(t, r, http.StatusBadRequest, codeDigestInvalid)
	if f.HasBlob("team/app", wrong) || f.HasBlob("team/app", digest.FromString("hello world")) {
		t.Fatal("a mismatched upload was stored")
	}
	wantOCIError(t, do(t, c, http.MethodGet, loc, auth), http.StatusNotFound, codeBlobUploadUnknown)
	wantOCIError(t, send(t, c, http.MethodPut, startUpload(t, f, c, auth, "team/app"), nil, auth), http.StatusBadRequest, codeDigestInvalid)
}

// Whole-blob POSTs and cross-repository mounts.
func TestPushMonolithicAndMount(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	data := []byte("a whole blob in one request")
	dgst := digest.FromBytes(data)
	unknown := digest.FromString("nobody has this")

	tests := []struct {
		name, repo, query string
		body              []byte
		status            int
		code              string
		stored            digest.Digest // then in repo
	}{
		{name: "monolithic", repo: "team/app", query: "?digest=" + dgst.String(), body: data, status: http.StatusCreated, stored: dgst},
		{name: "monolithic mismatch", repo: "team/app", query: "?digest=" + unknown.String(), body: data, status: http.StatusBadRequest, code: codeDigestInvalid},
		{name: "monolithic bad digest", repo: "team/app", query: "?digest=sha256:zz", body: data, status: http.StatusBadRequest, code: codeDigestInvalid},
		{name: "mount", repo: "team/other", query: "?mount=" + dgst.String() + "&from=team/app", status: http.StatusCreated, stored: dgst},
		{name: "mount of an unknown blob starts an upload", repo: "team/third", query: "?mount=" + unknown.String() + "&from=team/app", status: http.StatusAccepted},
		{name: "bad name", repo: "Team/App", status: http.StatusBadRequest, code: codeNameInvalid},
	}
	for _, tt := range tests { // in order: the mount needs the monolithic upload
		t.Run(tt.name, func(t *testing.T) {
			r := send(t, c, http.MethodPost, f.URL()+"/v2/"+tt.repo+"/blobs/uploads/"+tt.query, tt.body, auth)
			if tt.code != "" {
				wantOCIError(t, r, tt.status, tt.code)
				return
			}
			wantStatus(t, r, tt.status)
			if tt.stored == "" {
				return
			}
			if loc := r.Header.Get("Location"); loc != f.URL()+"/v2/"+tt.repo+"/blobs/"+tt.stored.String() {
				t.Errorf("Location %q", loc)
			}
			if !f.HasBlob(tt.repo, tt.stored) {
				t.Errorf("%s does not hold %s", tt.repo, tt.stored)
			}
		})
	}
	if got := f.PushCounters(); got.MonolithicUploads != 1 || got.Mounts != 1 || got.UploadsStarted != 1 {
		t.Errorf("PushCounters = %+v", got)
	}
}

// Manifest PUTs by tag and by digest, and what ECR refuses.
func TestPushManifest(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	cfg := f.PutBlob("team/app", []byte("{}"))
	layer := f.PutBlob("team/app", []byte("layer"))
	missing := digest.FromString("not pushed")
	manifest := func(layer digest.Digest) []byte {
		return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"digest":%q,"size":2},"layers":[{"digest":%q,"size":5}]}`,
			oci.MediaTypeImageManifest, cfg, layer)
	}
	good := manifest(layer)
	goodDgst := digest.FromBytes(good)
	index := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"manifests":[{"digest":%q}]}`, oci.MediaTypeImageIndex, goodDgst)
	ct := "Content-Type: " + oci.MediaTypeImageManifest

	tests := []struct {
		name, repo, ref string
		body            []byte
		hdr             string
		status          int
		code            string
	}{
		{name: "index before its manifest", repo: "team/app", ref: "multi", body: index, hdr: "Content-Type: " + oci.MediaTypeImageIndex, status: 400, code: codeManifestUnknown},
		{name: "by tag", repo: "team/app", ref: "v1", body: good, hdr: ct, status: 201},
		{name: "by digest", repo: "team/app", ref: goodDgst.String(), body: good, hdr: ct, status: 201},
		{name: "index", repo: "team/app", ref: "multi", body: index, hdr: "Content-Type: " + oci.MediaTypeImageIndex, status: 201},
		{name: "digest mismatch", repo: "team/app", ref: missing.String(), body: good, hdr: ct, status: 400, code: codeDigestInvalid},
		{name: "layer missing", repo: "team/app", ref: "v2", body: manifest(missing), hdr: ct, status: 400, code: codeBlobUploadUnknown},
		{name: "layers in another repository", repo: "team/other", ref: "v1", body: good, hdr: ct, status: 400, code: codeBlobUploadUnknown},
		{name: "bad tag", repo: "team/app", ref: ".v1", body: good, hdr: ct, status: 400, code: codeTagInvalid},
		{name: "not JSON", repo: "team/app", ref: "v3", body: []byte("nope"), hdr: ct, status: 400, code: codeManifestInvalid},
	}
	for _, tt := range tests { // in order: the index needs its manifest
		t.Run(tt.name, func(t *testing.T) {
			r := send(t, c, http.MethodPut, f.URL()+"/v2/"+tt.repo+"/manifests/"+tt.ref, tt.body, auth, tt.hdr)
			if tt.code != "" {
				wantOCIError(t, r, tt.status, tt.code)
				return
			}
			wantStatus(t, r, tt.status)
			dgst := digest.FromBytes(tt.body)
			if r.Header.Get("Docker-Content-Digest") != dgst.String() || r.Header.Get("Location") != f.URL()+"/v2/"+tt.repo+"/manifests/"+dgst.String() {
				t.Fatalf("answered digest %q Location %q", r.Header.Get("Docker-Content-Digest"), r.Header.Get("Location"))
			}
			if !f.HasManifest(tt.repo, dgst) {
				t.Fatal("manifest not stored")
			}
		})
	}
	if d, ok := f.ResolveTag("team/app", "v1"); !ok || d != goodDgst {
		t.Fatalf("tag v1 names %s, want %s", d, goodDgst)
	}
	r := do(t, c, http.MethodGet, f.URL()+"/v2/team/app/manifests/v1", auth)
	if r.StatusCode != 200 || !bytes.Equal(r.body, good) || r.Header.Get("Content-Type") != oci.MediaTypeImageManifest {
		t.Fatalf("GET of the pushed manifest: %d %q %q", r.StatusCode, r.Header.Get("Content-Type"), r.body)
	}
	if got := f.PushCounters().ManifestPuts; got != 3 {
		t.Errorf("ManifestPuts = %d, want 3", got)
	}
}

// Pushes need a token like pulls; other writes stay unsupported.
func TestPushAuthAndUnsupported(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	wantOCIError(t, send(t, c, http.MethodPost, f.URL()+"/v2/team/app/blobs/uploads/", nil), http.StatusUnauthorized, codeUnauthorized)
	wantOCIError(t, send(t, c, http.MethodPut, f.URL()+"/v2/team/app/manifests/v1", []byte("{}")), http.StatusUnauthorized, codeUnauthorized)
	wantOCIError(t, do(t, c, http.MethodDelete, f.URL()+"/v2/team/app/manifests/v1", auth), http.StatusMethodNotAllowed, codeUnsupported)
	wantOCIError(t, send(t, c, http.MethodPatch, f.URL()+"/v2/team/app/blobs/uploads/", []byte("x"), auth), http.StatusMethodNotAllowed, codeUnsupported)
	wantOCIError(t, send(t, c, http.MethodPost, f.URL()+"/v2/team/app/blobs/uploads/some-id", nil, auth), http.StatusMethodNotAllowed, codeUnsupported)
}

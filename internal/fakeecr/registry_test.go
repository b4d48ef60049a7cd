package fakeecr

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

func TestRegistryAuth(t *testing.T) {
	t.Parallel()
	clk := newClock()
	f := Start(t, Options{Now: clk.Now, TokenTTL: time.Hour})
	c := newClient(t)
	tok := token(t, f)
	base := f.URL() + "/v2/"

	for _, tc := range []struct {
		name, auth string
	}{
		{"none", ""},
		{"unknown token", "Authorization: Basic " + "QVdTOm5vcGU="},
		{"bearer", "Authorization: Bearer " + tok},
		{"token without scheme", "Authorization: " + tok},
	} {
		var headers []string
		if tc.auth != "" {
			headers = append(headers, tc.auth)
		}
		r := do(t, c, http.MethodGet, base, headers...)
		wantOCIError(t, r, http.StatusUnauthorized, codeUnauthorized)
		want := `Basic realm="` + f.URL() + `/",service="ecr.amazonaws.com"`
		if got := r.Header.Get("WWW-Authenticate"); got != want {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, got, want)
		}
	}

	auth := "Authorization: Basic " + tok
	if r := do(t, c, http.MethodGet, base, auth); r.StatusCode != http.StatusOK {
		t.Fatalf("valid token: %d %s", r.StatusCode, r.body)
	}
	clk.Advance(time.Hour)
	r := do(t, c, http.MethodGet, base, auth)
	wantOCIError(t, r, http.StatusForbidden, codeDenied)
	if msg := ociErrors(t, r.body)[0].Message; msg != "Your authorization token has expired. Reauthenticate and try again." {
		t.Errorf("expired token message %q", msg)
	}

	// ExpireTokens expires what was issued, not what comes next.
	tok2, _ := f.IssueToken()
	f.ExpireTokens()
	wantOCIError(t, do(t, c, http.MethodGet, base, "Authorization: Basic "+tok2), http.StatusForbidden, codeDenied)
	tok3, _ := f.IssueToken()
	if r := do(t, c, http.MethodGet, base, "Authorization: Basic "+tok3); r.StatusCode != http.StatusOK {
		t.Errorf("fresh token after ExpireTokens: %d", r.StatusCode)
	}

	if got := f.Counters(); got.Unauthorized != 4 || got.Denied != 2 {
		t.Errorf("Unauthorized %d, Denied %d; want 4, 2", got.Unauthorized, got.Denied)
	}
}

func TestManifests(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	const repo = "docker-hub/library/nginx"
	const mt = "application/vnd.docker.distribution.manifest.v2+json"
	body := []byte(`{"schemaVersion":2,"mediaType":"` + mt + `"}`)
	dgst := f.PutManifest(repo, "1.27", mt, body)
	if dgst != digest.FromBytes(body) {
		t.Fatalf("PutManifest returned %s", dgst)
	}
	sniffed := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	sniffedDgst := f.PutManifest(repo, "", "", sniffed)
	base := f.URL() + "/v2/" + repo + "/manifests/"
	accept := "Accept: application/vnd.oci.image.index.v1+json, " + mt

	for _, tc := range []struct {
		name, method, ref string
		wantType          string
		wantBody          []byte
	}{
		{"GET by tag", http.MethodGet, "1.27", mt, body},
		{"GET by digest", http.MethodGet, dgst.String(), mt, body},
		{"HEAD by tag", http.MethodHead, "1.27", mt, nil},
		{"HEAD by digest", http.MethodHead, dgst.String(), mt, nil},
		{"media type from the manifest", http.MethodGet, sniffedDgst.String(), oci.MediaTypeImageIndex, sniffed},
	} {
		r := do(t, c, tc.method, base+tc.ref, auth, accept)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d %s", tc.name, r.StatusCode, r.body)
		}
		wantDgst := digest.FromBytes(tc.wantBody)
		if tc.wantBody == nil {
			wantDgst = dgst
		}
		if got := r.Header.Get("Content-Type"); got != tc.wantType {
			t.Errorf("%s: Content-Type %q, want %q", tc.name, got, tc.wantType)
		}
		if got := r.Header.Get("Docker-Content-Digest"); got != wantDgst.String() {
			t.Errorf("%s: Docker-Content-Digest %q, want %s", tc.name, got, wantDgst)
		}
		if tc.wantBody != nil && string(r.body) != string(tc.wantBody) {
			t.Errorf("%s: body %q", tc.name, r.body)
		}
		if r.ContentLength != int64(len(body)) && tc.wantBody == nil {
			t.Errorf("%s: Content-Length %d, want %d", tc.name, r.ContentLength, len(body))
		}
	}

	wantOCIError(t, do(t, c, http.MethodGet, base+"nope", auth), http.StatusNotFound, codeManifestUnknown)
	r := do(t, c, http.MethodGet, base+digest.FromString("x").String(), auth)
	wantOCIError(t, r, http.StatusNotFound, codeManifestUnknown)
	if msg := ociErrors(t, r.body)[0].Message; msg != "Requested image not found" {
		t.Errorf("MANIFEST_UNKNOWN message %q", msg)
	}
	wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/no/such/repo/manifests/latest", auth), http.StatusNotFound, codeNameUnknown)
	wantOCIError(t, do(t, c, http.MethodGet, base+"sha256:xyz", auth), http.StatusBadRequest, codeDigestInvalid)
	wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/Bad_Name/manifests/latest", auth), http.StatusBadRequest, codeNameInvalid)
	wantOCIError(t, do(t, c, http.MethodDelete, base+"1.27", auth), http.StatusMethodNotAllowed, codeUnsupported)

	got := f.Counters()
	if got.ManifestGetByTag != 3 || got.ManifestGetByDigest != 4 || got.ManifestHead != 2 {
		t.Errorf("by tag %d, by digest %d, HEAD %d; want 3, 4, 2", got.ManifestGetByTag, got.ManifestGetByDigest, got.ManifestHead)
	}
	// The request log has the Accept header each manifest request carried.
	var seen int
	for _, req := range got.Requests {
		if strings.Contains(req.Path, "/manifests/1.27") && req.Method != http.MethodDelete {
			seen++
			if req.Accept != strings.TrimPrefix(accept, "Accept: ") || !req.Authorization || req.Status != http.StatusOK || req.Endpoint != EndpointRegistry {
				t.Errorf("logged %+v", req)
			}
		}
	}
	if seen != 2 {
		t.Errorf("%d logged requests for tag 1.27, want 2", seen)
	}
}

func TestBlobs(t *testing.T) {
	t.Parallel()
	for _, headRedirect := range []bool{false, true} {
		t.Run("BlobHeadRedirect="+strconv.FormatBool(headRedirect), func(t *testing.T) {
			t.Parallel()
			f := Start(t, Options{BlobHeadRedirect: headRedirect})
			c := newClient(t)
			auth := "Authorization: Basic " + token(t, f)
			data := []byte(strings.Repeat("layer bytes ", 1000))
			dgst := f.PutBlob("a/b", data)
			blobURL := f.URL() + "/v2/a/b/blobs/" + dgst.String()

			r := do(t, c, http.MethodGet, blobURL, auth)
			if r.StatusCode != http.StatusTemporaryRedirect {
				t.Fatalf("GET blob: %d %s", r.StatusCode, r.body)
			}
			loc, err := url.Parse(r.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			if loc.Host == f.Host() || "http://"+loc.Host != f.S3URL() {
				t.Fatalf("Location host %q; registry %q, S3 %q", loc.Host, f.Host(), f.S3URL())
			}
			q := loc.Query()
			for _, p := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature"} {
				if q.Get(p) == "" {
					t.Errorf("Location lacks %s: %s", p, loc)
				}
			}
			if q.Get("X-Amz-SignedHeaders") != "host" || q.Get("X-Amz-Expires") != "900" {
				t.Errorf("SignedHeaders %q, Expires %q", q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Expires"))
			}

			s3 := do(t, c, http.MethodGet, loc.String())
			if s3.StatusCode != http.StatusOK || string(s3.body) != string(data) {
				t.Fatalf("S3 GET: %d, %d bytes", s3.StatusCode, len(s3.body))
			}
			if s3.Header.Get("Content-Type") != "application/octet-stream" || s3.Header.Get("ETag") == "" ||
				s3.ContentLength != int64(len(data)) {
				t.Errorf("S3 headers %v", s3.Header)
			}

			h := do(t, c, http.MethodHead, blobURL, auth)
			if headRedirect {
				if h.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(h.Header.Get("Location"), f.S3URL()) {
					t.Fatalf("HEAD blob: %d, Location %q", h.StatusCode, h.Header.Get("Location"))
				}
				sh := do(t, c, http.MethodHead, h.Header.Get("Location"))
				if sh.StatusCode != http.StatusOK || sh.ContentLength != int64(len(data)) {
					t.Errorf("S3 HEAD: %d, length %d", sh.StatusCode, sh.ContentLength)
				}
			} else if h.StatusCode != http.StatusOK || h.ContentLength != int64(len(data)) ||
				h.Header.Get("Docker-Content-Digest") != dgst.String() {
				t.Fatalf("HEAD blob: %d, length %d, digest %q", h.StatusCode, h.ContentLength, h.Header.Get("Docker-Content-Digest"))
			}

			wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/a/b/blobs/"+digest.FromString("x").String(), auth), http.StatusNotFound, codeBlobUnknown)
			wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/a/c/blobs/"+dgst.String(), auth), http.StatusNotFound, codeNameUnknown)
			wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/a/b/blobs/sha256:abc", auth), http.StatusBadRequest, codeDigestInvalid)
			// A repository only serves its own blobs.
			f.PutBlob("other", []byte("x"))
			wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/other/blobs/"+dgst.String(), auth), http.StatusNotFound, codeBlobUnknown)

			// Counters are recorded when a handler returns, which can be
			// just after the client has read the whole answer.
			ok := func(got Counters) bool {
				return got.BlobGet == 5 && got.BlobHead == 1 && got.S3Get[dgst] == 1 && len(got.S3RangeGet) == 0 &&
					got.S3BytesSent == int64(len(data))
			}
			got := f.Counters()
			for deadline := time.Now().Add(time.Minute); !ok(got) && time.Now().Before(deadline); got = f.Counters() {
				time.Sleep(5 * time.Millisecond)
			}
			if !ok(got) {
				t.Errorf("counters %+v", got)
			}
			f.ResetCounters()
			if got := f.Counters(); got.BlobGet != 0 || len(got.S3Get) != 0 || len(got.Requests) != 0 || got.S3BytesSent != 0 {
				t.Errorf("after ResetCounters: %+v", got)
			}
		})
	}
}

func TestTagsListPagination(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{TagsPageSize: 3})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	const repo = "quay/org/app"
	want := []string{"1.0", "1.1", "2.0", "latest", "v3", "zz"}
	for _, tag := range slices.Backward(want) {
		f.PutManifest(repo, tag, "", []byte(`{"schemaVersion":2,"tag":"`+tag+`"}`))
	}

	type page struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	list := func(u string) (page, string) {
		r := do(t, c, http.MethodGet, u, auth)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", u, r.StatusCode, r.body)
		}
		var p page
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		return p, r.Header.Get("Link")
	}

	for _, tc := range []struct {
		name, query string
		pages       [][]string
	}{
		{"n=2", "?n=2", [][]string{{"1.0", "1.1"}, {"2.0", "latest"}, {"v3", "zz"}}},
		{"n=4", "?n=4", [][]string{{"1.0", "1.1", "2.0", "latest"}, {"v3", "zz"}}},
		{"default page size", "", [][]string{{"1.0", "1.1", "2.0"}, {"latest", "v3", "zz"}}},
		{"last", "?last=2.0", [][]string{{"latest", "v3", "zz"}}},
		{"last between tags, n=100", "?last=1.5&n=100", [][]string{{"2.0", "latest", "v3", "zz"}}},
		{"n=0", "?n=0", [][]string{{}}},
	} {
		u := f.URL() + "/v2/" + repo + "/tags/list" + tc.query
		var got [][]string
		for u != "" {
			p, link := list(u)
			if p.Name != repo || p.Tags == nil {
				t.Fatalf("%s: page %+v", tc.name, p)
			}
			got = append(got, p.Tags)
			u = ""
			if link != "" {
				next, ok := strings.CutSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
				if !ok || !strings.HasPrefix(next, f.URL()+"/v2/"+repo+"/tags/list?") {
					t.Fatalf("%s: Link %q is not an absolute next link", tc.name, link)
				}
				u = next
			}
			if len(got) > 10 {
				t.Fatalf("%s: pagination does not end", tc.name)
			}
		}
		if !slices.EqualFunc(got, tc.pages, slices.Equal) {
			t.Errorf("%s: pages %q, want %q", tc.name, got, tc.pages)
		}
	}
	wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/"+repo+"/tags/list?n=-1", auth), http.StatusBadRequest, codePaginationInval)
	wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/nope/tags/list", auth), http.StatusNotFound, codeNameUnknown)
	if got := f.Counters().TagsList; got != 12 {
		t.Errorf("TagsList %d, want 12", got)
	}
}

func TestParseRoute(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path string
		want route
		ok   bool
	}{
		{"/v2/", route{kind: routeBase}, true},
		{"/v2", route{kind: routeBase}, true},
		{"/v2/a/b/manifests/latest", route{routeManifest, "a/b", "latest"}, true},
		{"/v2/a/manifests/x/manifests/sha256:ab", route{routeManifest, "a/manifests/x", "sha256:ab"}, true},
		{"/v2/a/blobs/sha256:ab", route{routeBlob, "a", "sha256:ab"}, true},
		{"/v2/a/b/tags/list", route{routeTags, "a/b", ""}, true},
		{"/v2/a/b/referrers/sha256:ab", route{routeReferrers, "a/b", "sha256:ab"}, true},
		{"/v2/a/blobs/x/referrers/sha256:ab", route{routeReferrers, "a/blobs/x", "sha256:ab"}, true},
		{"/v2/a/referrers/b/manifests/v1", route{routeManifest, "a/referrers/b", "v1"}, true},
		{"/v2/a/blobs/uploads/", route{}, false},
		{"/v2/a/manifests/", route{}, false},
		{"/v2/manifests/latest", route{}, false},
		{"/v2/tags/list", route{}, false},
		{"/v3/a/manifests/latest", route{}, false},
	} {
		got, ok := parseRoute(tc.path)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValidNames(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"a": true, "docker-hub/library/nginx": true, "a.b_c__d--e/f0": true, "ecr-public/x/y": true,
		"": false, "A": false, "/a": false, "a/": false, "a//b": false, "a..b": false, "a___b": false,
		"-a": false, "a-": false, "a/.b": false, strings.Repeat("a", 257): false,
	} {
		if got := ValidRepository(name); got != want {
			t.Errorf("ValidRepository(%q) = %v", name, got)
		}
	}
	for tag, want := range map[string]bool{
		"latest": true, "v1.2.3-rc_1": true, "_x": true, strings.Repeat("a", 128): true,
		"": false, ".x": false, "-x": false, "a:b": false, strings.Repeat("a", 129): false,
	} {
		if got := ValidTag(tag); got != want {
			t.Errorf("ValidTag(%q) = %v", tag, got)
		}
	}
}

package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// These tests hold the mirror, in front of the fake ECR, to what the OCI
// distribution spec (v1.1) asks of a registry's pull and content-discovery
// endpoints: the behaviours its conformance suite checks, in our own words.

const ociManifestType = "application/vnd.oci.image.manifest.v1+json"

// exchange is one request and what the spec wants answered.
type exchange struct {
	name, method, path string
	accept             string
	status             int
	code               registry.Code // OCI error code of a GET error; "" for none
	dgst               digest.Digest // Docker-Content-Digest, and the body's digest on GET
	contentType        string
	length             int // Content-Length; 0: not checked
}

// check sends x to the mirror and reports every way the answer differs.
func (x exchange) check(t *testing.T, m *mirror) {
	t.Helper()
	var hdr http.Header
	if x.accept != "" {
		hdr = http.Header{"Accept": {x.accept}}
	}
	resp, body, err := get(t, x.method, m.URL+x.path, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != x.status {
		t.Fatalf("%s %s: status %d, want %d: %s", x.method, x.path, resp.StatusCode, x.status, body)
	}
	if x.method == http.MethodHead && len(body) != 0 {
		t.Errorf("HEAD answered with a body of %d bytes", len(body))
	}
	if x.code != "" {
		code, msg, ok := registry.ParseErrorBody(body)
		if !ok || code != x.code || msg == "" {
			t.Errorf("body %q, want an OCI error %s with a message", body, x.code)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("error Content-Type %q, want application/json", ct)
		}
	}
	if x.dgst != "" {
		if got := resp.Header.Get("Docker-Content-Digest"); got != x.dgst.String() {
			t.Errorf("Docker-Content-Digest %q, want %s", got, x.dgst)
		}
		if x.method == http.MethodGet && digest.FromBytes(body) != x.dgst {
			t.Errorf("body of %d bytes has digest %s, want %s", len(body), digest.FromBytes(body), x.dgst)
		}
	}
	if x.contentType != "" && resp.Header.Get("Content-Type") != x.contentType {
		t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), x.contentType)
	}
	if x.length != 0 && resp.Header.Get("Content-Length") != strconv.Itoa(x.length) {
		t.Errorf("Content-Length %q, want %d", resp.Header.Get("Content-Length"), x.length)
	}
}

// Every pull request the spec defines, answered the same whether the
// mirror has the content cached or not: run once cold, once warm.
func TestPullWorkflowFollowsDistributionSpec(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	tagged, untagged := newRawImage(1, nil), newRawImage(2, nil)
	putRawImage(fake, "conformance/pull", "tagtest0", tagged)
	putRawImage(fake, "conformance/pull", "", untagged)
	m := startMirror(t, fake, mirrorOpts{})

	const repo = "/v2/conformance/pull/"
	missing := digest.FromString("hello world")
	var tests []exchange
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		code := func(c registry.Code) registry.Code {
			if method == http.MethodHead {
				return "" // no body to hold it
			}
			return c
		}
		tests = append(tests,
			exchange{name: "unknown blob", method: method, path: repo + "blobs/" + missing.String(), status: 404, code: code(registry.CodeBlobUnknown)},
			exchange{name: "config blob", method: method, path: repo + "blobs/" + tagged.ConfigDgst.String(), status: 200, dgst: tagged.ConfigDgst, length: len(tagged.Config)},
			exchange{name: "layer blob", method: method, path: repo + "blobs/" + untagged.LayerDgst.String(), status: 200, dgst: untagged.LayerDgst, length: len(untagged.Layer)},
			exchange{name: "reference neither tag nor digest", method: method, path: repo + "manifests/.INVALID_MANIFEST_NAME", accept: ociManifestType, status: 404, code: code(registry.CodeManifestUnknown)},
			exchange{name: "tag too long", method: method, path: repo + "manifests/" + strings.Repeat("t", 129), status: 404, code: code(registry.CodeManifestUnknown)},
			exchange{name: "unknown tag", method: method, path: repo + "manifests/nosuchtag", accept: ociManifestType, status: 404, code: code(registry.CodeManifestUnknown)},
			exchange{name: "unknown manifest digest", method: method, path: repo + "manifests/" + missing.String(), accept: ociManifestType, status: 404, code: code(registry.CodeManifestUnknown)},
			exchange{name: "manifest by digest", method: method, path: repo + "manifests/" + tagged.Dgst.String(), accept: ociManifestType, status: 200,
				dgst: tagged.Dgst, contentType: ociManifestType, length: len(tagged.Manifest)},
			exchange{name: "untagged manifest by digest", method: method, path: repo + "manifests/" + untagged.Dgst.String(), accept: ociManifestType, status: 200,
				dgst: untagged.Dgst, contentType: ociManifestType, length: len(untagged.Manifest)},
			exchange{name: "manifest by tag", method: method, path: repo + "manifests/tagtest0", accept: ociManifestType, status: 200,
				dgst: tagged.Dgst, contentType: ociManifestType, length: len(tagged.Manifest)},
			exchange{name: "malformed digest", method: method, path: repo + "manifests/sha256:totallywrong", status: 400, code: code(registry.CodeDigestInvalid)},
			exchange{name: "unknown repository", method: method, path: "/v2/conformance/nosuchrepo/manifests/tagtest0", status: 404, code: code(registry.CodeNameUnknown)},
		)
	}
	for _, pass := range []string{"cold", "cached"} {
		t.Run(pass, func(t *testing.T) {
			for _, x := range tests {
				t.Run(x.method+" "+x.name, func(t *testing.T) { x.check(t, m) })
			}
		})
	}
}

// A reference that can name no manifest is answered by the mirror itself:
// ECR is not asked.
func TestInvalidReferencesNeverReachUpstream(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	putRawImage(fake, "team/app", "v1", newRawImage(3, nil))
	m := startMirror(t, fake, mirrorOpts{})
	before := fake.Counters()
	for _, x := range []exchange{
		{name: "dot", method: http.MethodGet, path: "/v2/team/app/manifests/.v1", status: 404, code: registry.CodeManifestUnknown},
		{name: "dash", method: http.MethodHead, path: "/v2/team/app/manifests/-v1", status: 404},
		{name: "bad digest", method: http.MethodGet, path: "/v2/team/app/manifests/sha256:nothex", status: 400, code: registry.CodeDigestInvalid},
		{name: "bad blob digest", method: http.MethodGet, path: "/v2/team/app/blobs/sha256:nothex", status: 400, code: registry.CodeDigestInvalid},
	} {
		t.Run(x.name, func(t *testing.T) { x.check(t, m) })
	}
	after := fake.Counters()
	if after.ManifestGetByTag != before.ManifestGetByTag || after.ManifestGetByDigest != before.ManifestGetByDigest ||
		after.ManifestHead != before.ManifestHead || after.BlobGet != before.BlobGet || after.BlobHead != before.BlobHead {
		t.Fatalf("invalid references went upstream: before %+v, after %+v", before, after)
	}
}

// tagPage is one tags/list answer.
type tagPage struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// listTags GETs a tags/list URL and decodes the answer; body is raw.
func listTags(t *testing.T, u string) (resp *http.Response, page tagPage, body []byte) {
	t.Helper()
	resp, body, err := get(t, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("tags/list body %q: %v", body, err)
		}
		if page.Tags == nil {
			t.Fatalf("tags/list body %q: tags must be a list, empty or not", body)
		}
	}
	return resp, page, body
}

// nextLink is the URL of a Link header's rel="next", or "".
func nextLink(t *testing.T, resp *http.Response) string {
	t.Helper()
	link := resp.Header.Get("Link")
	if link == "" {
		return ""
	}
	target, params, ok := strings.Cut(link, ";")
	if !ok || !strings.Contains(params, `rel="next"`) || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
		t.Fatalf("Link %q is not <url>; rel=\"next\"", link)
	}
	return strings.Trim(target, "<>")
}

// tags/list as the spec has it: every tag in order, n and last to page,
// a Link to the next page on the mirror, an empty list for n=0 or an
// untagged repository, 404 for a repository ECR does not have.
func TestTagsListFollowsDistributionSpec(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(4, nil)
	all := []string{"test0", "test1", "test2", "test3", "test4"}
	for _, tag := range all {
		putRawImage(fake, "conformance/listing", tag, img)
	}
	fake.PutBlob("conformance/untagged", []byte("a blob and no tags"))
	m := startMirror(t, fake, mirrorOpts{})

	tests := []struct {
		name, repo, query string
		status            int
		code              registry.Code
		tags              []string
		next              string // query of the Link to the next page; "" for none
	}{
		{name: "all", repo: "conformance/listing", status: 200, tags: all},
		{name: "first page", repo: "conformance/listing", query: "n=2", status: 200, tags: all[:2], next: "last=test1&n=2"},
		{name: "middle page", repo: "conformance/listing", query: "n=2&last=test1", status: 200, tags: all[2:4], next: "last=test3&n=2"},
		{name: "last page", repo: "conformance/listing", query: "n=2&last=test3", status: 200, tags: all[4:]},
		{name: "last alone", repo: "conformance/listing", query: "last=test2", status: 200, tags: all[3:]},
		{name: "n past the end", repo: "conformance/listing", query: "n=50", status: 200, tags: all},
		{name: "n zero", repo: "conformance/listing", query: "n=0", status: 200, tags: []string{}},
		{name: "untagged repository", repo: "conformance/untagged", status: 200, tags: []string{}},
		{name: "negative n", repo: "conformance/listing", query: "n=-1", status: 400, code: registry.CodePaginationNumber},
		{name: "n not a number", repo: "conformance/listing", query: "n=two", status: 400, code: registry.CodePaginationNumber},
		{name: "unknown repository", repo: "conformance/nosuchrepo", status: 404, code: registry.CodeNameUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := m.URL + "/v2/" + tt.repo + "/tags/list"
			if tt.query != "" {
				u += "?" + tt.query
			}
			resp, page, body := listTags(t, u)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.code != "" {
				if code, _, ok := registry.ParseErrorBody(body); !ok || code != tt.code {
					t.Fatalf("body %q, want OCI error %s", body, tt.code)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if page.Name != tt.repo || !slices.Equal(page.Tags, tt.tags) {
				t.Errorf("got %s %q, want %s %q", page.Name, page.Tags, tt.repo, tt.tags)
			}
			next := nextLink(t, resp)
			if tt.next == "" {
				if next != "" {
					t.Errorf("Link to %q on the last page", next)
				}
				return
			}
			want := m.URL + "/v2/" + tt.repo + "/tags/list?" + tt.next
			if got, err := url.Parse(next); err != nil || got.Scheme+"://"+got.Host+got.Path+"?"+got.Query().Encode() != want {
				t.Errorf("Link to %q, want %q", next, want)
			}
		})
	}

	t.Run("following Link lists every tag once", func(t *testing.T) {
		t.Parallel()
		var got []string
		for u, pages := m.URL+"/v2/conformance/listing/tags/list?n=2", 0; u != ""; pages++ {
			if pages > len(all) {
				t.Fatalf("still paging after %d pages: %q", pages, got)
			}
			resp, page, body := listTags(t, u)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: status %d: %s", u, resp.StatusCode, body)
			}
			got = append(got, page.Tags...)
			u = nextLink(t, resp)
		}
		if !slices.Equal(got, all) {
			t.Fatalf("paged through %q, want %q", got, all)
		}
	})
}

// A repository reached through a pull-through namespace is listed under
// the name the client used, not ECR's prefixed one, and so is its Link.
func TestTagsListNamesTheClientsRepository(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(5, nil)
	for _, tag := range []string{"1.0", "1.1", "1.2"} {
		putRawImage(fake, "docker-hub/library/nginx", tag, img)
	}
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub"}})
	resp, page, body := listTags(t, m.URL+"/v2/library/nginx/tags/list?n=2&ns=docker.io")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if page.Name != "library/nginx" || !slices.Equal(page.Tags, []string{"1.0", "1.1"}) {
		t.Fatalf("got %s", body)
	}
	next, err := url.Parse(nextLink(t, resp))
	if err != nil || next.Path != "/v2/library/nginx/tags/list" || next.Query().Get("ns") != "docker.io" || next.Query().Get("last") != "1.1" {
		t.Fatalf("Link %q, want the next page of library/nginx with ns=docker.io", resp.Header.Get("Link"))
	}
}

// referrersIndex is a referrers answer.
type referrersIndex struct {
	SchemaVersion int    `json:"schemaVersion"`
	MediaType     string `json:"mediaType"`
	Manifests     []struct {
		Digest       digest.Digest `json:"digest"`
		ArtifactType string        `json:"artifactType"`
	} `json:"manifests"`
}

// The referrers API as the spec has it, passed through to ECR (which
// serves it) and never cached: an image index of the manifests whose
// subject is the digest, empty when there are none or the subject does not
// exist, filtered by artifactType, 404 for a repository ECR does not have.
func TestReferrersFollowDistributionSpec(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	const repo = "conformance/refs"
	subject := newRawImage(6, nil)
	putRawImage(fake, repo, "tagtest0", subject)
	sig, sbom := newRawImage(7, &subject), newRawImage(8, &subject)
	sig.Manifest = []byte(strings.Replace(string(sig.Manifest), `"schemaVersion":2,`, `"schemaVersion":2,"artifactType":"application/vnd.example.sig",`, 1))
	sig.Dgst = digest.FromBytes(sig.Manifest)
	putRawImage(fake, repo, "", sig)
	putRawImage(fake, repo, "", sbom)
	absent := newRawImage(9, nil) // never stored: a subject that does not exist
	orphan := newRawImage(10, &absent)
	putRawImage(fake, repo, "", orphan)
	m := startMirror(t, fake, mirrorOpts{})

	tests := []struct {
		name, path string
		status     int
		code       registry.Code
		want       []digest.Digest // listed manifests, any order
		filtered   bool
	}{
		{name: "all referrers", path: repo + "/referrers/" + subject.Dgst.String(), status: 200, want: []digest.Digest{sig.Dgst, sbom.Dgst}},
		{name: "by artifactType", path: repo + "/referrers/" + subject.Dgst.String() + "?artifactType=application/vnd.example.sig", status: 200, want: []digest.Digest{sig.Dgst}, filtered: true},
		{name: "config media type as artifactType", path: repo + "/referrers/" + subject.Dgst.String() + "?artifactType=application/vnd.oci.image.config.v1%2Bjson", status: 200, want: []digest.Digest{sbom.Dgst}, filtered: true},
		{name: "nothing refers", path: repo + "/referrers/" + digest.FromString("hello world").String(), status: 200, want: []digest.Digest{}},
		{name: "subject does not exist", path: repo + "/referrers/" + absent.Dgst.String(), status: 200, want: []digest.Digest{orphan.Dgst}},
		{name: "unknown repository", path: "conformance/nosuchrepo/referrers/" + subject.Dgst.String(), status: 404, code: registry.CodeNameUnknown},
		{name: "malformed digest", path: repo + "/referrers/sha256:totallywrong", status: 400, code: registry.CodeDigestInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := get(t, http.MethodGet, m.URL+"/v2/"+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.code != "" {
				if code, _, ok := registry.ParseErrorBody(body); !ok || code != tt.code {
					t.Fatalf("body %q, want OCI error %s", body, tt.code)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.oci.image.index.v1+json" {
				t.Errorf("Content-Type %q, want the OCI index type", ct)
			}
			var idx referrersIndex
			if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || idx.Manifests == nil {
				t.Fatalf("body %s is not an image index with a manifests list (%v)", body, err)
			}
			var got []digest.Digest
			for _, d := range idx.Manifests {
				got = append(got, d.Digest)
			}
			slices.Sort(got)
			slices.Sort(tt.want)
			if !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("listed %v, want %v", got, tt.want)
			}
			if f := resp.Header.Get("OCI-Filters-Applied"); (f == "artifactType") != tt.filtered {
				t.Errorf("OCI-Filters-Applied %q, want it set: %v", f, tt.filtered)
			}
		})
	}
	t.Run("never cached", func(t *testing.T) {
		before := fake.Counters().Referrers
		after := newRawImage(11, &subject)
		putRawImage(fake, repo, "", after)
		_, body, err := get(t, http.MethodGet, m.URL+"/v2/"+repo+"/referrers/"+subject.Dgst.String(), nil)
		if err != nil || !strings.Contains(string(body), after.Dgst.String()) {
			t.Fatalf("a referrer stored upstream since the last answer is missing: %v %s", err, body)
		}
		if got := fake.Counters().Referrers - before; got != 1 {
			t.Fatalf("upstream saw %d referrers requests, want 1", got)
		}
	})
}

// A manifest pushed with a subject is answered with ECR's OCI-Subject,
// which tells the client the registry indexed it for the referrers API.
func TestPushWithSubjectAnswersOCISubject(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: pushEnv})
	subject := newRawImage(12, nil)
	if resp := pushRawImage(t, m, "team/app", "v1", subject); resp.Header.Get("OCI-Subject") != "" {
		t.Fatalf("OCI-Subject %q on a manifest without subject", resp.Header.Get("OCI-Subject"))
	}
	sig := newRawImage(13, &subject)
	resp := pushRawImage(t, m, "team/app", sig.Dgst.String(), sig)
	if got := resp.Header.Get("OCI-Subject"); got != subject.Dgst.String() {
		t.Fatalf("OCI-Subject %q, want %s", got, subject.Dgst)
	}
}

package registry

import (
	"errors"
	"strings"
	"testing"
)

const testDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestParsePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path string
		want       Route
		code       Code // expected error code; "" for success
	}{
		{name: "base", path: "/v2/", want: Route{Kind: KindBase}},
		{name: "base without slash", path: "/v2", want: Route{Kind: KindBase}},
		{name: "blob", path: "/v2/a/b/blobs/" + testDigest, want: Route{Kind: KindBlob, Name: "a/b", Dgst: testDigest}},
		{name: "manifest by tag", path: "/v2/library/nginx/manifests/1.25-alpine", want: Route{Kind: KindManifest, Name: "library/nginx", Tag: "1.25-alpine"}},
		{name: "manifest by digest", path: "/v2/x/manifests/" + testDigest, want: Route{Kind: KindManifest, Name: "x", Dgst: testDigest}},
		{name: "repo named like an endpoint", path: "/v2/blobs/manifests/latest", want: Route{Kind: KindManifest, Name: "blobs", Tag: "latest"}},
		{name: "tags", path: "/v2/team/app/tags/list", want: Route{Kind: KindTags, Name: "team/app"}},
		{name: "upload start", path: "/v2/team/app/blobs/uploads/", want: Route{Kind: KindUpload, Name: "team/app"}},
		{name: "upload session", path: "/v2/team/app/blobs/uploads/abc", want: Route{Kind: KindUpload, Name: "team/app"}},
		{name: "catalog", path: "/v2/_catalog", want: Route{Kind: KindCatalog}},
		{name: "uppercase name", path: "/v2/Team/manifests/latest", code: CodeNameInvalid},
		{name: "dot dot name", path: "/v2/../../etc/manifests/latest", code: CodeNameInvalid},
		{name: "empty component", path: "/v2/a//b/manifests/latest", code: CodeNameInvalid},
		{name: "trailing separator", path: "/v2/a-/manifests/latest", code: CodeNameInvalid},
		{name: "too long name", path: "/v2/" + strings.Repeat("a", 256) + "/manifests/latest", code: CodeNameInvalid},
		{name: "bad tag", path: "/v2/a/manifests/-bad", code: CodeTagInvalid},
		{name: "long tag", path: "/v2/a/manifests/" + strings.Repeat("t", 129), code: CodeTagInvalid},
		{name: "bad digest hex", path: "/v2/a/blobs/sha256:zz", code: CodeDigestInvalid},
		{name: "short digest", path: "/v2/a/blobs/sha256:abcd", code: CodeDigestInvalid},
		{name: "traversal digest", path: "/v2/a/blobs/sha256:..%2f..%2fetc", code: CodeDigestInvalid},
		{name: "unknown algorithm", path: "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", code: CodeDigestInvalid},
		{name: "sha512 refused", path: "/v2/a/blobs/sha512:" + strings.Repeat("a", 128), code: CodeDigestInvalid},
		{name: "manifest bad digest", path: "/v2/a/manifests/sha256:12", code: CodeDigestInvalid},
		{name: "no endpoint", path: "/v2/a", code: CodeNameInvalid},
		{name: "unknown endpoint", path: "/v2/a/things/x", code: CodeNameInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePath(tt.path)
			if tt.code != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != tt.code {
					t.Fatalf("ParsePath(%q) error = %v, want code %s", tt.path, err, tt.code)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePath(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
			}
		})
	}
	if _, err := ParsePath("/etc/passwd"); !errors.Is(err, ErrNotRegistryPath) {
		t.Fatalf("non-registry path: err = %v", err)
	}
}

func FuzzParsePath(f *testing.F) {
	f.Add("/v2/a/b/blobs/" + testDigest)
	f.Add("/v2/x/manifests/latest")
	f.Add("/v2/x/blobs/uploads/")
	f.Fuzz(func(t *testing.T, path string) {
		r, err := ParsePath(path)
		if err != nil {
			return
		}
		if r.Kind == KindBlob && (r.Dgst.Validate() != nil || strings.ContainsAny(r.Dgst.Encoded(), "./")) {
			t.Fatalf("ParsePath(%q) accepted digest %q", path, r.Dgst)
		}
		if r.Name != "" && (strings.Contains(r.Name, "..") || strings.HasPrefix(r.Name, "/")) {
			t.Fatalf("ParsePath(%q) accepted name %q", path, r.Name)
		}
	})
}

func TestParseRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header       string
		size         int64
		start, len   int64
		parseErr     bool
		unsatisfied  bool
		ignoredRange bool
	}{
		{header: "bytes=0-9", size: 100, start: 0, len: 10},
		{header: "bytes=90-", size: 100, start: 90, len: 10},
		{header: "bytes=90-1000", size: 100, start: 90, len: 10},
		{header: "bytes=-10", size: 100, start: 90, len: 10},
		{header: "bytes=-1000", size: 100, start: 0, len: 100},
		{header: "bytes=100-", size: 100, unsatisfied: true},
		{header: "bytes=0-0", size: 0, unsatisfied: true},
		{header: "bytes=9-1", parseErr: true},
		{header: "bytes=abc", parseErr: true},
		{header: "bytes=-", parseErr: true},
		{header: "bytes=-0", parseErr: true},
		{header: "bytes=+1-2", parseErr: true},
		{header: "bytes=1-2x", parseErr: true},
		{header: "bytes=99999999999999999999-", parseErr: true},
		{header: "junk", parseErr: true},
		{header: "bytes=0-1,5-6", ignoredRange: true},
		{header: "items=0-1", ignoredRange: true},
		{header: "", ignoredRange: true},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			t.Parallel()
			br, err := ParseRange(tt.header)
			if tt.parseErr {
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeRangeInvalid || e.HTTPStatus() != 416 {
					t.Fatalf("ParseRange(%q) = %v, %v; want RANGE_INVALID", tt.header, br, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tt.header, err)
			}
			if tt.ignoredRange {
				if br != nil {
					t.Fatalf("ParseRange(%q) = %+v, want nil (serve whole)", tt.header, br)
				}
				return
			}
			start, n, err := br.Resolve(tt.size)
			if tt.unsatisfied {
				var e *Error
				if !errors.As(err, &e) || e.Header.Get("Content-Range") == "" {
					t.Fatalf("Resolve(%d) = %v, want unsatisfiable with Content-Range", tt.size, err)
				}
				return
			}
			if err != nil || start != tt.start || n != tt.len {
				t.Fatalf("Resolve(%d) = %d, %d, %v; want %d, %d", tt.size, start, n, err, tt.start, tt.len)
			}
		})
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=7-", "bytes=1-2,3-4", "bytes=x"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, header string, size int64) {
		br, err := ParseRange(header)
		if err != nil || br == nil || size < 0 {
			return
		}
		start, n, err := br.Resolve(size)
		if err != nil {
			return
		}
		if start < 0 || n <= 0 || start+n > size {
			t.Fatalf("ParseRange(%q).Resolve(%d) = %d, %d: outside the content", header, size, start, n)
		}
	})
}

// A reference that is neither a valid tag nor digest-shaped names no
// manifest: reading it is 404 MANIFEST_UNKNOWN (as the distribution spec's
// conformance suite expects), writing it stays 400 TAG_INVALID.
func TestParseRequestWordsBadTagsByMethod(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, path string
		status             int
		code               Code
	}{
		{name: "get dot tag", method: "GET", path: "/v2/a/manifests/.INVALID_MANIFEST_NAME", status: 404, code: CodeManifestUnknown},
		{name: "head dot tag", method: "HEAD", path: "/v2/a/manifests/.hidden", status: 404, code: CodeManifestUnknown},
		{name: "get dash tag", method: "GET", path: "/v2/a/b/manifests/-bad", status: 404, code: CodeManifestUnknown},
		{name: "get long tag", method: "GET", path: "/v2/a/manifests/" + strings.Repeat("t", 129), status: 404, code: CodeManifestUnknown},
		{name: "put bad tag", method: "PUT", path: "/v2/a/manifests/.v1", status: 400, code: CodeTagInvalid},
		{name: "delete bad tag", method: "DELETE", path: "/v2/a/manifests/.v1", status: 400, code: CodeTagInvalid},
		{name: "get malformed digest", method: "GET", path: "/v2/a/manifests/sha256:totallywrong", status: 400, code: CodeDigestInvalid},
		{name: "get bad name first", method: "GET", path: "/v2/A/manifests/.x", status: 400, code: CodeNameInvalid},
		{name: "get bad blob digest", method: "GET", path: "/v2/a/blobs/sha256:zz", status: 400, code: CodeDigestInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRequest(tt.method, tt.path)
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code || e.HTTPStatus() != tt.status {
				t.Fatalf("ParseRequest(%s %q) error = %v, want %d %s", tt.method, tt.path, err, tt.status, tt.code)
			}
		})
	}
	for _, method := range []string{"GET", "HEAD", "PUT"} {
		got, err := ParseRequest(method, "/v2/a/manifests/v1")
		if want := (Route{Kind: KindManifest, Name: "a", Tag: "v1"}); err != nil || got != want {
			t.Fatalf("ParseRequest(%s, valid tag) = %+v, %v; want %+v", method, got, err, want)
		}
	}
}

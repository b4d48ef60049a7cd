package registry

import (
	_ "crypto/sha256" // registers sha256 with go-digest
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind says which endpoint a request path names.
type Kind int

// Endpoints of the distribution API the mirror understands.
const (
	KindBase      Kind = iota + 1 // /v2/
	KindBlob                      // /v2/<name>/blobs/<digest>
	KindManifest                  // /v2/<name>/manifests/<reference>
	KindTags                      // /v2/<name>/tags/list
	KindUpload                    // /v2/<name>/blobs/uploads/...
	KindReferrers                 // /v2/<name>/referrers/<digest>
	KindCatalog                   // /v2/_catalog
)

// String names the endpoint, for logs and metrics.
func (k Kind) String() string {
	switch k {
	case KindBase:
		return "base"
	case KindBlob:
		return "blob"
	case KindManifest:
		return "manifest"
	case KindTags:
		return "tags"
	case KindUpload:
		return "upload"
	case KindReferrers:
		return "referrers"
	case KindCatalog:
		return "catalog"
	}
	return "other"
}

// Limits from the distribution spec.
const (
	MaxNameLength = 255
	MaxTagLength  = 128
)

var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// Route is a request path, parsed and validated.
type Route struct {
	Kind Kind
	Name string        // repository name; empty for KindBase and KindCatalog
	Tag  string        // manifest reference when it is a tag
	Dgst digest.Digest // blob digest, or manifest reference when it is a digest
}

// Reference is the manifest reference as the client wrote it.
func (r Route) Reference() string {
	if r.Tag != "" {
		return r.Tag
	}
	return string(r.Dgst)
}

// ErrNotRegistryPath says a path is not under /v2/.
var ErrNotRegistryPath = errors.New("not a registry API path")

// ParsePath parses a distribution API path. Its errors are *Error values
// ready for the client, or ErrNotRegistryPath. A manifest path with a bad
// tag still returns its Kind and Name beside TAG_INVALID.
func ParsePath(path string) (Route, error) {
	if path == "/v2" || path == "/v2/" {
		return Route{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return Route{}, ErrNotRegistryPath
	}
	if rest == "_catalog" {
		return Route{Kind: KindCatalog}, nil
	}
	parts := strings.Split(rest, "/")
	n := len(parts)
	// Uploads: /v2/<name>/blobs/uploads/ and /v2/<name>/blobs/uploads/<id>.
	for i := n - 1; i >= 1 && i >= n-2; i-- {
		if parts[i] == "uploads" && i >= 2 && parts[i-1] == "blobs" {
			name := strings.Join(parts[:i-1], "/")
			if err := ValidateName(name); err != nil {
				return Route{}, err
			}
			return Route{Kind: KindUpload, Name: name}, nil
		}
	}
	if n < 3 {
		return Route{}, Errorf(CodeNameInvalid, "path %q names no repository endpoint", truncate(path))
	}
	name := strings.Join(parts[:n-2], "/")
	if err := ValidateName(name); err != nil {
		return Route{}, err
	}
	endpoint, ref := parts[n-2], parts[n-1]
	switch endpoint {
	case "tags":
		if ref != "list" {
			break
		}
		return Route{Kind: KindTags, Name: name}, nil
	case "blobs":
		dgst, err := ParseDigest(ref)
		if err != nil {
			return Route{}, err
		}
		return Route{Kind: KindBlob, Name: name, Dgst: dgst}, nil
	case "referrers":
		dgst, err := ParseDigest(ref)
		if err != nil {
			return Route{}, err
		}
		return Route{Kind: KindReferrers, Name: name, Dgst: dgst}, nil
	case "manifests":
		if strings.Contains(ref, ":") {
			dgst, err := ParseDigest(ref)
			if err != nil {
				return Route{}, err
			}
			return Route{Kind: KindManifest, Name: name, Dgst: dgst}, nil
		}
		if !tagRE.MatchString(ref) {
			return Route{Kind: KindManifest, Name: name}, Errorf(CodeTagInvalid, "invalid tag %q: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", truncate(ref))
		}
		return Route{Kind: KindManifest, Name: name, Tag: ref}, nil
	}
	return Route{}, Errorf(CodeNameInvalid, "path %q names no repository endpoint", truncate(path)).WithStatus(404)
}

// ParseRequest parses a request's path as ParsePath does, and words a bad
// manifest reference for the method: a GET or HEAD whose reference is
// neither a valid tag nor a digest asks for a manifest that cannot exist,
// so it is 404 MANIFEST_UNKNOWN, as for any missing manifest (the
// distribution spec's conformance suite expects 404); a write keeps 400
// TAG_INVALID, which tells the pusher what to fix.
func ParseRequest(method, path string) (Route, error) {
	route, err := ParsePath(path)
	var e *Error
	if errors.As(err, &e) && e.Code == CodeTagInvalid && route.Kind == KindManifest &&
		(method == http.MethodGet || method == http.MethodHead) {
		return route, Errorf(CodeManifestUnknown, "manifest unknown: %s", e.Message)
	}
	return route, err
}

// ValidateName checks a repository name against the distribution spec's
// grammar and length limit.
func ValidateName(name string) error {
	if name == "" {
		return Errorf(CodeNameInvalid, "repository name is empty")
	}
	if len(name) > MaxNameLength {
		return Errorf(CodeNameInvalid, "repository name is %d characters long; the limit is %d", len(name), MaxNameLength)
	}
	if !nameRE.MatchString(name) {
		return Errorf(CodeNameInvalid, "invalid repository name %q: components are lowercase letters and digits separated by '.', '_', '__' or '-', joined by '/'", truncate(name))
	}
	return nil
}

// ParseDigest parses and validates a digest. Only sha256 is accepted: it
// is the only algorithm ECR uses, and the only one the store keeps.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", Errorf(CodeDigestInvalid, "invalid digest %q: %v", truncate(s), err)
	}
	if d.Algorithm() != digest.SHA256 {
		return "", Errorf(CodeDigestInvalid, "unsupported digest algorithm %q in %q: only sha256 is supported", d.Algorithm(), truncate(s))
	}
	return d, nil
}

// truncate keeps client input in messages short.
func truncate(s string) string {
	const max = 300
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

package registry

import (
	"strings"

	"github.com/opencontainers/go-digest"
)

// Reference names an image as the mirror's clients name it: a repository
// and either a tag or a digest.
type Reference struct {
	Name string        // repository name
	Tag  string        // set when the image is named by tag
	Dgst digest.Digest // set when the image is named by digest
}

// String is repo:tag or repo@digest.
func (r Reference) String() string {
	if r.Dgst != "" {
		return r.Name + "@" + r.Dgst.String()
	}
	return r.Name + ":" + r.Tag
}

// Ref is the tag or the digest, as a manifest path takes it.
func (r Reference) Ref() string {
	if r.Dgst != "" {
		return r.Dgst.String()
	}
	return r.Tag
}

// ParseReference parses repo:tag, repo@sha256:<hex> or repo (meaning
// repo:latest). The repository is a name of the mirror's, without a
// registry host. Errors are *Error values naming the bad part.
func ParseReference(s string) (Reference, error) {
	s = strings.TrimSpace(s)
	if name, dgst, ok := strings.Cut(s, "@"); ok {
		d, err := ParseDigest(dgst)
		if err != nil {
			return Reference{}, err
		}
		if err := ValidateName(name); err != nil {
			return Reference{}, err
		}
		return Reference{Name: name, Dgst: d}, nil
	}
	name, tag := s, "latest"
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		name, tag = s[:i], s[i+1:]
	}
	if !tagRE.MatchString(tag) {
		return Reference{}, Errorf(CodeTagInvalid, "invalid tag %q in %q: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", truncate(tag), truncate(s))
	}
	if err := ValidateName(name); err != nil {
		return Reference{}, err
	}
	return Reference{Name: name, Tag: tag}, nil
}

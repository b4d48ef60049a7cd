package settings

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Kinds of upstream registry (UPSTREAM's KIND: prefix): how the mirror
// authenticates there and what it may do there.
const (
	// KindECR is a private ECR registry: tokens from GetAuthorizationToken
	// for its region; pushes are passed through.
	KindECR = "ecr"
	// KindECRPublic is ECR Public (public.ecr.aws): pull only.
	KindECRPublic = "ecr-public"
	// KindOCI is any other registry speaking the distribution API: pull only.
	KindOCI = "oci"
)

// ecrPublicHost is ECR Public's registry host.
const ecrPublicHost = "public.ecr.aws"

// Upstream is one UPSTREAM entry: a registry the mirror pulls from.
type Upstream struct {
	Kind string   // KindECR, KindECRPublic or KindOCI
	URL  *url.URL // the registry root, as ParseUpstream checks it
	// Host is the URL's host as clients name the registry
	// (registry.CanonicalRegistry): what ns= and NAMESPACE_LISTENERS
	// match, and the registry of its links and tag records.
	Host string
	// Region is an ECR upstream's AWS region: read from its host, else
	// AWS_REGION; "" for other kinds.
	Region string
}

// ParseUpstreams reads UPSTREAM: a comma-separated list of [KIND:]URL
// entries, the first of them the default upstream. An entry without a
// KIND is ecr when its host is an ECR registry's (which names the
// region), ecr-public for public.ecr.aws, and oci otherwise; a list of
// one entry without a KIND is ecr whatever its host, as before lists.
// Regions missing from ecr hosts are left for AWS_REGION (parseRegion).
// Every bad entry is reported.
func ParseUpstreams(v string) ([]Upstream, error) {
	entries := SplitList(v)
	if len(entries) == 0 {
		_, err := ParseUpstream("") // says what is required
		return nil, err
	}
	var ups []Upstream
	var errs []error
	seen := map[string]bool{}
	for _, entry := range entries {
		up, err := parseUpstreamEntry(entry, len(entries) == 1)
		if err == nil && seen[up.Host] {
			err = fmt.Errorf("registry %s is listed twice", up.Host)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %q: %w", entry, err))
			continue
		}
		seen[up.Host] = true
		ups = append(ups, up)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ups, nil
}

// parseUpstreamEntry reads one [KIND:]URL entry; alone says it is the
// list's only entry.
func parseUpstreamEntry(entry string, alone bool) (Upstream, error) {
	kind, raw, err := cutKind(entry)
	if err != nil {
		return Upstream{}, err
	}
	u, err := ParseUpstream(raw)
	if err != nil {
		return Upstream{}, err
	}
	up := Upstream{Kind: kind, URL: u, Host: registry.CanonicalRegistry(u.Host)}
	region, named := auth.RegionFromHost(u.Host)
	switch {
	case up.Kind != "":
	case alone || named:
		up.Kind = KindECR
	case up.Host == ecrPublicHost:
		up.Kind = KindECRPublic
	default:
		up.Kind = KindOCI
	}
	if up.Kind == KindECR {
		up.Region = region
	}
	return up, nil
}

// cutKind splits an entry's KIND: prefix from its URL. A prefix is a
// word before the first colon that is not a URL scheme and is followed by
// no port: "oci:http://host:5000", "ecr:host", but not "host:5000".
func cutKind(entry string) (kind, raw string, err error) {
	before, after, found := strings.Cut(entry, ":")
	word := strings.ToLower(strings.TrimSpace(before))
	switch {
	case !found || strings.HasPrefix(after, "//") || strings.ContainsAny(word, "./[") || isPort(after):
		return "", entry, nil
	case word == KindECR || word == KindECRPublic || word == KindOCI:
		return word, strings.TrimSpace(after), nil
	}
	return "", "", fmt.Errorf("kind %q is not one of %s, %s or %s", before, KindECR, KindECRPublic, KindOCI)
}

// isPort reports whether s starts with a port number: the rest of a
// host:port, maybe followed by a path.
func isPort(s string) bool {
	port, _, _ := strings.Cut(s, "/")
	return port != "" && strings.Trim(port, "0123456789") == ""
}

// parseUpstream is UPSTREAM's parser: the list, and Upstream, its first
// entry.
func (c *Config) parseUpstream(v string) error {
	ups, err := ParseUpstreams(v)
	if err != nil {
		return err
	}
	c.Upstreams, c.Upstream = ups, ups[0].URL
	return nil
}

// parseRegion takes the region as set, and gives it to the ecr upstreams
// whose host names none; unset, it is the first ecr upstream's.
func (c *Config) parseRegion(v string) error {
	c.Region = v
	var errs []error
	for i := range c.Upstreams {
		up := &c.Upstreams[i]
		if up.Kind != KindECR || up.Region != "" {
			continue
		}
		if v == "" {
			errs = append(errs, fmt.Errorf("not set, and the UPSTREAM host %q does not name a region (expected <account>.dkr.ecr.<region>.amazonaws.com)", up.URL.Host))
			continue
		}
		up.Region = v
	}
	for _, up := range c.Upstreams {
		if c.Region == "" && up.Kind == KindECR {
			c.Region = up.Region
		}
	}
	return errors.Join(errs...)
}

// upstreamHost reports whether host is one of UPSTREAM's registries.
func (c *Config) upstreamHost(host string) bool {
	for _, up := range c.Upstreams {
		if up.Host == host {
			return true
		}
	}
	return false
}

// checkUpstreamsApart reports PULL_THROUGHS registries that are also
// UPSTREAM entries: a registry is reached one way.
func (c *Config) checkUpstreamsApart() error {
	var errs []error
	for host := range c.PullThroughs {
		if c.upstreamHost(host) {
			errs = append(errs, fmt.Errorf("PULL_THROUGHS: registry %s is also an UPSTREAM entry: pull it from there, or through ECR's prefix, not both", host))
		}
	}
	return errors.Join(errs...)
}

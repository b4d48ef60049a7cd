// Package buildinfo says which build of ecr-mirror is running: its
// version, the commit it was built from, and the Go release and platform
// it was built with.
//
// A release build sets the version and commit at link time (the
// Dockerfile does, from its VERSION and COMMIT build arguments):
//
//	go build -ldflags "-X github.com/ecr-mirror/ecr-mirror/internal/buildinfo.version=v1.2.0 \
//	  -X github.com/ecr-mirror/ecr-mirror/internal/buildinfo.commit=$(git rev-parse HEAD)" ./cmd/ecr-mirror
//
// Without them, Read falls back to what the Go toolchain stamped into the
// binary: the module version (a release under "go install …@v1.2.0"; a
// pseudo-version such as v0.0.0-20261205140000-0123456789ab+dirty from a
// clone with Go 1.24 or later; "(devel)" when built with -buildvcs=false)
// and the vcs.revision and vcs.modified settings, else the revision a
// pseudo-version names ("go install …@<commit>" stamps no vcs settings).
package buildinfo

import (
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// version and commit are set by the linker (-ldflags -X) and never
// written at run time; "" means not set.
var (
	version string
	commit  string
)

// Unknown values, for a build that carries none.
const (
	DevelVersion  = "devel"   // no release version: a development build
	UnknownCommit = "unknown" // no commit recorded
)

// Info describes one build.
type Info struct {
	// Version is the release version (v1.2.0), a Go pseudo-version, or
	// DevelVersion.
	Version string
	// Commit is the VCS revision, with "+dirty" when the work tree had
	// uncommitted changes (its first 12 digits when only a pseudo-version
	// names it), or UnknownCommit.
	Commit    string
	GoVersion string // the Go release that built it, e.g. go1.26.8
	Platform  string // GOOS/GOARCH, e.g. linux/amd64
}

// Read returns the running binary's build information.
func Read() Info {
	return resolve(version, commit, debug.ReadBuildInfo)
}

// resolve prefers the linker's values and falls back to the toolchain's
// stamps, read with read.
func resolve(ldVersion, ldCommit string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: ldVersion, Commit: ldCommit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := read()
	if ok && bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			info.Commit = vcsCommit(bi.Settings)
		}
		if info.Commit == "" {
			info.Commit = pseudoRevision(info.Version)
		}
	}
	if info.Version == "" {
		info.Version = DevelVersion
	}
	if info.Commit == "" {
		info.Commit = UnknownCommit
	}
	return info
}

// vcsCommit is the revision the toolchain stamped, "+dirty" when the
// work tree was modified; "" when none was stamped.
func vcsCommit(settings []debug.BuildSetting) string {
	var rev, modified string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "+dirty"
	}
	return rev
}

// pseudoVersion matches a Go pseudo-version's timestamp and revision
// prefix: "go install …@<commit>" stamps no vcs settings, but its version
// names the commit.
var pseudoVersion = regexp.MustCompile(`[.-](?:0\.)?\d{14}-([0-9a-f]{12})(\+dirty)?$`)

// pseudoRevision is the 12-digit revision in a pseudo-version (with
// "+dirty" when it has it), "" for any other version.
func pseudoRevision(v string) string {
	m := pseudoVersion.FindStringSubmatch(v)
	if m == nil {
		return ""
	}
	return m[1] + m[2]
}

// String is the build on one line, e.g.
// "ecr-mirror v1.2.0 (commit 0123abc, go1.26.8, linux/amd64)".
func (i Info) String() string {
	return fmt.Sprintf("ecr-mirror %s (commit %s, %s, %s)", i.Version, i.Commit, i.GoVersion, i.Platform)
}

// UserAgent is the User-Agent the mirror sends upstream, e.g.
// "ecr-mirror/v1.2.0 (linux/amd64; go1.26.8)". The version is reduced
// to the characters a product token may hold.
func (i Info) UserAgent() string {
	return "ecr-mirror/" + Token(i.Version) + " (" + i.Platform + "; " + i.GoVersion + ")"
}

// Token is v with every character an HTTP token (RFC 9110) may not hold
// replaced by "-": a version fit for a User-Agent product.
func Token(v string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			return r
		case strings.ContainsRune("!#$%&'*+-.^_`|~", r):
			return r
		}
		return '-'
	}, v)
}

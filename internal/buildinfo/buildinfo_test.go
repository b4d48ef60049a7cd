package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolvePrefersLinkerValuesThenToolchainStamps(t *testing.T) {
	t.Parallel()
	stamped := func(version string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/ecr-mirror/ecr-mirror", Version: version}, Settings: settings}, true
		}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}
	clean := debug.BuildSetting{Key: "vcs.modified", Value: "false"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, tt := range []struct {
		name                 string
		ldVersion, ldCommit  string
		read                 func() (*debug.BuildInfo, bool)
		wantVersion, wantCmt string
		wantGo               string
	}{
		{name: "ldflags set win over the stamps", ldVersion: "v1.2.0", ldCommit: "feedface",
			read: stamped("v0.0.0-20261205140000-0123456789ab", rev, clean), wantVersion: "v1.2.0", wantCmt: "feedface", wantGo: "go1.99.1"},
		{name: "ldflags unset: go install @version", read: stamped("v1.3.0"),
			wantVersion: "v1.3.0", wantCmt: UnknownCommit, wantGo: "go1.99.1"},
		{name: "ldflags unset: a clone's pseudo-version and revision", read: stamped("v0.0.0-20261205140000-0123456789ab", rev, clean),
			wantVersion: "v0.0.0-20261205140000-0123456789ab", wantCmt: rev.Value, wantGo: "go1.99.1"},
		{name: "ldflags unset: a modified work tree", read: stamped("v0.0.0-20261205140000-0123456789ab+dirty", rev, dirty),
			wantVersion: "v0.0.0-20261205140000-0123456789ab+dirty", wantCmt: rev.Value + "+dirty", wantGo: "go1.99.1"},
		{name: "ldflags unset: go install @commit, a pseudo-version only", read: stamped("v0.0.0-20261205140000-0123456789ab"),
			wantVersion: "v0.0.0-20261205140000-0123456789ab", wantCmt: "0123456789ab", wantGo: "go1.99.1"},
		{name: "ldflags unset: a pseudo-version after a tag", read: stamped("v1.2.1-0.20261205140000-0123456789ab"),
			wantVersion: "v1.2.1-0.20261205140000-0123456789ab", wantCmt: "0123456789ab", wantGo: "go1.99.1"},
		{name: "ldflags unset: a pre-release's pseudo-version", read: stamped("v1.3.0-rc.1.0.20261205140000-0123456789ab"),
			wantVersion: "v1.3.0-rc.1.0.20261205140000-0123456789ab", wantCmt: "0123456789ab", wantGo: "go1.99.1"},
		{name: "ldflags unset: -buildvcs=false", read: stamped("(devel)"),
			wantVersion: DevelVersion, wantCmt: UnknownCommit, wantGo: "go1.99.1"},
		{name: "only the version by ldflags: commit from the stamps", ldVersion: "v1.2.0", read: stamped("(devel)", rev),
			wantVersion: "v1.2.0", wantCmt: rev.Value, wantGo: "go1.99.1"},
		{name: "no build information at all", read: none,
			wantVersion: DevelVersion, wantCmt: UnknownCommit, wantGo: runtime.Version()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := resolve(tt.ldVersion, tt.ldCommit, tt.read)
			if got.Version != tt.wantVersion || got.Commit != tt.wantCmt || got.GoVersion != tt.wantGo {
				t.Errorf("got version %q commit %q go %q, want %q %q %q", got.Version, got.Commit, got.GoVersion, tt.wantVersion, tt.wantCmt, tt.wantGo)
			}
			if want := runtime.GOOS + "/" + runtime.GOARCH; got.Platform != want {
				t.Errorf("platform %q, want %q", got.Platform, want)
			}
		})
	}
}

func TestUserAgentIsAProductToken(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ version, want string }{
		{"v1.2.0", "ecr-mirror/v1.2.0 (linux/arm64; go1.26.8)"},
		{"v0.0.0-20261205140000-0123456789ab+dirty", "ecr-mirror/v0.0.0-20261205140000-0123456789ab+dirty (linux/arm64; go1.26.8)"},
		{"1.2 beta/3", "ecr-mirror/1.2-beta-3 (linux/arm64; go1.26.8)"},
	} {
		info := Info{Version: tt.version, Commit: "c", GoVersion: "go1.26.8", Platform: "linux/arm64"}
		if got := info.UserAgent(); got != tt.want {
			t.Errorf("UserAgent for %q = %q, want %q", tt.version, got, tt.want)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// cli runs runCLI in-process with env and returns its status and output.
func cli(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runCLI(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestServerArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		serve bool
		want  []string
	}{
		{name: "none", args: nil, serve: true},
		{name: "serve", args: []string{"serve"}, serve: true, want: []string{}},
		{name: "serve flags", args: []string{"serve", "-listen-addr", ":1"}, serve: true, want: []string{"-listen-addr", ":1"}},
		{name: "flags then serve", args: []string{"-listen-addr", ":1", "serve"}, serve: true, want: []string{"-listen-addr", ":1", "serve"}},
		{name: "serve help", args: []string{"serve", "--help"}},
		{name: "help", args: []string{"help"}},
		{name: "-h", args: []string{"-h"}},
		{name: "warm", args: []string{"warm", "a:b"}},
		{name: "unknown", args: []string{"pull"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, serve := serverArgs(tt.args)
			if serve != tt.serve || (serve && !slices.Equal(got, tt.want)) {
				t.Errorf("serverArgs(%q) = %q, %v; want %q, %v", tt.args, got, serve, tt.want, tt.serve)
			}
		})
	}
}

func TestCLIUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string // in stdout+stderr
	}{
		{name: "help", args: []string{"help"}, code: exitOK, contains: "warm "},
		{name: "-h", args: []string{"-h"}, code: exitOK, contains: "cache "},
		{name: "unknown", args: []string{"pull"}, code: exitUsage, contains: `unknown command "pull"`},
		{name: "warm help", args: []string{"warm", "--help"}, code: exitOK, contains: "Example:"},
		{name: "help warm", args: []string{"help", "warm"}, code: exitOK, contains: "Example:"},
		{name: "warm nothing", args: []string{"warm"}, code: exitUsage, contains: "no image given"},
		{name: "warm bad image", args: []string{"warm", "app@sha256:zz"}, code: exitUsage, contains: "invalid digest"},
		{name: "cache", args: []string{"cache"}, code: exitUsage, contains: "verify"},
		{name: "cache ls help", args: []string{"cache", "ls", "--help"}, code: exitOK, contains: "Example:"},
		{name: "cache verify help", args: []string{"cache", "verify", "-h"}, code: exitOK, contains: "--repair"},
		{name: "cache unknown", args: []string{"cache", "bogus"}, code: exitUsage, contains: `unknown subcommand "bogus"`},
		{name: "purge nothing", args: []string{"cache", "purge"}, code: exitUsage, contains: "exactly one of"},
		{name: "purge two", args: []string{"cache", "purge", "--all", "--older-than", "3d"}, code: exitUsage, contains: "exactly one of"},
		{name: "purge bad age", args: []string{"cache", "purge", "--older-than", "soon"}, code: exitUsage, contains: "30d"},
		{name: "pin no image", args: []string{"cache", "pin"}, code: exitUsage, contains: "want 1 arguments"},
		{name: "pin help", args: []string{"cache", "pin", "--help"}, code: exitOK, contains: "Example:"},
		{name: "purge help", args: []string{"cache", "purge", "-h"}, code: exitOK, contains: "--older-than"},
		{name: "export help", args: []string{"export", "--help"}, code: exitOK, contains: "oci-archive"},
		{name: "export no output", args: []string{"export", "team/app:v1"}, code: exitUsage, contains: "-o FILE.tar is required"},
		{name: "export platforms twice", args: []string{"export", "-o", "x.tar", "--platform", "linux/amd64", "--all-platforms", "a:b"}, code: exitUsage, contains: "exclude each other"},
		{name: "import help", args: []string{"import", "--help"}, code: exitOK, contains: "STALE_IF_ERROR"},
		{name: "import missing file", args: []string{"import", "--cache-dir", os.TempDir() + "/ecr-mirror-import-test", "/nonexistent.tar"}, code: exitFail, contains: "no such file"},
		{name: "cache ls no dir", args: []string{"cache", "ls", "--cache-dir", "/nonexistent/ecr-mirror"}, code: exitFail, contains: "not a cache directory"},
		{name: "cache ls not a cache", args: []string{"cache", "ls", "--cache-dir", os.TempDir()}, code: exitFail, contains: "has no index/"},
		{name: "cache ls bad size", args: []string{"cache", "ls", "--cache-max-size", "lots"}, code: exitFail, contains: "--cache-max-size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := cli(t, nil, tt.args...)
			if code != tt.code || !strings.Contains(out+errOut, tt.contains) {
				t.Errorf("exit %d, want %d; output does not contain %q or does:\n%s%s", code, tt.code, tt.contains, out, errOut)
			}
		})
	}
}

// s3Gets sums the fake's S3 blob downloads.
func s3Gets(c fakeecr.Counters) int64 {
	var n int64
	for _, v := range c.S3Get {
		n += v
	}
	return n + int64(len(c.S3RangeGet))
}

func TestWarm(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	imgManifest, imgBlobs := putImage(t, fake, "team/app", "v1", img)
	idxDigest, children := putIndex(t, fake, "team/multi", "v2", multiArchIndex(t, linuxAMD64, linuxARM64))
	m := startMirror(t, fake, mirrorOpts{})

	want := append([]digest.Digest{imgManifest, idxDigest}, imgBlobs...)
	for child, blobs := range children {
		want = append(want, child)
		want = append(want, blobs...)
	}
	code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "--concurrency", "3", "team/app:v1", "team/multi@"+idxDigest.String())
	if code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	t.Logf("warm log:\n%s", errOut)
	if !strings.Contains(errOut, "team/app:v1") || !strings.Contains(errOut, "3 manifests") {
		t.Errorf("warm log lacks a line per image:\n%s", errOut)
	}
	testwait.Until(t, "every manifest and blob stored", func() bool {
		for _, d := range want {
			if !m.stored(d) {
				return false
			}
		}
		return true
	})
	before := s3Gets(fake.Counters())
	if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/app:v1", "team/multi:v2"); code != exitOK {
		t.Fatalf("second warm: exit %d\n%s", code, errOut)
	}
	if after := s3Gets(fake.Counters()); after != before {
		t.Errorf("second warm made %d S3 GETs, want 0", after-before)
	}

	// A missing image fails, named, and does not stop the others.
	code, _, errOut = cli(t, nil, "warm", "--mirror", m.URL, "team/app:v1", "team/app:nope", "team/gone@"+digest.FromString("gone").String())
	if code != exitFail || !strings.Contains(errOut, "2 of 3 images failed") ||
		!strings.Contains(errOut, "team/app:nope") || !strings.Contains(errOut, "team/gone@sha256:") {
		t.Errorf("warm of missing images: exit %d, want %d naming both:\n%s", code, exitFail, errOut)
	}
}

func TestWarmPlatform(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	_, children := putIndex(t, fake, "team/multi", "v1", multiArchIndex(t, linuxAMD64, linuxARM64))
	m := startMirror(t, fake, mirrorOpts{})
	code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "--platform", "linux/arm64", "team/multi:v1")
	if code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "2 manifests") {
		t.Errorf("want the index and one child fetched:\n%s", errOut)
	}
	gets := fake.Counters().S3Get
	fetched := 0
	for _, blobs := range children {
		if gets[blobs[0]] > 0 {
			fetched++
		}
	}
	if fetched != 1 {
		t.Errorf("blobs of %d platforms fetched, want 1", fetched)
	}
}

func TestBinaryCommands(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{name: "help", args: []string{"help"}, code: exitOK, contains: "warm"},
		{name: "unknown", args: []string{"bogus"}, code: exitUsage, contains: `unknown command "bogus"`},
		{name: "serve help", args: []string{"serve", "-h"}, code: exitOK, contains: "-cache-dir"},
		{name: "locked-free missing dir", args: []string{"cache", "verify", "--cache-dir", t.TempDir() + "/none"}, code: exitFail, contains: "not a cache directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command(bin, tt.args...).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(string(out), tt.contains) {
				t.Errorf("ecr-mirror %q: exit %d, want %d; output lacks %q:\n%s", tt.args, code, tt.code, tt.contains, out)
			}
		})
	}
}

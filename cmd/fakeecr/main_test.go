package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

const sampleLayout = "../../testdata/sample-image"

func TestParseFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr []string
	}{
		{"defaults need the layout", []string{"-layout", sampleLayout}, nil},
		{"empty registry", []string{"-layout", ""}, nil},
		{"bad addresses", []string{"-layout", "", "-addr", "5100", "-s3-addr", ":5101", "-mirror", "h:99999"},
			[]string{`-addr "5100"`, `-s3-addr ":5101": needs a host`, `-mirror "h:99999"`}},
		{"same ports", []string{"-layout", "", "-addr", "127.0.0.1:7000", "-s3-addr", "127.0.0.1:7000"}, []string{"own ports"}},
		{"bad image", []string{"-layout", "no/such/dir", "-repo", "Sample", "-tag", ".x"},
			[]string{`-layout "no/such/dir"`, `-repo "Sample"`, `-tag ".x"`}},
		{"bad ttl", []string{"-layout", "", "-token-ttl", "-1s"}, []string{"-token-ttl"}},
		{"stray argument", []string{"serve"}, []string{"unexpected arguments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(tc.args, io.Discard)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("parseFlags succeeded")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// runFake runs the command with args until the test ends, and returns the
// fake it started and what it printed on stdout.
func runFake(t *testing.T, args ...string) (*fakeecr.Server, string) {
	t.Helper()
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr bytes.Buffer
	started := make(chan *fakeecr.Server, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &stdout, &stderr, func(f *fakeecr.Server) { started <- f }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("run did not stop")
		}
	})
	select {
	case f := <-started:
		return f, stdout.String()
	case err := <-done:
		done <- err
		t.Fatalf("run: %v\n%s", err, stderr.String())
	case <-time.After(time.Minute):
		t.Fatal("run did not start")
	}
	return nil, ""
}

// With the default addresses, two fakes run side by side on ports of
// their own, each printing its own URLs, and both serve the sample image
// under the same digest (a mirror's cache from one run is valid for the
// next).
func TestRunsSideBySideOnFreePorts(t *testing.T) {
	t.Parallel()
	first, firstOut := runFake(t, "-layout", sampleLayout)
	second, secondOut := runFake(t, "-layout", sampleLayout)
	if first.URL() == second.URL() || first.S3URL() == second.S3URL() {
		t.Fatalf("two fakes share an address: %s %s and %s %s", first.URL(), first.S3URL(), second.URL(), second.S3URL())
	}
	for _, r := range []struct {
		f   *fakeecr.Server
		out string
	}{{first, firstOut}, {second, secondOut}} {
		if !strings.Contains(r.out, "export UPSTREAM="+r.f.URL()+"\n") || !strings.Contains(r.out, "S3 at "+r.f.S3URL()) {
			t.Errorf("stdout does not name the chosen URLs %s and %s:\n%s", r.f.URL(), r.f.S3URL(), r.out)
		}
	}
	d1, ok1 := first.ResolveTag("sample/hello", "latest")
	d2, ok2 := second.ResolveTag("sample/hello", "latest")
	if !ok1 || !ok2 || d1 != d2 {
		t.Errorf("sample/hello:latest is %s (%v) in one run and %s (%v) in the other", d1, ok1, d2, ok2)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	f, out := runFake(t, "-addr", "127.0.0.1:0", "-s3-addr", "127.0.0.1:0", "-layout", sampleLayout)
	for _, want := range []string{
		"export UPSTREAM=" + f.URL() + "\n",
		"export AWS_ENDPOINT_URL_ECR=" + f.URL() + "\n",
		"export AWS_REGION=us-east-1\n",
		"export AWS_ACCESS_KEY_ID=fake\n",
		"export AWS_SECRET_ACCESS_KEY=fake\n",
		"crane pull --insecure 127.0.0.1:5000/sample/hello:latest",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "export ") {
			t.Errorf("stdout line %q is not a shell comment or export", line)
		}
	}

	// The sample image is served.
	tok, _ := f.IssueToken()
	req, _ := http.NewRequest(http.MethodHead, f.URL()+"/v2/sample/hello/manifests/latest", nil)
	req.Header.Set("Authorization", "Basic "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD sample manifest: %d", resp.StatusCode)
	}
}

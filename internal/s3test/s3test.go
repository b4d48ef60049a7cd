// Package s3test starts a real S3-compatible server for tests: versitygw
// (https://github.com/versity/versitygw), an S3 gateway over a local
// directory, on a loopback port. It honours conditional writes
// (If-None-Match: *) and multipart uploads as S3 does, which an
// in-memory fake would only imitate.
//
// The binary is found through $VERSITYGW, else on PATH; without it the
// test fails saying how to install it (.ci/run does). Under -short the
// tests that need it are skipped.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// Install is how to install the server the tests start.
const Install = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 (then put it on PATH or set VERSITYGW to its path; .ci/run does this)"

// The root credentials of every server the tests start.
const (
	AccessKey = "s3test-access"
	SecretKey = "s3test-secret-key"
	Region    = "us-east-1"
)

// Server is a running versitygw over a temporary directory.
type Server struct {
	// URL is its endpoint, http://127.0.0.1:PORT.
	URL  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *testkit.SyncBuffer
}

// Start starts a server on a free loopback port, stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped under -short: starts a versitygw S3 server")
	}
	bin := os.Getenv("VERSITYGW")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("versitygw"); err != nil {
			t.Fatalf("versitygw is not installed (not on PATH, VERSITYGW unset): %s", Install)
		}
	}
	// A port found free may be taken by another test's server before
	// this one binds it: the probe, a bucket only this server's
	// directory has, tells this server's answers from another's, and a
	// server that could not bind exits, so another port is tried.
	root := t.TempDir()
	probe := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	if err := os.Mkdir(filepath.Join(root, probe), 0o700); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		s := &Server{done: make(chan struct{}), log: new(testkit.SyncBuffer)}
		if s.start(t, bin, root, probe) {
			if err := os.Remove(filepath.Join(root, probe)); err != nil {
				t.Fatal(err)
			}
			return s
		}
		if attempt == 5 {
			t.Fatalf("versitygw exited %d times, last: %s", attempt, s.log.String())
		}
	}
}

// start runs the server over root on a free port and waits until it
// answers with probe among its buckets (true), or exits (false).
func (s *Server) start(t testing.TB, bin, root, probe string) bool {
	t.Helper()
	addr := freePort(t)
	s.URL = "http://" + addr
	s.cmd = exec.Command(bin, "--port", addr, "--access", AccessKey, "--secret", SecretKey, "--region", Region, "--quiet", "posix", root)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	c := s.Client()
	exited := false
	testwait.Until(t, "versitygw to answer on "+addr, func() bool {
		select {
		case <-s.done:
			exited = true
			return true
		default:
		}
		out, err := c.ListBuckets(context.Background(), &s3.ListBucketsInput{})
		return err == nil && slices.ContainsFunc(out.Buckets, func(b types.Bucket) bool { return aws.ToString(b.Name) == probe })
	})
	return !exited
}

// freePort returns a loopback address no one listened on a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Stop kills the server (a store gone down) and waits for it to exit.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// AWS is an AWS configuration that reaches the server with its root
// credentials (address it path-style).
func (s *Server) AWS() aws.Config { return AWSConfig(s.URL) }

// AWSConfig is an AWS configuration that reaches endpoint with the
// servers' root credentials, without retries.
func AWSConfig(endpoint string) aws.Config {
	return aws.Config{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		Retryer:      func() aws.Retryer { return aws.NopRetryer{} },
	}
}

// Client is a path-style S3 client of the server, for tests to look at
// and tamper with its objects.
func (s *Server) Client() *s3.Client {
	return s3.NewFromConfig(s.AWS(), func(o *s3.Options) {
		o.UsePathStyle = true
	})
}

// CreateBucket creates a bucket, failing t if it cannot.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
}

// Keys lists the keys in bucket under prefix.
func (s *Server) Keys(t testing.TB, bucket, prefix string) []string {
	t.Helper()
	out, err := s.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	if err != nil {
		t.Fatalf("listing s3://%s/%s: %v", bucket, prefix, err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// String names the server, for failure messages.
func (s *Server) String() string { return fmt.Sprintf("versitygw at %s", s.URL) }

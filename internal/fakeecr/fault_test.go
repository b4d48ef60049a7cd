package fakeecr

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// faultFixture is a fake holding one blob and one manifest, with a token.
type faultFixture struct {
	f         *Server
	c         *http.Client
	auth      string
	blob      []byte
	blobDgst  digest.Digest
	manifest  []byte
	manDigest digest.Digest
}

func newFaultFixture(t *testing.T) *faultFixture {
	t.Helper()
	f := Start(t, Options{})
	x := &faultFixture{f: f, c: newClient(t), blob: make([]byte, 20<<10)}
	_, _ = rand.Read(x.blob)
	x.blobDgst = f.PutBlob("fault/repo", x.blob)
	x.manifest = []byte(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageManifest + `","layers":[]}`)
	x.manDigest = f.PutManifest("fault/repo", "v1", oci.MediaTypeImageManifest, x.manifest)
	x.auth = "Authorization: Basic " + token(t, f)
	return x
}

// blobGet asks the registry for the blob; when it redirects, it fetches the
// S3 URL too. It returns the last answer or the first transport error.
func (x *faultFixture) blobGet(t *testing.T) (response, error) {
	t.Helper()
	r, err := try(x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/blobs/"+x.blobDgst.String(), x.auth)
	if err != nil || r.StatusCode != http.StatusTemporaryRedirect {
		return r, err
	}
	return try(x.c, http.MethodGet, r.Header.Get("Location"))
}

func (x *faultFixture) manifestGet(t *testing.T) (response, error) {
	t.Helper()
	return try(x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/manifests/v1", x.auth)
}

func TestFaultBodies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault Fault
		check func(t *testing.T, r response, want []byte)
	}{
		{"truncate after 1000 bytes", Fault{Mode: FaultTruncate, After: 1000}, func(t *testing.T, r response, want []byte) {
			if r.ContentLength != int64(len(want)) || !errors.Is(r.err, io.ErrUnexpectedEOF) || !bytes.Equal(r.body, want[:min(1000, len(want)-1)]) {
				t.Errorf("Content-Length %d, read %d bytes, err %v; want %d, a prefix, unexpected EOF", r.ContentLength, len(r.body), r.err, len(want))
			}
		}},
		{"truncate at half", Fault{Mode: FaultTruncate}, func(t *testing.T, r response, want []byte) {
			if r.ContentLength != int64(len(want)) || !errors.Is(r.err, io.ErrUnexpectedEOF) || !bytes.Equal(r.body, want[:len(want)/2]) {
				t.Errorf("Content-Length %d, read %d bytes, err %v; want %d, half, unexpected EOF", r.ContentLength, len(r.body), r.err, len(want))
			}
		}},
		{"corrupt", Fault{Mode: FaultCorrupt}, func(t *testing.T, r response, want []byte) {
			diff := 0
			for i := range min(len(r.body), len(want)) {
				if r.body[i] != want[i] {
					diff++
				}
			}
			if r.err != nil || len(r.body) != len(want) || diff != 1 || digest.FromBytes(r.body) == digest.FromBytes(want) {
				t.Errorf("read %d bytes (err %v) with %d differing; want %d bytes, 1 differing", len(r.body), r.err, diff, len(want))
			}
		}},
		{"slow", Fault{Mode: FaultSlow, Rate: 64 << 10, Delay: 100 * time.Millisecond}, func(t *testing.T, r response, want []byte) {
			if r.err != nil || !bytes.Equal(r.body, want) {
				t.Errorf("read %d bytes, err %v; want the whole body", len(r.body), r.err)
			}
		}},
	} {
		for _, target := range []string{"blob", "manifest"} {
			t.Run(tc.name+"/"+target, func(t *testing.T) {
				t.Parallel()
				x := newFaultFixture(t)
				get, want, dgst := x.blobGet, x.blob, x.blobDgst
				if target == "manifest" {
					get, want, dgst = x.manifestGet, x.manifest, x.manDigest
				}
				x.f.SetFault(dgst, tc.fault)
				start := time.Now()
				r, err := get(t)
				took := time.Since(start)
				if err != nil || r.StatusCode != http.StatusOK {
					t.Fatalf("status %v, err %v", r.Response, err)
				}
				tc.check(t, r, want)
				if tc.fault.Mode == FaultSlow {
					minTook := tc.fault.Delay + time.Duration(len(want))*time.Second/time.Duration(tc.fault.Rate)
					if took < minTook*9/10 {
						t.Errorf("took %v, want at least %v", took, minTook)
					}
				}
				// The fault stays until cleared, then the body is intact.
				if r, err := get(t); err != nil || bytes.Equal(r.body, want) != (tc.fault.Mode == FaultSlow) {
					t.Errorf("second GET: %d bytes, err %v", len(r.body), err)
				}
				x.f.SetFault(dgst, Fault{})
				if r, err := get(t); err != nil || r.err != nil || !bytes.Equal(r.body, want) {
					t.Errorf("after clearing: %d bytes, err %v, %v", len(r.body), err, r.err)
				}
				if got := x.f.Counters().Faults; got != 2 {
					t.Errorf("Faults %d, want 2", got)
				}
			})
		}
	}
}

func TestFaultDown(t *testing.T) {
	t.Parallel()
	x := newFaultFixture(t)

	// Down on both: the registry drops the blob GET.
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultDown, Times: 1})
	if r, err := x.blobGet(t); err == nil {
		t.Fatalf("blob GET answered %d", r.StatusCode)
	}
	if r, err := x.blobGet(t); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("after a one-shot fault: %v, %v", r.Response, err)
	}

	// Down on S3 only: the registry redirects, S3 drops.
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultDown, Endpoint: EndpointS3})
	r, err := try(x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/blobs/"+x.blobDgst.String(), x.auth)
	if err != nil || r.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("registry: %v, %v", r.Response, err)
	}
	if r, err := try(x.c, http.MethodGet, r.Header.Get("Location")); err == nil {
		t.Fatalf("S3 answered %d", r.StatusCode)
	}
	// Other content is unaffected.
	if r, err := x.manifestGet(t); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("manifest: %v, %v", r.Response, err)
	}

	// SetDown drops everything, token API included, until lifted.
	x.f.ClearFaults()
	x.f.SetDown(true)
	for _, u := range []string{x.f.URL() + "/v2/", x.f.S3URL() + "/x"} {
		if r, err := try(x.c, http.MethodGet, u, x.auth); err == nil {
			t.Errorf("GET %s while down: %d", u, r.StatusCode)
		}
	}
	if r, err := try(x.c, http.MethodPost, x.f.TokenURL(), "Authorization: "+sigV4, "X-Amz-Target: "+targetGetAuthorizationToken); err == nil {
		t.Errorf("token API while down: %d", r.StatusCode)
	}
	x.f.SetDown(false)
	if r, err := x.blobGet(t); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("after SetDown(false): %v, %v", r.Response, err)
	}
	got := x.f.Counters()
	if got.Dropped != 5 || got.Faults != 2 {
		t.Errorf("Dropped %d, Faults %d; want 5, 2", got.Dropped, got.Faults)
	}
	// A dropped request is logged once its handler returns, which may be
	// after the client has seen the connection close.
	var dropped int
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		dropped = 0
		for _, req := range x.f.Counters().Requests {
			if req.Status == 0 {
				dropped++
			}
		}
		if dropped >= 5 || time.Now().After(deadline) {
			break
		}
	}
	if dropped != 5 {
		t.Errorf("%d logged requests with status 0, want 5", dropped)
	}
}

func TestFaultStatus(t *testing.T) {
	t.Parallel()
	x := newFaultFixture(t)

	x.f.SetFault(x.blobDgst, Fault{Mode: FaultStatus, Status: 429, Times: 2})
	for range 2 {
		r, err := x.blobGet(t)
		if err != nil {
			t.Fatal(err)
		}
		wantOCIError(t, r, http.StatusTooManyRequests, codeTooManyRequests)
		if msg := ociErrors(t, r.body)[0].Message; msg != "Rate exceeded" {
			t.Errorf("message %q", msg)
		}
	}
	if r, err := x.blobGet(t); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("after Times: 2: %v, %v", r.Response, err)
	}

	// Every digest (""), on the manifest: 500 with an OCI error body.
	x.f.SetFault("", Fault{Mode: FaultStatus})
	r, err := x.manifestGet(t)
	if err != nil {
		t.Fatal(err)
	}
	wantOCIError(t, r, http.StatusInternalServerError, codeUnknown)
	// A digest's own fault wins over the one for every digest.
	x.f.SetFault(x.manDigest, Fault{Mode: FaultStatus, Status: 503, Code: "UNAVAILABLE", Message: "try later"})
	r, _ = x.manifestGet(t)
	if errs := ociErrors(t, r.body); r.StatusCode != 503 || errs[0].Code != "UNAVAILABLE" || errs[0].Message != "try later" {
		t.Errorf("specific fault: %d %+v", r.StatusCode, errs)
	}
	// Faults never touch answers for missing content.
	wantOCIError(t, do(t, x.c, http.MethodGet, x.f.URL()+"/v2/fault/repo/manifests/nope", x.auth), http.StatusNotFound, codeManifestUnknown)
	x.f.ClearFaults()

	// On S3: the registry redirects, S3 answers in XML.
	x.f.SetFault(x.blobDgst, Fault{Mode: FaultStatus, Status: 503, Endpoint: EndpointS3})
	r, err = x.blobGet(t)
	if err != nil {
		t.Fatal(err)
	}
	if msg := wantS3Error(t, r, http.StatusServiceUnavailable, "SlowDown"); msg != "Please reduce your request rate." {
		t.Errorf("SlowDown message %q", msg)
	}
}

func TestTokenFault(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	post := func() (response, error) {
		return try(c, http.MethodPost, f.TokenURL(), "Authorization: "+sigV4, "X-Amz-Target: "+targetGetAuthorizationToken)
	}

	f.SetTokenFault(Fault{Mode: FaultStatus, Times: 1})
	r, err := post()
	var e awsError
	if err != nil || json.Unmarshal(r.body, &e) != nil || r.StatusCode != http.StatusBadRequest || e.Type != "ThrottlingException" {
		t.Fatalf("throttled: %v %q, %v", r.Response, r.body, err)
	}
	if r, err := post(); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("after the one-shot fault: %v, %v", r.Response, err)
	}
	f.SetTokenFault(Fault{Mode: FaultDown})
	if r, err := post(); err == nil {
		t.Fatalf("down: answered %d", r.StatusCode)
	}
	f.SetTokenFault(Fault{})
	if r, err := post(); err != nil || !strings.Contains(string(r.body), "authorizationToken") {
		t.Fatalf("cleared: %v, %v", r.Response, err)
	}
	if got := f.Counters(); got.TokenRequests != 4 || got.TokensIssued != 2 {
		t.Errorf("TokenRequests %d, TokensIssued %d; want 4, 2", got.TokenRequests, got.TokensIssued)
	}
}

func TestFaultModeString(t *testing.T) {
	t.Parallel()
	if FaultTruncate.String() != "truncate" || FaultStatus.String() != "status" || FaultMode(42).String() != "FaultMode(42)" {
		t.Errorf("String: %s %s %s", FaultTruncate, FaultStatus, FaultMode(42))
	}
}

// FaultDelay and FaultStatus with a Hold keep a manifest HEAD (which has
// no body to hold) waiting until the Hold is closed, the request already
// counted; then one answers as usual and the other with its status.
func TestFaultHoldsHeads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		fault      Fault
		wantStatus int
	}{
		{"delay", Fault{Mode: FaultDelay}, http.StatusOK},
		{"status", Fault{Mode: FaultStatus, Status: http.StatusServiceUnavailable}, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x := newFaultFixture(t)
			hold := make(chan struct{})
			tc.fault.Hold = hold
			x.f.SetFault(x.manDigest, tc.fault)
			done := make(chan response, 1)
			go func() {
				r, err := try(x.c, http.MethodHead, x.f.URL()+"/v2/fault/repo/manifests/v1", x.auth)
				if err != nil {
					t.Error(err)
				}
				done <- r
			}()
			testwait.Until(t, "the HEAD reached the fake", func() bool { return x.f.Counters().ManifestHead == 1 })
			select {
			case r := <-done:
				t.Fatalf("HEAD answered %d before the hold was released", r.StatusCode)
			default:
			}
			close(hold)
			r := <-done
			if r.Response == nil || r.StatusCode != tc.wantStatus {
				t.Fatalf("HEAD after the release: %+v, want %d", r.Response, tc.wantStatus)
			}
			if tc.wantStatus == http.StatusOK && r.Header.Get("Docker-Content-Digest") != x.manDigest.String() {
				t.Fatalf("HEAD named %q, want %s", r.Header.Get("Docker-Content-Digest"), x.manDigest)
			}
		})
	}
}

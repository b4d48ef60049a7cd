// Package fakeecr is an in-memory fake of the three AWS endpoints the mirror
// talks to, each served over real HTTP on loopback:
//
//   - the ECR token API (AWS JSON 1.1, GetAuthorizationToken), served by the
//     registry's listener at POST /;
//   - the ECR registry (/v2/...), which wants "Authorization: Basic <token>"
//     exactly as the token API issued it, answers 401 without it and 403
//     DENIED once it has expired, and redirects blob GETs (307) to S3; it
//     serves tags/list and the OCI 1.1 referrers API (which SetReferrersAPI
//     turns off, as on a registry that predates it; AttachReferrer adds
//     cosign-style artifacts, and their tag-schema index), and takes
//     pushes;
//   - S3, on a second listener, which serves blob bytes for presigned URLs
//     only: it checks an HMAC signature and the expiry, honours a single
//     Range, and refuses any request that also carries an Authorization
//     header (400 InvalidArgument), as real S3 does.
//
// With Options.Bearer the registry stands for a registry other than ECR
// (an "oci" or "ecr-public" upstream) instead: its 401s carry the Bearer
// challenge, and GET /token is its token realm (anonymous, or behind
// Options.BearerLogin), handing out tokens per repository scope (bearer.go).
//
// With Options.TLS the registry is also served over TLS on a listener of
// its own (TLSAddr), so that a test can give the fake a registry's real
// name and certificate (the mirror dials that name to it); the token API
// stays on URL. Options.DirectBlobs has blob GETs answered with the blob
// rather than a redirect to S3, for a mirror whose redirect policy would
// refuse a loopback S3 behind a public name.
//
// Status codes, headers and error bodies copy AWS's; where AWS's behaviour is
// unconfirmed (blob HEAD), Options chooses. Content lives in memory:
// PutBlob, PutManifest and LoadOCILayout fill it. Counters tells what the
// fake was asked, and SetFault, SetTokenFault and SetDown make it misbehave
// (truncated, stalled or corrupted bodies, dropped connections, slow
// bodies, error statuses, ranges ignored or answered at the wrong offset;
// Fault.Then chains faults, e.g. a cut body, then a bad resumption).
//
// Typical use in a test:
//
//	f := fakeecr.Start(t, fakeecr.Options{}) // New, closed at cleanup
//	if err := f.LoadOCILayout("../../testdata/sample-image", "sample/hello", "latest"); err != nil {
//		t.Fatal(err)
//	}
//	// Point the mirror at f.URL() (upstream) and the ECR client at
//	// f.TokenURL() (ecr.Options.BaseEndpoint or AWS_ENDPOINT_URL_ECR),
//	// pull through the mirror, then assert on f.Counters().
//
// Two things catch clients out, as they would against AWS:
//
//   - The registry and S3 listen on the same IP and differ only by port.
//     net/http's Client keeps a hand-set Authorization header on a redirect
//     when only the port changes, so a client that sets the header on the
//     request (rather than in a RoundTripper that checks the host) sends it
//     to S3 and gets 400 InvalidArgument.
//   - net/http's Transport silently retries an idempotent request once when a
//     reused keep-alive connection fails before any response byte, so a
//     one-shot FaultDown (Times: 1) can be invisible to a Go client. Use
//     Times: 2 or more, or SetDown, to make a failure stick.
package fakeecr

package fakeecr

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"hash"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Presigned URL parts. The path and the credential only look like ECR's; the
// mirror must treat the URL as opaque.
const (
	s3Bucket      = "/prod-us-east-1-starport-layer-bucket/"
	s3AccessKeyID = "ASIAFAKEECRMIRROR000"
	s3Algorithm   = "AWS4-HMAC-SHA256"
	amzDateFormat = "20060102T150405Z"
	msgOneAuth    = "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, " +
		"Signature query string parameter or the Authorization header should be specified"
)

// presign returns a presigned-style S3 URL for blob dgst, valid for
// Options.PresignTTL from now.
func (s *Server) presign(dgst digest.Digest) string {
	now := s.opts.Now().UTC()
	date := now.Format(amzDateFormat)
	cred := s3AccessKeyID + "/" + date[:8] + "/us-east-1/s3/aws4_request"
	expires := strconv.FormatInt(int64(s.opts.PresignTTL/time.Second), 10)
	path := s3Bucket + string(dgst.Algorithm()) + "/" + dgst.Encoded()
	host := strings.TrimPrefix(s.s3URL, "http://")
	sig := s.s3Signature(host, path, cred, date, expires, "host", s.sessionToken)

	var b strings.Builder
	b.Grow(len(s.s3URL) + len(path) + len(cred) + len(s.sessionTokenQuery) + len(sig) + 200)
	b.WriteString(s.s3URL)
	b.WriteString(path)
	b.WriteString("?X-Amz-Algorithm=" + s3Algorithm)
	b.WriteString("&X-Amz-Credential=")
	b.WriteString(url.QueryEscape(cred))
	b.WriteString("&X-Amz-Date=")
	b.WriteString(date)
	b.WriteString("&X-Amz-Expires=")
	b.WriteString(expires)
	b.WriteString("&X-Amz-SignedHeaders=host&X-Amz-Security-Token=")
	b.WriteString(s.sessionTokenQuery)
	b.WriteString("&X-Amz-Signature=")
	b.WriteString(sig)
	return b.String()
}

// s3Signature is the fake's stand-in for SigV4: an HMAC, under a key only the
// fake knows, of everything the URL must not change.
func (s *Server) s3Signature(host, path, cred, date, expires, signedHeaders, token string) string {
	parts := [...]string{host, path, cred, date, expires, signedHeaders, token}
	n := 0
	for _, p := range parts {
		n += len(p) + 1
	}
	msg := make([]byte, 0, n)
	for _, p := range parts {
		msg = append(append(msg, p...), '\n')
	}
	m := s.macs.Get().(hash.Hash)
	defer s.macs.Put(m)
	m.Reset()
	_, _ = m.Write(msg)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

// serveS3 serves blob bytes for presigned URLs.
func (s *Server) serveS3(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Server"] = []string{"AmazonS3"}
	h["X-Amz-Request-Id"] = []string{newRequestID()}

	if auth := r.Header.Values("Authorization"); len(auth) > 0 {
		s.ctr.s3AuthRejected.Add(1)
		writeS3Error(w, r, http.StatusBadRequest, s3Error{
			Code: "InvalidArgument", Message: msgOneAuth,
			ArgumentName: "Authorization", ArgumentValue: auth[0],
		})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeS3Error(w, r, http.StatusMethodNotAllowed, s3Error{
			Code: "MethodNotAllowed", Message: "The specified method is not allowed against this resource.",
		})
		return
	}
	if e, status := s.checkPresigned(r); status != 0 {
		if status == http.StatusForbidden {
			s.ctr.s3SignatureRejected.Add(1)
		}
		writeS3Error(w, r, status, e)
		return
	}
	path, _ := strings.CutPrefix(r.URL.Path, s3Bucket)
	alg, encoded, _ := strings.Cut(path, "/")
	dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg), encoded)
	b := s.store.blobByDigest(dgst)
	if b == nil { // only reachable with a signature for a blob the fake never had
		writeS3Error(w, r, http.StatusNotFound, s3Error{Code: "NoSuchKey", Message: "The specified key does not exist."})
		return
	}

	if rec, ok := w.(*recorder); ok {
		// Deferred: a truncated body panics out of writeBody.
		sent := rec.bytes
		defer func() { b.s3Bytes.Add(rec.bytes - sent) }()
	}

	size := int64(len(b.data))
	start, end, rk := parseRange(r.Header.Get("Range"), size)
	switch {
	case r.Method == http.MethodHead:
		s.ctr.s3Head.Add(1)
	case rk == rangeNone:
		b.s3Full.Add(1)
	default:
		b.s3Ranged.Add(1)
	}
	f, _ := s.faults.take(dgst, EndpointS3, r.Method == http.MethodGet, rk == rangeSatisfiable)
	if s.applyFault(w, r, f, EndpointS3) {
		return
	}
	switch f.Mode {
	case FaultIgnoreRange:
		start, end, rk = 0, size, rangeNone
	case FaultWrongRange:
		shift := f.After
		if shift <= 0 {
			shift = 1
		}
		if start >= shift {
			start -= shift
		} else {
			start = min(start+shift, end-1)
		}
	}

	if rk == rangeUnsatisfiable {
		h["Content-Range"] = []string{"bytes */" + b.size}
		writeS3Error(w, r, http.StatusRequestedRangeNotSatisfiable, s3Error{
			Code: "InvalidRange", Message: "The requested range is not satisfiable",
			RangeRequested: r.Header.Get("Range"), ActualObjectSize: b.size,
		})
		return
	}
	h["Accept-Ranges"] = []string{"bytes"}
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Etag"] = []string{b.etag}
	h["Last-Modified"] = []string{b.modTime}
	status := http.StatusOK
	if rk == rangeSatisfiable {
		status = http.StatusPartialContent
		h["Content-Range"] = []string{"bytes " + strconv.FormatInt(start, 10) + "-" +
			strconv.FormatInt(end-1, 10) + "/" + b.size}
		h["Content-Length"] = []string{strconv.FormatInt(end-start, 10)}
	} else {
		h["Content-Length"] = []string{b.size}
	}
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		// One Write of the stored slice: net/http hands it to the connection
		// without copying it into its buffers.
		writeBody(w, r, b.data[start:end], f)
	}
}

// checkPresigned checks a request's presigned query. It returns status 0 when
// the request may proceed, else the error to answer.
func (s *Server) checkPresigned(r *http.Request) (s3Error, int) {
	q := r.URL.Query()
	alg := q.Get("X-Amz-Algorithm")
	if alg == "" {
		return s3Error{Code: "AccessDenied", Message: "Access Denied"}, http.StatusForbidden
	}
	if alg != s3Algorithm {
		return s3Error{Code: "AuthorizationQueryParametersError",
			Message: `X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"`}, http.StatusBadRequest
	}
	cred, date, expires := q.Get("X-Amz-Credential"), q.Get("X-Amz-Date"), q.Get("X-Amz-Expires")
	signed, sig, token := q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature"), q.Get("X-Amz-Security-Token")
	if cred == "" || date == "" || expires == "" || signed == "" || sig == "" {
		return s3Error{Code: "AuthorizationQueryParametersError",
			Message: "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, " +
				"X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."}, http.StatusBadRequest
	}
	want := s.s3Signature(r.Host, r.URL.Path, cred, date, expires, signed, token)
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return s3Error{Code: "SignatureDoesNotMatch",
			Message: "The request signature we calculated does not match the signature you provided. " +
				"Check your key and signing method."}, http.StatusForbidden
	}
	// Both are signed, so they parse unless the fake itself wrote them wrong.
	signedAt, err := time.Parse(amzDateFormat, date)
	secs, err2 := strconv.ParseInt(expires, 10, 64)
	if err != nil || err2 != nil {
		return s3Error{Code: "AuthorizationQueryParametersError", Message: "X-Amz-Date or X-Amz-Expires is malformed"},
			http.StatusBadRequest
	}
	expiry := signedAt.Add(time.Duration(secs) * time.Second)
	if now := s.opts.Now().UTC(); now.After(expiry) {
		return s3Error{Code: "AccessDenied", Message: "Request has expired",
			Expires: expiry.Format(time.RFC3339), ServerTime: now.Format(time.RFC3339)}, http.StatusForbidden
	}
	return s3Error{}, 0
}

// rangeKind is the outcome of parsing a Range header.
type rangeKind int

const (
	rangeNone          rangeKind = iota // absent or ignored: send the whole object
	rangeSatisfiable                    // send [start, end)
	rangeUnsatisfiable                  // 416
)

// parseRange parses a Range header the way S3 does: one range of the forms
// bytes=a-b, bytes=a- and bytes=-n. Malformed and multi-range headers are
// ignored (the whole object is sent). end is exclusive.
func parseRange(h string, size int64) (start, end int64, kind rangeKind) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, rangeNone
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size, rangeNone
	}
	if first == "" { // suffix: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		switch {
		case err != nil || n < 0:
			return 0, size, rangeNone
		case n == 0 || size == 0:
			return 0, 0, rangeUnsatisfiable
		}
		return max(size-n, 0), size, rangeSatisfiable
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, size, rangeNone
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, size, rangeNone
		}
	}
	if a >= size {
		return 0, 0, rangeUnsatisfiable
	}
	return a, min(b+1, size), rangeSatisfiable
}

// s3Error is S3's XML error body.
type s3Error struct {
	XMLName          xml.Name `xml:"Error"`
	Code             string   `xml:"Code"`
	Message          string   `xml:"Message"`
	ArgumentName     string   `xml:"ArgumentName,omitempty"`
	ArgumentValue    string   `xml:"ArgumentValue,omitempty"`
	RangeRequested   string   `xml:"RangeRequested,omitempty"`
	ActualObjectSize string   `xml:"ActualObjectSize,omitempty"`
	Expires          string   `xml:"Expires,omitempty"`
	ServerTime       string   `xml:"ServerTime,omitempty"`
	RequestID        string   `xml:"RequestId"`
	HostID           string   `xml:"HostId"`
}

// writeS3Error writes an S3 XML error; like S3, it sends no body to HEAD.
func writeS3Error(w http.ResponseWriter, r *http.Request, status int, e s3Error) {
	e.RequestID = w.Header().Get("X-Amz-Request-Id")
	e.HostID = "fakeecr"
	body, err := xml.Marshal(e)
	if err != nil { // cannot happen: plain strings
		body = nil
	}
	body = append([]byte(xml.Header), body...)
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

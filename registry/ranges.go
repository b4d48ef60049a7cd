package registry

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ByteRange is a single HTTP byte range as a client asked for it, before
// the size of the content is known. Exactly one form is set: Start-End,
// Start- (End < 0), or the suffix -Suffix.
type ByteRange struct {
	Start  int64 // first byte; -1 for a suffix range
	End    int64 // last byte, inclusive; -1 when open-ended
	Suffix int64 // length of a suffix range
}

// ParseRange parses a Range header. It returns nil for no header, for a
// unit other than bytes and for several ranges (the whole content is then
// served, as RFC 9110 allows). A malformed bytes range is a RANGE_INVALID
// error.
func ParseRange(header string) (*ByteRange, error) {
	if header == "" {
		return nil, nil
	}
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok {
		if strings.Contains(header, "=") {
			return nil, nil // another unit: ignore
		}
		return nil, rangeError("invalid Range header %q", truncate(header))
	}
	if strings.Contains(spec, ",") {
		return nil, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return nil, rangeError("invalid Range header %q", truncate(header))
	}
	if first == "" {
		n, err := parseOffset(last)
		if err != nil || n == 0 {
			return nil, rangeError("invalid suffix range %q", truncate(header))
		}
		return &ByteRange{Start: -1, End: -1, Suffix: n}, nil
	}
	start, err := parseOffset(first)
	if err != nil {
		return nil, rangeError("invalid Range start in %q", truncate(header))
	}
	br := &ByteRange{Start: start, End: -1}
	if last != "" {
		end, err := parseOffset(last)
		if err != nil || end < start {
			return nil, rangeError("invalid Range end in %q", truncate(header))
		}
		br.End = end
	}
	return br, nil
}

func parseOffset(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a byte offset: %q", s)
	}
	return strconv.ParseInt(s, 10, 64)
}

// ifRangeHolds reports whether a Range may be applied under the If-Range
// header value: with none, or with the blob's own strong ETag. A date or
// another ETag names some other representation, so the whole blob is sent
// (RFC 9110 13.1.5); the mirror keeps no modification dates.
func ifRangeHolds(ifRange string, dgst digest.Digest) bool {
	ifRange = strings.TrimSpace(ifRange)
	return ifRange == "" || ifRange == `"`+dgst.String()+`"`
}

// Resolve applies the range to content of size bytes and returns the first
// byte and the length to send. A range that starts past the end is a
// RANGE_INVALID error carrying the Content-Range the client must get.
func (b *ByteRange) Resolve(size int64) (start, length int64, err error) {
	if b.Start < 0 {
		n := min(b.Suffix, size)
		if n == 0 {
			return 0, 0, unsatisfiable(size)
		}
		return size - n, n, nil
	}
	if b.Start >= size {
		return 0, 0, unsatisfiable(size)
	}
	end := size - 1
	if b.End >= 0 && b.End < end {
		end = b.End
	}
	return b.Start, end - b.Start + 1, nil
}

// String renders the range as a Range header value.
func (b *ByteRange) String() string {
	switch {
	case b.Start < 0:
		return fmt.Sprintf("bytes=-%d", b.Suffix)
	case b.End < 0:
		return fmt.Sprintf("bytes=%d-", b.Start)
	default:
		return fmt.Sprintf("bytes=%d-%d", b.Start, b.End)
	}
}

func rangeError(format string, args ...any) *Error {
	return Errorf(CodeRangeInvalid, format, args...)
}

func unsatisfiable(size int64) *Error {
	e := rangeError("range not satisfiable: content is %d bytes", size)
	e.Header = http.Header{"Content-Range": {fmt.Sprintf("bytes */%d", size)}}
	return e
}

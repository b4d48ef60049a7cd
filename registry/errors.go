package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Code is an OCI distribution error code.
type Code string

// Error codes of the OCI distribution spec, plus the distribution project's
// UNAVAILABLE, RANGE_INVALID and UNKNOWN that clients also understand.
const (
	CodeBlobUnknown      Code = "BLOB_UNKNOWN"
	CodeDigestInvalid    Code = "DIGEST_INVALID"
	CodeManifestUnknown  Code = "MANIFEST_UNKNOWN"
	CodeManifestInvalid  Code = "MANIFEST_INVALID"
	CodeNameInvalid      Code = "NAME_INVALID"
	CodeNameUnknown      Code = "NAME_UNKNOWN"
	CodeTagInvalid       Code = "TAG_INVALID"
	CodeUnauthorized     Code = "UNAUTHORIZED"
	CodeDenied           Code = "DENIED"
	CodeUnsupported      Code = "UNSUPPORTED"
	CodeTooManyRequests  Code = "TOOMANYREQUESTS"
	CodeRangeInvalid     Code = "RANGE_INVALID"
	CodeUnavailable      Code = "UNAVAILABLE"
	CodeUnknown          Code = "UNKNOWN"
	CodePaginationNumber Code = "PAGINATION_NUMBER_INVALID"
)

// defaultStatus is the HTTP status each code is answered with unless an
// Error says otherwise.
var defaultStatus = map[Code]int{
	CodeBlobUnknown:      http.StatusNotFound,
	CodeDigestInvalid:    http.StatusBadRequest,
	CodeManifestUnknown:  http.StatusNotFound,
	CodeManifestInvalid:  http.StatusBadRequest,
	CodeNameInvalid:      http.StatusBadRequest,
	CodeNameUnknown:      http.StatusNotFound,
	CodeTagInvalid:       http.StatusBadRequest,
	CodeUnauthorized:     http.StatusUnauthorized,
	CodeDenied:           http.StatusForbidden,
	CodeUnsupported:      http.StatusMethodNotAllowed,
	CodeTooManyRequests:  http.StatusTooManyRequests,
	CodeRangeInvalid:     http.StatusRequestedRangeNotSatisfiable,
	CodeUnavailable:      http.StatusServiceUnavailable,
	CodeUnknown:          http.StatusInternalServerError,
	CodePaginationNumber: http.StatusBadRequest,
}

// Error is an answer in OCI error form: an HTTP status and one error entry.
// Backends return it to choose exactly what the client sees.
type Error struct {
	Status  int    // HTTP status; 0: the code's usual status
	Code    Code   // OCI error code
	Message string // human-readable, safe to show to clients
	Detail  any    // optional structured detail
	// Header holds extra response headers (Retry-After, Content-Range, ...).
	Header http.Header
	// Internal is detail for the mirror's logs that clients never see.
	Internal string
}

// Errorf returns an Error with code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithStatus returns e answered with status instead of the code's usual one.
func (e *Error) WithStatus(status int) *Error {
	e.Status = status
	return e
}

// Error describes e for logs, Internal detail included.
func (e *Error) Error() string {
	if e.Internal != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Internal)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// HTTPStatus is the status e is answered with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := defaultStatus[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// WriteError writes err as an OCI error response. Errors that are not an
// *Error become 500 UNKNOWN without their text, which may hold internals.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = Errorf(CodeUnknown, "internal error")
	}
	h := w.Header()
	// What was set for content does not describe an error (the error's
	// own headers, such as a 416's Content-Range, follow).
	h.Del("Content-Range")
	h.Del("Accept-Ranges")
	h.Del("Warning")
	for k, vs := range e.Header {
		h[k] = vs
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Del("ETag")
	w.WriteHeader(e.HTTPStatus())
	if r != nil && r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
}

// ParseErrorBody reads an OCI error body (as an upstream registry sends it)
// and returns its first entry, if any.
func ParseErrorBody(body []byte) (code Code, message string, ok bool) {
	var b errorBody
	if json.Unmarshal(body, &b) != nil || len(b.Errors) == 0 || b.Errors[0].Code == "" {
		return "", "", false
	}
	return b.Errors[0].Code, b.Errors[0].Message, true
}

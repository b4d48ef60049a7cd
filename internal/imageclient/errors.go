package imageclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// errorBodyLimit caps how much of an error answer is read.
const errorBodyLimit = 64 << 10

// errorTextLimit caps the plain-text body an error quotes.
const errorTextLimit = 200

// RegistryError is a registry's answer other than 200 to a GET: its
// status and the errors its OCI error body lists (code, message, detail).
// Its text is what a person reads: "manifest v1: MANIFEST_UNKNOWN:
// manifest unknown", never the raw JSON.
type RegistryError struct {
	// What is what was asked for: "manifest v1", "blob sha256:...".
	What string
	// Answer is the status and the body's diagnostics; Unwrap returns
	// it, so errors.As finds a *transport.Error.
	Answer *transport.Error
	// text is a short plain-text body, quoted when it lists no errors.
	text string
}

// Error is What, then each error's code and message ("; " between
// them), or, with none, the status and a short plain-text body.
func (e *RegistryError) Error() string {
	return e.What + ": " + e.describe()
}

func (e *RegistryError) describe() string {
	if len(e.Answer.Errors) == 0 {
		s := fmt.Sprintf("%d %s", e.Answer.StatusCode, http.StatusText(e.Answer.StatusCode))
		if e.text != "" {
			s += ": " + e.text
		}
		return s
	}
	parts := make([]string, 0, len(e.Answer.Errors))
	for _, d := range e.Answer.Errors {
		s := string(d.Code)
		if d.Message != "" {
			s += ": " + d.Message
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func (e *RegistryError) Unwrap() error { return e.Answer }

// StatusCode is the HTTP status of the answer.
func (e *RegistryError) StatusCode() int { return e.Answer.StatusCode }

// statusError reads the answer to the GET of what, which is not a 200,
// into a *RegistryError.
func statusError(what string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	answer := &transport.Error{StatusCode: resp.StatusCode}
	if json.Unmarshal(body, answer) != nil {
		answer.Errors = nil
	}
	e := &RegistryError{What: what, Answer: answer}
	if len(answer.Errors) == 0 && isPlainText(resp.Header.Get("Content-Type")) {
		e.text = oneLine(string(body))
	}
	return e
}

// isPlainText tells whether a Content-Type is text/plain, the one kind of
// body short enough and readable enough to quote (not HTML, not JSON).
func isPlainText(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/plain"
}

// oneLine is the first line of s, trimmed, without control characters
// (a terminal shows the text), cut to errorTextLimit characters.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	r := []rune(strings.Map(func(c rune) rune {
		if unicode.IsControl(c) {
			return -1
		}
		return c
	}, strings.TrimSpace(s)))
	if len(r) > errorTextLimit {
		return string(r[:errorTextLimit]) + "…"
	}
	return string(r)
}

// IsStatus tells whether err is a registry's answer of that status.
func IsStatus(err error, status int) bool {
	var re *RegistryError
	return errors.As(err, &re) && re.StatusCode() == status
}

package auth

import (
	"fmt"
	"io"
	"log/slog"
	"time"
)

// credential is an Authorization header value for one registry ("Bearer
// <token>" or "Basic <base64>") and when it stops being used. Like Token,
// it never prints its secret: fmt and slog see "registry-credential(…)",
// and the value sits behind a pointer so that reflection over a struct
// holding one prints an address.
type credential struct {
	header *string
	scheme string
	// refreshAt is when the credential is no longer sent; zero: no end.
	refreshAt time.Time
}

// newCredential returns a credential sending "<scheme> <secret>".
func newCredential(scheme, secret string, refreshAt time.Time) credential {
	h := scheme + " " + secret
	return credential{header: &h, scheme: scheme, refreshAt: refreshAt}
}

// value is the Authorization header value; never log it.
func (c credential) value() string {
	if c.header == nil {
		return ""
	}
	return *c.header
}

func (c credential) isZero() bool { return c.header == nil }

// equal reports whether c and d send the same header.
func (c credential) equal(d credential) bool { return c.value() == d.value() }

// usable reports whether c may still be sent at now.
func (c credential) usable(now time.Time) bool {
	return !c.isZero() && (c.refreshAt.IsZero() || now.Before(c.refreshAt))
}

// String describes c without the secret.
func (c credential) String() string {
	switch {
	case c.isZero():
		return "registry-credential(none)"
	case c.refreshAt.IsZero():
		return "registry-credential(" + c.scheme + ")"
	}
	return "registry-credential(" + c.scheme + ", until " + c.refreshAt.UTC().Format(time.RFC3339) + ")"
}

// GoString implements fmt.GoStringer without the secret.
func (c credential) GoString() string { return c.String() }

// Format implements fmt.Formatter: every verb prints String.
func (c credential) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue implements slog.LogValuer without the secret.
func (c credential) LogValue() slog.Value { return slog.StringValue(c.String()) }

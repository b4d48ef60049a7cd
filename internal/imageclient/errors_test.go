package imageclient

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// A registry's error answer reads as its codes and messages, never as
// the raw JSON; other bodies as the status and, for short plain text, the
// text.
func TestRegistryErrorsReadAsTheirMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        string
	}{
		{name: "one error", status: 404, contentType: "application/json",
			body: `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}`,
			want: "manifest v9: MANIFEST_UNKNOWN: manifest unknown"},
		{name: "several errors", status: 403, contentType: "application/json",
			body: `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"},{"code":"UNAUTHORIZED","message":"authentication required"}]}`,
			want: "manifest v9: DENIED: requested access to the resource is denied; UNAUTHORIZED: authentication required"},
		{name: "code only", status: 404, contentType: "application/json", body: `{"errors":[{"code":"NAME_UNKNOWN"}]}`,
			want: "manifest v9: NAME_UNKNOWN"},
		{name: "ECR's rate limit", status: 429, contentType: "application/json",
			body: `{"errors":[{"code":"TOOMANYREQUESTS","message":"Rate exceeded"}]}`, want: "manifest v9: TOOMANYREQUESTS: Rate exceeded"},
		{name: "no body", status: 502, want: "manifest v9: 502 Bad Gateway"},
		{name: "plain text", status: 503, contentType: "text/plain; charset=utf-8", body: "upstream unreachable\nretry later\n",
			want: "manifest v9: 503 Service Unavailable: upstream unreachable"},
		{name: "control characters dropped", status: 500, contentType: "text/plain", body: "bad\x1b[2J thing",
			want: "manifest v9: 500 Internal Server Error: bad[2J thing"},
		{name: "long text cut", status: 500, contentType: "text/plain", body: strings.Repeat("é", 300),
			want: "manifest v9: 500 Internal Server Error: " + strings.Repeat("é", 200) + "…"},
		{name: "HTML not quoted", status: 502, contentType: "text/html", body: "<html><body>Bad Gateway</body></html>",
			want: "manifest v9: 502 Bad Gateway"},
		{name: "JSON that lists no errors not quoted", status: 500, contentType: "application/json", body: `{"message":"x"}`,
			want: "manifest v9: 500 Internal Server Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			if tt.contentType != "" {
				rec.Header().Set("Content-Type", tt.contentType)
			}
			rec.WriteHeader(tt.status)
			rec.WriteString(tt.body)
			err := statusError("manifest v9", rec.Result())
			if err.Error() != tt.want {
				t.Errorf("error %q, want %q", err, tt.want)
			}
			var te *transport.Error
			if !errors.As(err, &te) || te.StatusCode != tt.status || !IsStatus(err, tt.status) {
				t.Errorf("error %v does not carry status %d", err, tt.status)
			}
		})
	}
}

// Warm's error for a missing image is the registry's message.
func TestWarmErrorIsTheRegistrysMessage(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	c := reg.client(Options{})
	_, err := c.Warm(t.Context(), mustParse(t, "team/app:v9"), nil)
	if err == nil || err.Error() != "manifest v9: NOT_FOUND" || !IsStatus(err, http.StatusNotFound) {
		t.Fatalf("Warm of a missing image: %v, want the registry's code", err)
	}
}

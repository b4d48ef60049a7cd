package auth_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

func TestTokenNeverPrintsSecret(t *testing.T) {
	t.Parallel()
	const secret = "QVdTOnN1cGVyLXNlY3JldC1wYXNzd29yZA==" // AWS:super-secret-password
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tok := auth.NewToken(secret, expires)

	if got := tok.Basic(); got != secret {
		t.Fatalf("Basic() = %q, want the token as given", got)
	}
	if got, want := tok.String(), "ecr-token(expires 2030-01-02T03:04:05Z)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	type holder struct {
		Exported   auth.Token
		unexported auth.Token
		ptr        *auth.Token
	}
	h := holder{Exported: tok, unexported: tok, ptr: &tok}
	values := map[string]any{
		"value":   tok,
		"pointer": &tok,
		"struct":  h,
		"&struct": &h,
		"slice":   []auth.Token{tok},
		"map":     map[string]auth.Token{"k": tok},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%20v", "%T"}
	for name, v := range values {
		for _, verb := range verbs {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, secret) || strings.Contains(out, "super-secret") {
				t.Errorf("fmt %s of %s leaks the secret: %s", verb, name, out)
			}
		}
	}
	if out := fmt.Sprint(tok); !strings.Contains(out, "2030-01-02T03:04:05Z") {
		t.Errorf("fmt.Sprint = %q, want the expiry", out)
	}

	var buf bytes.Buffer
	for _, h := range []slog.Handler{
		slog.NewJSONHandler(&buf, nil),
		slog.NewTextHandler(&buf, nil),
	} {
		l := slog.New(h)
		l.Info("token", "tok", tok, "ptr", &tok, "any", slog.AnyValue(tok), "struct", h)
		l.Info("group", slog.Group("g", "tok", tok))
	}
	if strings.Contains(buf.String(), secret) {
		t.Errorf("slog output leaks the secret:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "ecr-token(expires 2030-01-02T03:04:05Z)") {
		t.Errorf("slog output lacks the token description:\n%s", buf.String())
	}

	j, err := json.Marshal(h)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	if strings.Contains(string(j), secret) {
		t.Errorf("JSON leaks the secret: %s", j)
	}
}

func TestTokenHelpers(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a := auth.NewToken("YQ==", now.Add(time.Hour))
	tests := []struct {
		name      string
		tok       auth.Token
		wantZero  bool
		wantValid bool
		equalsA   bool
	}{
		{name: "zero", tok: auth.Token{}, wantZero: true},
		{name: "empty basic", tok: auth.NewToken("", now.Add(time.Hour)), wantZero: true},
		{name: "valid", tok: a, wantValid: true, equalsA: true},
		{name: "same secret, separate NewToken", tok: auth.NewToken("YQ==", now.Add(time.Hour)), wantValid: true, equalsA: true},
		{name: "expired", tok: auth.NewToken("YQ==", now), equalsA: true},
		{name: "different", tok: auth.NewToken("Yg==", now.Add(time.Hour)), wantValid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.tok.IsZero(); got != tt.wantZero {
				t.Errorf("IsZero = %v", got)
			}
			if got := tt.tok.Valid(now); got != tt.wantValid {
				t.Errorf("Valid = %v", got)
			}
			if got := tt.tok.Equal(a); got != tt.equalsA {
				t.Errorf("Equal = %v", got)
			}
		})
	}
	if got := (auth.Token{}).String(); got != "ecr-token(none)" {
		t.Errorf("zero String() = %q", got)
	}
}

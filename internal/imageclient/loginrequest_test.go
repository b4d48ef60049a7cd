package imageclient

import (
	"errors"
	"strings"
	"testing"
)

// Resolve takes the login from --username and stdin, or from the URL,
// never from both, and strips it from the URL; no error shows a
// password.
func TestLoginRequestResolve(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		req      LoginRequest
		url      string
		wantURL  string
		wantUser string // "" no login
		wantPass string
		warned   bool   // PasswordInURL
		wantErr  string // "" no error
	}{
		{name: "no login", url: "http://mirror:5000", wantURL: "http://mirror:5000"},
		{name: "user and password in the URL", url: "https://ci:s3cret@mirror:5000/", wantURL: "https://mirror:5000/", wantUser: "ci", wantPass: "s3cret", warned: true},
		{name: "user only in the URL", url: "https://ci@mirror:5000", wantURL: "https://mirror:5000", wantUser: "ci"},
		{name: "username and stdin", req: LoginRequest{Username: "ci", PasswordStdin: true, Stdin: strings.NewReader("s3cret\r\nignored\n")},
			url: "https://mirror:5000", wantURL: "https://mirror:5000", wantUser: "ci", wantPass: "s3cret"},
		{name: "stdin without a newline", req: LoginRequest{Username: "ci", PasswordStdin: true, Stdin: strings.NewReader("s3cret")},
			url: "https://mirror:5000", wantURL: "https://mirror:5000", wantUser: "ci", wantPass: "s3cret"},
		{name: "empty stdin", req: LoginRequest{Username: "ci", PasswordStdin: true, Stdin: strings.NewReader("")},
			url: "https://mirror:5000", wantErr: "--password-stdin: stdin gave no password"},
		{name: "stdin without username", req: LoginRequest{PasswordStdin: true, Stdin: strings.NewReader("s3cret\n")},
			url: "https://mirror:5000", wantErr: "--password-stdin needs --username"},
		{name: "username without stdin", req: LoginRequest{Username: "ci"}, url: "https://mirror:5000", wantErr: "--username needs --password-stdin"},
		{name: "username and a URL login", req: LoginRequest{Username: "ci", PasswordStdin: true, Stdin: strings.NewReader("s3cret\n")},
			url: "https://ci:other@mirror:5000", warned: true, wantErr: "give the login once"},
		{name: "unparsable URL", url: "https://ci:s3cret@mirror:5000/%zz", wantErr: `--mirror "https://xxxxx@mirror:5000/%zz" is not an http(s) URL`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ml, err := tt.req.Resolve(tt.url)
			if ml.PasswordInURL != tt.warned {
				t.Errorf("PasswordInURL %v, want %v", ml.PasswordInURL, tt.warned)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("got %v, want an error with %q and no password", err, tt.wantErr)
				}
				return
			}
			if err != nil || ml.URL != tt.wantURL {
				t.Fatalf("got %q, %v; want %q", ml.URL, err, tt.wantURL)
			}
			if tt.wantUser == "" {
				if ml.Login != nil {
					t.Fatalf("login %+v, want none", ml.Login)
				}
				return
			}
			if ml.Login == nil || ml.Login.Username != tt.wantUser || ml.Login.Password != tt.wantPass || ml.Login.Source == "" {
				t.Fatalf("login %+v, want %s/%s with its source", ml.Login, tt.wantUser, tt.wantPass)
			}
		})
	}
}

// The hint says how to log in when the mirror asks for a login, and
// only then.
func TestLoginHint(t *testing.T) {
	t.Parallel()
	login := LoginHint(&LoginError{Registry: "https://mirror:5000"}, "https://mirror:5000", "mirror:5000")
	if !strings.Contains(login, `docker login mirror:5000`) || !strings.Contains(login, "--username NAME --password-stdin") {
		t.Fatalf("hint for a login error: %q", login)
	}
	other := LoginHint(errors.New("connection refused"), "https://mirror:5000", "mirror:5000")
	if other != "mirror https://mirror:5000: connection refused" {
		t.Fatalf("hint for another error: %q", other)
	}
}

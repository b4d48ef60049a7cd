package imageclient

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
)

// LoginRequest is how a command was asked to log in to a mirror:
// --username with --password-stdin, whose password is read from Stdin.
type LoginRequest struct {
	Username      string
	PasswordStdin bool
	Stdin         io.Reader
}

// MirrorLogin is a mirror's URL, without credentials, and the login to
// send it.
type MirrorLogin struct {
	URL string
	// Login is --username's, or the URL's own, or nil (Options.Keychain's
	// is looked up if the mirror asks).
	Login *Login
	// PasswordInURL says the URL held a password, which process lists
	// and shell history show: the caller warns of it.
	PasswordInURL bool
}

// Resolve splits rawURL (--mirror) into the mirror's URL and the login
// to send it: --username's with the password read from Stdin, or the
// URL's own userinfo. Its errors never show a password; with an error,
// only PasswordInURL is set.
func (r LoginRequest) Resolve(rawURL string) (MirrorLogin, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return MirrorLogin{}, fmt.Errorf("--mirror %q is not an http(s) URL", redactURL(rawURL))
	}
	var out MirrorLogin
	if u.User != nil {
		pw, hasPassword := u.User.Password()
		out.Login = &Login{Username: u.User.Username(), Password: pw, Source: "the --mirror URL"}
		out.PasswordInURL = hasPassword
		u.User = nil
	}
	out.URL = u.String()
	// Past here an error keeps PasswordInURL, so that it is warned of.
	refused := MirrorLogin{PasswordInURL: out.PasswordInURL}
	switch {
	case r.PasswordStdin && r.Username == "":
		return refused, errors.New("--password-stdin needs --username")
	case r.Username != "" && !r.PasswordStdin:
		return refused, errors.New("--username needs --password-stdin (the password is read from stdin, never from a flag)")
	case r.Username != "" && out.Login != nil:
		return refused, errors.New("--username and a user in the --mirror URL: give the login once")
	case r.Username == "":
		return out, nil
	}
	pw, err := readPassword(r.Stdin)
	if err != nil {
		return refused, err
	}
	out.Login = &Login{Username: r.Username, Password: pw, Source: "--username"}
	return out, nil
}

// readPassword reads one line from stdin (a terminal too, without a
// prompt), without its line ending.
func readPassword(stdin io.Reader) (string, error) {
	if stdin == nil {
		return "", errors.New("--password-stdin: no stdin to read")
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("--password-stdin: reading stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("--password-stdin: stdin gave no password")
	}
	return pw, nil
}

// userinfo matches the credentials of a URL that may not parse.
var userinfo = regexp.MustCompile(`//[^/@]*@`)

// redactURL is rawURL with any password in it masked.
func redactURL(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Redacted()
	}
	return userinfo.ReplaceAllString(rawURL, "//xxxxx@")
}

// LoginHint is the line a command prints when it cannot reach or log in
// to the mirror at mirror (err from [Client.Ping]; host is the mirror's
// host): how to log in, for a *LoginError.
func LoginHint(err error, mirror, host string) string {
	var le *LoginError
	if errors.As(err, &le) {
		return fmt.Sprintf("mirror %v; log in with \"docker login %s\" (or a credential helper for it in the Docker config), "+
			"or give --username NAME --password-stdin", err, host)
	}
	return fmt.Sprintf("mirror %s: %v", mirror, err)
}

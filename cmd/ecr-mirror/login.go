package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
)

// loginUsage is the part of warm's and export's help on logging in.
const loginUsage = `A mirror with HTPASSWD_FILE asks for a login. It is taken, when the mirror
asks, from the Docker config as docker and crane find it (DOCKER_CONFIG, else
~/.docker/config.json: its "auths", "credHelpers" and "credsStore"), so
"docker login mirror.internal:5000" is enough; or give --username NAME with
--password-stdin (one line read from stdin). A password in the --mirror URL
works but is visible in process lists and shell history.
`

// loginFlags are the flags that log the image commands in to a mirror.
type loginFlags struct {
	username      string
	passwordStdin bool
}

func (lf *loginFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&lf.username, "username", "", "log in to the mirror as this user, the password read with --password-stdin (default: the Docker config's login for the mirror, if it asks for one)")
	fs.BoolVar(&lf.passwordStdin, "password-stdin", false, "read the password of --username from stdin (one line)")
}

// login splits rawURL into the mirror's URL, without credentials, and
// the login to send it: --username's with the password read from stdin,
// or the URL's own (with a warning on stderr), or nil (the Docker
// config's is looked up if the mirror asks). Its errors never show a
// password.
func (lf *loginFlags) login(rawURL string, stdin io.Reader, stderr io.Writer, cmd string) (string, *imageclient.Login, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", nil, fmt.Errorf("--mirror %q is not an http(s) URL", redactURL(rawURL))
	}
	var fromURL *imageclient.Login
	if u.User != nil {
		pw, hasPassword := u.User.Password()
		fromURL = &imageclient.Login{Username: u.User.Username(), Password: pw, Source: "the --mirror URL"}
		if hasPassword {
			fmt.Fprintf(stderr, "ecr-mirror %s: warning: the password in --mirror is visible in process lists and shell history; "+
				"use \"docker login %s\" or --username with --password-stdin instead\n", cmd, u.Host)
		}
		u.User = nil
	}
	switch {
	case lf.passwordStdin && lf.username == "":
		return "", nil, errors.New("--password-stdin needs --username")
	case lf.username != "" && !lf.passwordStdin:
		return "", nil, errors.New("--username needs --password-stdin (the password is read from stdin, never from a flag)")
	case lf.username != "" && fromURL != nil:
		return "", nil, errors.New("--username and a user in the --mirror URL: give the login once")
	case lf.username == "":
		return u.String(), fromURL, nil
	}
	pw, err := readPassword(stdin)
	if err != nil {
		return "", nil, err
	}
	return u.String(), &imageclient.Login{Username: lf.username, Password: pw, Source: "--username"}, nil
}

// readPassword reads one line from stdin (a terminal too, without a
// prompt), without its line ending.
func readPassword(stdin io.Reader) (string, error) {
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

// loginHint is the line the image commands print when the mirror cannot
// be reached or logged in to (host is the mirror's host).
func loginHint(err error, mirror, host string) string {
	var le *imageclient.LoginError
	if errors.As(err, &le) {
		return fmt.Sprintf("mirror %v; log in with \"docker login %s\" (or a credential helper for it in the Docker config), "+
			"or give --username NAME --password-stdin", err, host)
	}
	return fmt.Sprintf("mirror %s: %v", mirror, err)
}

package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"

	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
)

// loginFlags are the flags that log the image commands in to a mirror.
type loginFlags struct {
	username      string
	passwordStdin bool
}

func (lf *loginFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&lf.username, "username", "", "log in to the mirror as this user, the password read with --password-stdin (default: the Docker config's login for the mirror, if it asks for one)")
	fs.BoolVar(&lf.passwordStdin, "password-stdin", false, "read the password of --username from stdin (one line)")
}

// login is the mirror's URL, without credentials, and the login to send
// it (imageclient.LoginRequest.Resolve), warning on stderr of a password
// in the URL.
func (lf *loginFlags) login(rawURL string, stdin io.Reader, stderr io.Writer, cmd string) (imageclient.MirrorLogin, error) {
	req := imageclient.LoginRequest{Username: lf.username, PasswordStdin: lf.passwordStdin, Stdin: stdin}
	ml, err := req.Resolve(rawURL)
	if ml.PasswordInURL {
		u, _ := url.Parse(rawURL) // it parsed, or no password was found
		fmt.Fprintf(stderr, "ecr-mirror %s: warning: the password in --mirror is visible in process lists and shell history; "+
			"use \"docker login %s\" or --username with --password-stdin instead\n", cmd, u.Host)
	}
	return ml, err
}

package auth

import (
	"net/http"
	"strings"
)

// challenge is one parsed WWW-Authenticate challenge (RFC 7235): its
// scheme in lower case ("bearer", "basic") and its parameters, names in
// lower case, values unquoted.
type challenge struct {
	scheme string
	params map[string]string
}

// pickChallenge returns the challenge of a 401 the transport can answer:
// Bearer (with a realm) before Basic; ok is false when there is neither.
func pickChallenge(h http.Header) (challenge, bool) {
	var basic *challenge
	for _, v := range h.Values("WWW-Authenticate") {
		for _, c := range parseChallenges(v) {
			switch {
			case c.scheme == "bearer" && c.params["realm"] != "":
				return c, true
			case c.scheme == "basic" && basic == nil:
				basic = &c
			}
		}
	}
	if basic != nil {
		return *basic, true
	}
	return challenge{}, false
}

// parseChallenges splits one WWW-Authenticate value into its challenges:
// `Bearer realm="https://r/token",service="reg",scope="repository:a:pull"`.
// A scheme is a token not followed by "="; parameters are name=token or
// name="quoted string" separated by commas. Malformed parts are skipped.
func parseChallenges(v string) []challenge {
	var out []challenge
	p := headerParser{s: v}
	for {
		p.skip(" \t,")
		name := p.token()
		if name == "" {
			if p.done() {
				return out
			}
			p.i++ // an unexpected character: skip it
			continue
		}
		p.skip(" \t")
		if !p.consume('=') {
			out = append(out, challenge{scheme: strings.ToLower(name), params: map[string]string{}})
			continue
		}
		p.skip(" \t")
		val := p.value()
		if len(out) > 0 {
			out[len(out)-1].params[strings.ToLower(name)] = val
		}
	}
}

// headerParser walks a header value.
type headerParser struct {
	s string
	i int
}

func (p *headerParser) done() bool { return p.i >= len(p.s) }

func (p *headerParser) skip(chars string) {
	for !p.done() && strings.IndexByte(chars, p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *headerParser) consume(c byte) bool {
	if !p.done() && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// token reads an RFC 7230 token; ":" and "/" are accepted too, so that an
// unquoted URL (realm=https://host/token) reads whole.
func (p *headerParser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// value reads a parameter value: a quoted string (with \-escapes) or a token.
func (p *headerParser) value() string {
	if !p.consume('"') {
		return p.token()
	}
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String()
		case c == '\\' && !p.done():
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~:/", c) >= 0
}

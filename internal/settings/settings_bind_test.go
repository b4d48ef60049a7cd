package settings

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Each binder stores what it accepts in its field and refuses the rest
// with an error that quotes the value.
func TestSettingBinders(t *testing.T) {
	t.Parallel()
	var (
		s   string
		n   int
		n64 int64
		d   time.Duration
		b   bool
	)
	tests := []struct {
		name    string
		bind    func(string) error
		in      string
		got     func() any
		want    any
		wantErr string
	}{
		{name: "text empty", bind: bindText(&s), in: "", got: func() any { return s }, want: ""},
		{name: "non-empty refused empty", bind: bindNonEmpty(&s), in: "", wantErr: "is empty"},
		{name: "url", bind: bindHTTPURL(&s), in: "http://127.0.0.1:9", got: func() any { return s }, want: "http://127.0.0.1:9"},
		{name: "url not http", bind: bindHTTPURL(&s), in: "ftp://x", wantErr: `"ftp://x" is not an http(s) URL`},
		{name: "optional addr empty", bind: bindAddr(&s, false), in: "", got: func() any { return s }, want: ""},
		{name: "required addr empty", bind: bindAddr(&s, true), in: "", wantErr: "is not host:port"},
		{name: "addr without port", bind: bindAddr(&s, false), in: "9090", wantErr: `"9090" is not host:port`},
		{name: "size", bind: bindSize(&n64, true), in: "2m", got: func() any { return n64 }, want: int64(2 << 20)},
		{name: "optional size empty", bind: bindSize(&n64, false), in: "", got: func() any { return n64 }, want: int64(2 << 20)},
		{name: "size zero", bind: bindSize(&n64, false), in: "0", wantErr: `"0" is not a positive size`},
		{name: "bool", bind: bindBool(&b), in: "true", got: func() any { return b }, want: true},
		{name: "bool bad", bind: bindBool(&b), in: "maybe", wantErr: `"maybe" is not true or false`},
		{name: "count", bind: bindCount(&n, "%q is not a count"), in: "0", got: func() any { return n }, want: 0},
		{name: "count negative", bind: bindCount(&n, "%q is not a count"), in: "-1", wantErr: `"-1" is not a count`},
		{name: "duration zero", bind: bindDuration(&d, "%q bad"), in: "0", got: func() any { return d }, want: time.Duration(0)},
		{name: "positive duration zero", bind: bindPositiveDuration(&d), in: "0", wantErr: `"0" is not a positive duration`},
		{name: "stale always", bind: bindStaleIfError(&d), in: "Always", got: func() any { return d }, want: StaleAlways},
		{name: "stale bad", bind: bindStaleIfError(&d), in: "soon", wantErr: `"soon" is not a duration such as 72h, 0 or always`},
		{name: "connections auto", bind: bindMaxClientConnections(&n), in: "AUTO", got: func() any { return n }, want: 0},
		{name: "connections zero", bind: bindMaxClientConnections(&n), in: "0", wantErr: `"0" is not a positive count (or auto)`},
		{name: "log format upper", bind: bindLogFormat(&s), in: "JSON", got: func() any { return s }, want: "json"},
		{name: "log format bad", bind: bindLogFormat(&s), in: "xml", wantErr: `"xml" is not text or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the cases share their fields.
			err := tt.bind(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("bind(%q) = %v, want an error with %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("bind(%q): %v", tt.in, err)
			}
			if got := tt.got(); got != tt.want {
				t.Fatalf("bind(%q) stored %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// A list setting reports every bad item, each named by the setting.
func TestBadListItemsAreEachNamed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{name: "one", err: errors.New(`"x" is bad`), want: []string{`ALLOW_NETWORKS: "x" is bad`}},
		{name: "joined", err: errors.Join(errors.New(`"x" is bad`), errors.New(`"y" is bad`)),
			want: []string{`ALLOW_NETWORKS: "x" is bad`, `ALLOW_NETWORKS: "y" is bad`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := fmt.Sprint(named("ALLOW_NETWORKS", tt.err)); got != fmt.Sprint(tt.want) {
				t.Fatalf("named = %s, want %s", got, tt.want)
			}
		})
	}
}

// A setting's value is its flag, else its variable, else the fallback
// variable, else the config file, else its default; its origin says which.
func TestSettingResolveOrder(t *testing.T) {
	t.Parallel()
	file := &configFile{path: "c.yaml", values: map[string]fileValue{"AWS_REGION": {value: "file", line: 3}}}
	tests := []struct {
		name     string
		flag     string
		env      map[string]string
		file     *configFile
		want     string
		wantFrom string
	}{
		{name: "flag wins", flag: "f", env: map[string]string{"AWS_REGION": "e", "AWS_DEFAULT_REGION": "fb"}, file: file, want: "f", wantFrom: "-region"},
		{name: "variable", env: map[string]string{"AWS_REGION": " e ", "AWS_DEFAULT_REGION": "fb"}, file: file, want: "e", wantFrom: "AWS_REGION"},
		{name: "fallback variable", env: map[string]string{"AWS_REGION": "  ", "AWS_DEFAULT_REGION": "fb"}, file: file, want: "fb", wantFrom: "AWS_DEFAULT_REGION"},
		{name: "file", env: map[string]string{}, file: file, want: "file", wantFrom: "c.yaml:3: aws_region"},
		{name: "default", env: map[string]string{}, file: &configFile{}, want: "def", wantFrom: "AWS_REGION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &setting{env: "AWS_REGION", fallbackEnv: "AWS_DEFAULT_REGION", def: "def"}
			s.flagValue = &flagValue{s: s, value: tt.flag}
			if tt.flag != "" {
				s.flagValue.typed = "region"
			}
			got := s.resolve(func(k string) string { return tt.env[k] }, tt.file)
			if got != tt.want || s.from.String() != tt.wantFrom {
				t.Fatalf("resolve = %q from %q, want %q from %q", got, s.from, tt.want, tt.wantFrom)
			}
		})
	}
}

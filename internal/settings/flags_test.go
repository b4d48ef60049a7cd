package settings

import (
	"bytes"
	"errors"
	"flag"
	"strconv"
	"strings"
	"testing"
)

// The server's help is the settings list: every setting shows its flag
// (with what it takes, or nothing for a true/false one), its variable,
// its config-file key, its default and its deprecated names.
func TestUsageListsEverySetting(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	Usage(&out)
	help := out.String()
	for _, s := range settings(&Config{}) {
		entry, ok := helpEntry(help, s.flagName())
		if !ok {
			t.Errorf("help has no entry for -%s", s.flagName())
			continue
		}
		want := []string{"$" + s.env, firstWords(s.help)}
		if s.env != configFileEnv {
			want = append(want, "file key "+s.fileKey())
		} else if strings.Contains(entry, "file key") {
			t.Errorf("help entry of -%s names a file key, but a config file cannot name another:\n%s", s.flagName(), entry)
		}
		if s.def != "" {
			want = append(want, "default "+strconv.Quote(s.def))
		}
		for _, a := range s.aliases {
			want = append(want, "-"+a)
		}
		for _, w := range want {
			if !strings.Contains(entry, w) {
				t.Errorf("help entry of -%s lacks %q:\n%s", s.flagName(), w, entry)
			}
		}
		if head, _, _ := strings.Cut(entry, "\n"); (s.arg == argBool) != (head == "  -"+s.flagName()) {
			t.Errorf("help entry of -%s starts %q; a true/false flag takes no argument, others name theirs", s.flagName(), head)
		}
	}
}

// helpEntry is the part of help about flag: from its line to the next
// flag's.
func helpEntry(help, flag string) (string, bool) {
	_, rest, ok := strings.Cut(help, "\n  -"+flag)
	if !ok || rest != "" && rest[0] != ' ' && rest[0] != '\n' {
		return "", false
	}
	entry, _, _ := strings.Cut(rest, "\n  -")
	return "  -" + flag + entry, true
}

// firstWords is the start of a help text, before it may wrap.
func firstWords(help string) string {
	words := strings.Fields(help)
	return strings.Join(words[:min(3, len(words))], " ")
}

// -h prints the help and reports flag.ErrHelp.
func TestHelpFlag(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, err := Parse([]string{"-h"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-cache-max-size SIZE") {
		t.Fatalf("Parse(-h) = %v, help:\n%s", err, out.String())
	}
}

// Flags: a true/false flag stands alone, deprecated names still work
// with a warning, and bad values are named as the user typed them.
func TestFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{"UPSTREAM": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1"}
	tests := []struct {
		name     string
		args     []string
		check    func(*Config) bool
		wantOut  string
		wantErr  string
		wantNone string // must not be in out
	}{
		{name: "bool alone", args: []string{"-push"}, check: func(c *Config) bool { return c.Push }},
		{name: "bool alone then more", args: []string{"-push", "-cache-max-size", "1g"}, check: func(c *Config) bool { return c.Push && c.CacheMaxSize == 1<<30 }},
		{name: "bool false", args: []string{"-push=false"}, check: func(c *Config) bool { return !c.Push }},
		{name: "new name", args: []string{"-aws-region", "us-east-2"}, check: func(c *Config) bool { return c.Region == "us-east-2" }, wantNone: "deprecated"},
		{name: "old name", args: []string{"-region", "us-east-2", "-ecr-endpoint", "http://127.0.0.1:8"},
			check:   func(c *Config) bool { return c.Region == "us-east-2" && c.ECREndpoint == "http://127.0.0.1:8" },
			wantOut: "flag -region is deprecated: use -aws-region"},
		{name: "bad value under the old name", args: []string{"-ecr-endpoint", "nope"}, wantErr: `-ecr-endpoint: "nope" is not an http(s) URL`},
		{name: "bad value under the new name", args: []string{"--aws-endpoint-url-ecr=nope"}, wantErr: `-aws-endpoint-url-ecr: "nope"`},
		{name: "bad bool", args: []string{"-push=maybe"}, wantErr: `-push: "maybe" is not true or false`},
		{name: "unknown flag", args: []string{"-cache-size", "1g"}, wantErr: "flag provided but not defined: -cache-size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			cfg, err := Parse(tt.args, func(k string) string { return env[k] }, &out)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			case !tt.check(cfg):
				t.Fatalf("config %+v", cfg)
			case !strings.Contains(out.String(), tt.wantOut) || tt.wantNone != "" && strings.Contains(out.String(), tt.wantNone):
				t.Fatalf("output %q, want %q and not %q", out.String(), tt.wantOut, tt.wantNone)
			}
		})
	}
}

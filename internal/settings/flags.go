package settings

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// flagValue is a setting's flag as given on the command line: its value
// and the name the user typed (the flag or a deprecated alias).
type flagValue struct {
	s       *setting
	value   string
	typed   string // "": not given
	aliased bool   // typed is a deprecated alias
}

func (f *flagValue) String() string {
	if f == nil {
		return ""
	}
	return f.value
}

// Set records the value as typed; parse checks it with the others.
func (f *flagValue) Set(v string) error {
	f.value = v
	return nil
}

// IsBoolFlag lets a true/false setting's flag stand alone (-push).
func (f *flagValue) IsBoolFlag() bool { return f.s.arg == argBool }

// namedFlag is a flag.Value that records which name set it.
type namedFlag struct {
	*flagValue
	name    string
	aliased bool
}

func (n namedFlag) Set(v string) error {
	n.typed, n.flagValue.aliased = n.name, n.aliased
	return n.flagValue.Set(v)
}

// newFlagSet binds every setting's flag, and its deprecated aliases, to
// s.flagValue.
func newFlagSet(all []*setting) *flag.FlagSet {
	fs := flag.NewFlagSet("ecr-mirror", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parseFlags reports the error, once
	for _, s := range all {
		s.flagValue = &flagValue{s: s}
		fs.Var(namedFlag{flagValue: s.flagValue, name: s.flagName()}, s.flagName(), s.help)
		for _, a := range s.aliases {
			fs.Var(namedFlag{flagValue: s.flagValue, name: a, aliased: true}, a, "deprecated: -"+s.flagName())
		}
	}
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args into the settings' flags and warns on out of
// each deprecated name used; -h writes the help there.
func parseFlags(all []*setting, args []string, out io.Writer) error {
	fs := newFlagSet(all)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		writeUsage(out, all)
		return err
	} else if err != nil {
		return fmt.Errorf("%w (ecr-mirror serve --help lists the flags)", err)
	}
	if fs.NArg() > 0 && fs.Arg(0) != "serve" || fs.NArg() > 1 {
		return fmt.Errorf("unexpected arguments %q: ecr-mirror takes only flags", fs.Args())
	}
	for _, s := range all {
		if f := s.flagValue; f.aliased {
			fmt.Fprintf(out, "ecr-mirror: flag -%s is deprecated: use -%s\n", f.typed, s.flagName())
		}
	}
	return nil
}

// Usage writes the server's help: every setting with its flag, what the
// flag takes, its variable, config-file key and default.
func Usage(w io.Writer) {
	writeUsage(w, settings(&Config{}))
}

func writeUsage(w io.Writer, all []*setting) {
	fmt.Fprint(w, `Usage: ecr-mirror [serve] [flags]

Serves a caching pull-through mirror of the UPSTREAM registries. Each
setting is a flag, an environment variable and a CONFIG_FILE key; a flag
wins over its variable, a variable over the file, the file over the
default. "ecr-mirror config check" prints the configuration in effect.
The variables of aws-ecr-http-proxy, aws_ecr_proxy and ecr_reverse_proxy
(PORT, LISTEN_HOST, ENABLE_SSL, ECR_REGISTRY, ...) are read as these
settings: see docs/migrating.md.

`)
	for _, s := range all {
		writeFlagHelp(w, s)
	}
}

// writeFlagHelp writes one setting's entry of the help.
func writeFlagHelp(w io.Writer, s *setting) {
	arg := " " + s.arg
	if s.arg == argBool {
		arg = "" // -push alone is -push=true
	}
	fmt.Fprintf(w, "  -%s%s\n", s.flagName(), arg)
	fmt.Fprint(w, indent(s.help, "        "))
	vars := "$" + s.env
	if s.fallbackEnv != "" {
		vars += " (or $" + s.fallbackEnv + ")"
	}
	line := "        " + vars
	if s.env != configFileEnv { // the file cannot name itself
		line += ", file key " + s.fileKey()
	}
	switch {
	case s.def != "":
		line += ", default " + strconv.Quote(s.def)
	case s.arg == argBool:
		line += ", default false"
	}
	if len(s.aliases) > 0 {
		line += "; deprecated: -" + strings.Join(s.aliases, ", -")
	}
	fmt.Fprintln(w, line)
}

// indent wraps text at about 78 columns, each line starting with prefix.
func indent(text, prefix string) string {
	var b strings.Builder
	line := prefix
	for _, word := range strings.Fields(text) {
		if len(line)+1+len(word) > 78 && line != prefix {
			b.WriteString(line + "\n")
			line = prefix
		}
		if line != prefix {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}

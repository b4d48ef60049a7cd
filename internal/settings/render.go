package settings

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// WriteFile writes the configuration in effect as a config file: every
// setting in list order under its help, those set (by the file, a
// variable or a flag) as keys with a comment naming where they came from,
// the others commented out with their defaults. Read back as CONFIG_FILE
// with no flags or variables, it gives the same Config, but for secret
// settings, which are never written: their lines say to set them by
// their variables. A Config not made by Parse writes nothing.
func (c *Config) WriteFile(w io.Writer) error {
	if c.source == nil {
		return nil
	}
	return writeSettings(w, c.source.all)
}

func writeSettings(w io.Writer, all []*setting) error {
	b := bufio.NewWriter(w)
	fmt.Fprint(b, "# ecr-mirror configuration in effect (ecr-mirror config check): the config\n"+
		"# file, the environment and the flags merged. Settings left at their\n"+
		"# defaults are commented out.\n")
	for _, s := range all {
		if s.env == configFileEnv {
			continue // a file does not name itself
		}
		fmt.Fprintf(b, "\n%s", comment(s.help))
		switch {
		case s.from.kind == fromDefault:
			fmt.Fprintf(b, "# %s:%s\n", s.fileKey(), yamlValue(s, s.value, "# "))
		case s.secret:
			fmt.Fprintf(b, "# %s: (secret, not printed: set it again by $%s)\n", s.fileKey(), s.env)
		default:
			fmt.Fprintf(b, "# from %s\n%s:%s\n", describe(s.from), s.fileKey(), yamlValue(s, s.value, ""))
		}
	}
	return b.Flush()
}

// describe says where a value came from, for a comment.
func describe(o origin) string {
	switch o.kind {
	case fromFlag:
		return "flag -" + o.name
	case fromEnv:
		return "$" + o.name
	case fromAlias:
		return "$" + strings.ReplaceAll(o.name, ", ", ", $") + ", read as " + o.of
	}
	return fmt.Sprintf("%s line %d", o.path, o.line)
}

// yamlValue writes v after a key: a scalar on the same line, a list or
// mapping (as s's shape allows) on the following lines, each starting
// with prefix.
func yamlValue(s *setting, v, prefix string) string {
	if v == "" {
		return ""
	}
	var items []string
	switch s.shape {
	case list:
		items = SplitList(v)
	case rules:
		items = splitRules(v)
	case pairs:
		if !allPairs(v) {
			return " " + yamlScalar(v) // PULL_THROUGHS' prefix:port entries
		}
		var b strings.Builder
		for _, item := range SplitList(v) {
			k, val, _ := strings.Cut(item, "=")
			fmt.Fprintf(&b, "\n%s  %s: %s", prefix, yamlKey(strings.TrimSpace(k)), yamlScalar(strings.TrimSpace(val)))
		}
		return b.String()
	default:
		return " " + yamlScalar(v)
	}
	var b strings.Builder
	for _, item := range items {
		fmt.Fprintf(&b, "\n%s  - %s", prefix, yamlScalar(item))
	}
	return b.String()
}

// allPairs reports whether every item of v is key=value.
func allPairs(v string) bool {
	for _, item := range SplitList(v) {
		if !strings.Contains(item, "=") {
			return false
		}
	}
	return true
}

// splitRules splits ACCESS_RULES into its rules, as access.ParseRules
// does: at ";" and line ends, dropping comments and blanks.
func splitRules(v string) []string {
	var out []string
	for _, line := range strings.Split(v, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, r := range strings.Split(line, ";") {
			if r = strings.TrimSpace(r); r != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// yamlKey writes k as a mapping key that reads back as k: plain when it
// reads back so, else quoted.
func yamlKey(k string) string {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(k+": x"), &n); err == nil && len(n.Content) == 1 {
		m := n.Content[0]
		if m.Kind == yaml.MappingNode && len(m.Content) == 2 && m.Content[0].Kind == yaml.ScalarNode && m.Content[0].Value == k && !strings.Contains(k, "#") {
			return k
		}
	}
	out, _ := yaml.Marshal(k)
	return strings.TrimSuffix(string(out), "\n")
}

// yamlScalar writes v as a YAML scalar that reads back as v: plain when
// it reads back so, else quoted.
func yamlScalar(v string) string {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("k: "+v), &n); err == nil && len(n.Content) == 1 {
		m := n.Content[0]
		if len(m.Content) == 2 && m.Content[1].Kind == yaml.ScalarNode && m.Content[1].Tag != "!!null" && m.Content[1].Value == v && !strings.Contains(v, "#") {
			return v
		}
	}
	out, _ := yaml.Marshal(v)
	return strings.TrimSuffix(string(out), "\n")
}

// comment writes text as # lines of at most about 76 characters.
func comment(text string) string {
	var b strings.Builder
	line := "#"
	for _, word := range strings.Fields(text) {
		if len(line)+1+len(word) > 76 && line != "#" {
			b.WriteString(line + "\n")
			line = "#"
		}
		line += " " + word
	}
	b.WriteString(line + "\n")
	return b.String()
}

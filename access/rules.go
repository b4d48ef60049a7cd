package access

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Level is what a Rule grants.
type Level int

// Levels; Push includes Pull.
const (
	Pull Level = iota + 1 // GET and HEAD
	Push                  // every method, uploads included
)

// String returns "pull" or "push".
func (l Level) String() string {
	switch l {
	case Pull:
		return "pull"
	case Push:
		return "push"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// AllRepositories, as a Rule's repository prefix, matches every repository.
const AllRepositories = "*"

// Rule grants Level on the repositories under Repositories to the clients
// it names. ParseRules builds rules from their text form (see the package
// documentation).
type Rule struct {
	Level Level
	// Everyone (subject "*") names every client that passed the network and
	// authentication checks.
	Everyone bool
	// Users are htpasswd user names.
	Users []string
	// Networks hold client addresses.
	Networks []netip.Prefix
	// Repositories are repository name prefixes, matched on whole path
	// components, without a trailing "/"; AllRepositories matches all.
	Repositories []string
}

// String writes r in the syntax ParseRules reads.
func (r Rule) String() string {
	var subjects []string
	if r.Everyone {
		subjects = append(subjects, "*")
	}
	subjects = append(subjects, r.Users...)
	for _, n := range r.Networks {
		subjects = append(subjects, n.String())
	}
	return r.Level.String() + ":" + strings.Join(subjects, ",") + ":" + strings.Join(r.Repositories, ",")
}

// matches reports whether r names the client: user (empty when
// authentication is off) at addr (invalid when unknown).
func (r *Rule) matches(user string, addr netip.Addr) bool {
	if r.Everyone {
		return true
	}
	if user != "" {
		for _, u := range r.Users {
			if u == user {
				return true
			}
		}
	}
	return inNetworks(addr, r.Networks)
}

// covers reports whether r's repositories include name. The empty name
// stands for every repository (the catalog): only AllRepositories covers it.
func (r *Rule) covers(name string) bool {
	for _, p := range r.Repositories {
		if p == AllRepositories {
			return true
		}
		if name != "" && (name == p || strings.HasPrefix(name, p) && name[len(p)] == '/') {
			return true
		}
	}
	return false
}

func inNetworks(addr netip.Addr, nets []netip.Prefix) bool {
	if !addr.IsValid() {
		return false
	}
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// ParseRules parses rules written as level:subjects:repositories, separated
// by ";" or newlines, with "#" comments; see the package documentation.
// Blank text gives no rules. Errors name the rule by its position and text
// and say which part is wrong.
func ParseRules(text string) ([]Rule, error) {
	var rules []Rule
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, s := range strings.Split(line, ";") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			r, err := parseRule(s)
			if err != nil {
				return nil, fmt.Errorf("access rule %d (%q): %w", len(rules)+1, s, err)
			}
			rules = append(rules, r)
		}
	}
	return rules, nil
}

func parseRule(s string) (Rule, error) {
	level, rest, ok1 := strings.Cut(s, ":")
	i := strings.LastIndex(rest, ":")
	if !ok1 || i < 0 {
		return Rule{}, errors.New("want level:subjects:repositories, e.g. pull:*:* or push:ci-bot:team/")
	}
	subjects, repos := rest[:i], rest[i+1:]
	var r Rule
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "pull":
		r.Level = Pull
	case "push":
		r.Level = Push
	default:
		return Rule{}, fmt.Errorf("level %q: want pull or push", strings.TrimSpace(level))
	}
	for _, sub := range strings.Split(subjects, ",") {
		sub = strings.TrimSpace(sub)
		if err := r.addSubject(sub); err != nil {
			return Rule{}, fmt.Errorf("subject %q: %w", sub, err)
		}
	}
	for _, p := range strings.Split(repos, ",") {
		p = strings.TrimSpace(p)
		if err := r.addRepository(p); err != nil {
			return Rule{}, fmt.Errorf("repository prefix %q: %w", p, err)
		}
	}
	return r, nil
}

func (r *Rule) addSubject(s string) error {
	switch {
	case s == "":
		return errors.New("empty: subjects are user names, CIDRs or *, separated by commas")
	case s == "*":
		r.Everyone = true
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("not a CIDR: %v", err)
		}
		r.Networks = append(r.Networks, p.Masked())
	default:
		if a, err := netip.ParseAddr(s); err == nil {
			if a.Zone() != "" {
				return errors.New("IPv6 zones are not supported")
			}
			a = a.Unmap()
			r.Networks = append(r.Networks, netip.PrefixFrom(a, a.BitLen()))
			return nil
		}
		for _, c := range s {
			if unicode.IsSpace(c) || unicode.IsControl(c) || c == '*' {
				return errors.New("not a user name, CIDR or *")
			}
		}
		r.Users = append(r.Users, s)
	}
	return nil
}

func (r *Rule) addRepository(p string) error {
	if p == AllRepositories {
		r.Repositories = append(r.Repositories, p)
		return nil
	}
	name := strings.TrimSuffix(p, "/")
	if name == "" {
		return errors.New("empty: repositories are name prefixes or *, separated by commas")
	}
	if err := registry.ValidateName(name); err != nil {
		var e *registry.Error
		if errors.As(err, &e) {
			return errors.New(e.Message)
		}
		return err
	}
	r.Repositories = append(r.Repositories, name)
	return nil
}

package fakeecr

// maxRepositoryLen is ECR's limit on repository names.
const maxRepositoryLen = 256

// ValidRepository reports whether name is a repository name ECR accepts:
// slash-separated components of lower-case letters and digits, joined inside
// a component by ".", "_", "__" or runs of "-" (the OCI distribution grammar),
// at most 256 characters.
func ValidRepository(name string) bool {
	if name == "" || len(name) > maxRepositoryLen {
		return false
	}
	// prev is the class of the previous byte: alnum, one of the separators, or
	// a slash; a name starts as if after a slash.
	const (
		afterAlnum = iota
		afterDot
		afterUnderscore
		afterTwoUnderscores
		afterDash
		afterSlash
	)
	prev := afterSlash
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
			prev = afterAlnum
		case c == '.' && prev == afterAlnum:
			prev = afterDot
		case c == '_' && prev == afterAlnum:
			prev = afterUnderscore
		case c == '_' && prev == afterUnderscore:
			prev = afterTwoUnderscores
		case c == '-' && (prev == afterAlnum || prev == afterDash):
			prev = afterDash
		case c == '/' && prev == afterAlnum:
			prev = afterSlash
		default:
			return false
		}
	}
	return prev == afterAlnum
}

// ValidTag reports whether tag is a valid tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
func ValidTag(tag string) bool {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

package auth

import (
	"sync"
	"time"
)

// maxCachedTokens bounds a tokenCache; expired tokens are dropped when it
// is full, and everything when none has expired.
const maxCachedTokens = 1024

// tokenCache holds one registry's Bearer tokens by scope. It is safe for
// concurrent use.
type tokenCache struct {
	mu     sync.Mutex
	tokens map[string]credential
}

func newTokenCache() *tokenCache { return &tokenCache{tokens: map[string]credential{}} }

// get returns the token for scope, zero when none is held (expired ones
// included: the caller checks usable).
func (c *tokenCache) get(scope string) credential {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[scope]
}

// put holds tok for scope, making room at now when full.
func (c *tokenCache) put(scope string, tok credential, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tokens) >= maxCachedTokens {
		for k, old := range c.tokens {
			if !old.usable(now) {
				delete(c.tokens, k)
			}
		}
		if len(c.tokens) >= maxCachedTokens {
			clear(c.tokens)
		}
	}
	c.tokens[scope] = tok
}

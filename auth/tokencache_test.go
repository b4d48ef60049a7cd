package auth

import (
	"strconv"
	"testing"
	"time"
)

func TestTokenCacheStaysBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newTokenCache()
	for i := range maxCachedTokens {
		until := now.Add(time.Minute)
		if i%2 == 0 {
			until = now.Add(-time.Second) // expired
		}
		c.put("repository:r"+strconv.Itoa(i)+":pull", newCredential("Bearer", "t", until), now)
	}
	c.put("repository:new:pull", newCredential("Bearer", "t", now.Add(time.Minute)), now)
	if n := len(c.tokens); n != maxCachedTokens/2+1 {
		t.Errorf("a full cache with half its tokens expired holds %d after a put, want %d", n, maxCachedTokens/2+1)
	}
	if !c.get("repository:r1:pull").usable(now) || !c.get("repository:new:pull").usable(now) {
		t.Error("unexpired tokens were dropped")
	}
	for i := range maxCachedTokens {
		c.put("repository:s"+strconv.Itoa(i)+":pull", newCredential("Bearer", "t", now.Add(time.Minute)), now)
	}
	if n := len(c.tokens); n > maxCachedTokens {
		t.Errorf("cache holds %d tokens, more than %d", n, maxCachedTokens)
	}
}

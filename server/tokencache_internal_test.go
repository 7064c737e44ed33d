package server

import (
	"testing"
	"time"

	"github.com/backstop-ha/backstop"
)

// TestTokenCache: a cached token is believed for tokenCacheTTL only, and
// a revocation through this replica (clear) takes effect at once, also
// against a lookup that was already under way when it happened (it must
// not put the revoked token back).
func TestTokenCache(t *testing.T) {
	var c tokenCache
	now := time.Now()
	key := tokenKey("bst_secret")
	tok := backstop.Token{ID: "t1", Name: "dashboard", Role: backstop.RoleOperator}
	_, gen, ok := c.get(key, now)
	if ok {
		t.Fatal("empty cache hit")
	}
	c.put(key, tok, gen, now)
	if got, _, ok := c.get(key, now.Add(tokenCacheTTL-time.Millisecond)); !ok || got.ID != "t1" {
		t.Fatalf("within the TTL: %+v %v", got, ok)
	}
	if _, _, ok := c.get(key, now.Add(tokenCacheTTL+time.Millisecond)); ok {
		t.Fatal("believed past its TTL")
	}
	c.clear()
	if _, _, ok := c.get(key, now); ok {
		t.Fatal("revoked token still cached")
	}
	// A lookup that missed before the revocation, answered after it.
	_, gen, _ = c.get(key, now)
	c.clear()
	c.put(key, tok, gen, now)
	if _, _, ok := c.get(key, now); ok {
		t.Fatal("a lookup from before the revocation put the token back")
	}
}

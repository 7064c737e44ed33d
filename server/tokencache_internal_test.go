package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// TestTokenCacheLookupIsShared: requests that miss the cache for the same
// secret at once share one database lookup, and its answer is cached; a
// request arriving after a revocation does not join a lookup that started
// before it (it looks up again, and the older answer is not cached); a
// request whose client gives up stops waiting without failing the others.
func TestTokenCacheLookupIsShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c tokenCache
		key := tokenKey("bst_secret")
		tok := backstop.Token{ID: "t1", Name: "dashboard", Role: backstop.RoleOperator}
		release := make(chan struct{})
		var looks atomic.Int32
		look := func() (backstop.Token, error) {
			looks.Add(1)
			<-release
			return tok, nil
		}
		_, gen, _ := c.get(key, time.Now())
		const waiters = 50
		errs := make(chan error, waiters)
		for range waiters {
			go func() {
				got, err := c.lookup(t.Context(), key, gen, look)
				if err == nil && got.ID != "t1" {
					err = fmt.Errorf("got %+v", got)
				}
				errs <- err
			}()
		}
		gaveUp, cancel := context.WithCancel(t.Context())
		gone := make(chan error, 1)
		go func() {
			_, err := c.lookup(gaveUp, key, gen, look)
			gone <- err
		}()
		synctest.Wait() // every request waits on the lookup under way
		if n := looks.Load(); n != 1 {
			t.Fatalf("%d lookups for %d requests at once, want 1", n, waiters+1)
		}
		cancel()
		if err := <-gone; !errors.Is(err, context.Canceled) {
			t.Fatalf("a request that gave up: %v", err)
		}
		// Revoked while the lookup is under way: a later request looks
		// up on its own.
		c.clear()
		_, gen2, _ := c.get(key, time.Now())
		if _, err := c.lookup(t.Context(), key, gen2, func() (backstop.Token, error) {
			looks.Add(1)
			return backstop.Token{}, backstop.ErrUnauthenticated
		}); !errors.Is(err, backstop.ErrUnauthenticated) {
			t.Fatalf("request after the revocation: %v", err)
		}
		close(release)
		for range waiters {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if n := looks.Load(); n != 2 {
			t.Fatalf("%d lookups, want 2", n)
		}
		if _, _, ok := c.get(key, time.Now()); ok {
			t.Fatal("the answer of a lookup from before the revocation was cached")
		}
		// Without a revocation, the shared answer is cached.
		_, gen3, _ := c.get(key, time.Now())
		if _, err := c.lookup(t.Context(), key, gen3, func() (backstop.Token, error) { return tok, nil }); err != nil {
			t.Fatal(err)
		}
		if got, _, ok := c.get(key, time.Now()); !ok || got.ID != "t1" {
			t.Fatalf("not cached: %+v %v", got, ok)
		}
	})
}

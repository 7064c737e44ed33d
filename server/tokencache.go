package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/backstop-ha/backstop"
)

// tokenCacheTTL is how long a resolved API token is believed without
// asking the database again. Without a cache every API request paid one
// PostgreSQL round trip before any work (a dashboard or monitoring
// system polling the API at 1,000 requests a second: 1,000 lookups a
// second, for a handful of tokens).
//
// The trade-off is revocation. Deleting or reissuing a token through a
// replica empties that replica's cache at once, so the old secret stops
// working there immediately; other replicas (every replica serves the
// API) keep accepting it for at most tokenCacheTTL. A second is shorter
// than any operator's reaction to a leaked token, and a request that got
// through in that second is one its token could have made a moment
// earlier anyway. Only successes are cached: an unknown or revoked
// secret asks the database every time, so a new token works at once.
const tokenCacheTTL = time.Second

// tokenCache remembers resolved API tokens for tokenCacheTTL, keyed by
// the secret's SHA-256 (the secret itself is never kept).
type tokenCache struct {
	// mu guards the fields below.
	mu sync.Mutex
	m  map[[32]byte]tokenEntry
	// gen counts clears: a lookup that started before a revocation must
	// not put back what the revocation removed.
	gen uint64

	// flights shares one database lookup among the requests that miss
	// the cache for the same secret at the same time. Without it, every
	// request arriving while the lookup that refreshes an expired entry
	// waits for a connection missed too and looked the token up itself:
	// when the pool was congested (connection waits of seconds at 1,000
	// GETs/s), nearly every operator request cost two acquires, which
	// congested the pool further.
	flights singleflight.Group
}

type tokenEntry struct {
	t     backstop.Token
	until time.Time
}

func tokenKey(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

// get returns the cached token, or ok false and the generation to pass
// to put after asking the database.
func (c *tokenCache) get(key [32]byte, now time.Time) (t backstop.Token, gen uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.After(e.until) {
		return backstop.Token{}, c.gen, false
	}
	return e.t, c.gen, true
}

// put caches t unless the cache was cleared since get returned gen.
func (c *tokenCache) put(key [32]byte, t backstop.Token, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil || len(c.m) >= 10_000 { // bounded: start over rather than grow
		c.m = map[[32]byte]tokenEntry{}
	}
	c.m[key] = tokenEntry{t: t, until: now.Add(tokenCacheTTL)}
}

// clear forgets every token: a token was revoked or given a new secret
// through this replica.
func (c *tokenCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
	c.gen++
}

// lookup returns the token of a secret the cache did not have: gen is
// what get returned, lookup asks the database (once for all the
// requests that wait on the same secret and generation) and the answer
// is cached. A request that arrives after a revocation has a newer
// generation and never joins a lookup that started before it. ctx
// bounds only this request's wait; the shared lookup runs with what
// lookup gave it, detached from whichever request started it.
func (c *tokenCache) lookup(ctx context.Context, key [32]byte, gen uint64, look func() (backstop.Token, error)) (backstop.Token, error) {
	flight := fmt.Sprintf("%x/%d", key, gen)
	ch := c.flights.DoChan(flight, func() (any, error) {
		t, err := look()
		if err == nil {
			c.put(key, t, gen, time.Now())
		}
		return t, err
	})
	select {
	case <-ctx.Done():
		return backstop.Token{}, ctx.Err()
	case res := <-ch:
		t, _ := res.Val.(backstop.Token)
		return t, res.Err
	}
}

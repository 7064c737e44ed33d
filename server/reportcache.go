package server

import (
	"bytes"
	"sync"

	"github.com/backstop-ha/backstop/openapi/api"
)

// reports remembers each node's last decoded agent report.
var reports reportCache

// reportCache keeps, per node, the stored report bytes and what
// toAPINodeReport made of them. Listing a cluster's nodes decoded every
// node's report (paths, resource health) on every read, ~40% of a node
// list's CPU; but a steady node's stored report does not change (the
// heartbeat's fast path renews the lease without rewriting it), so the
// same bytes are decoded again and again. A hit needs the exact bytes
// (compared in full, not hashed), so a changed report is never served
// stale. The decoded value is shared between answers and never
// modified.
type reportCache struct {
	// mu guards m.
	mu sync.Mutex
	m  map[string]reportEntry
}

type reportEntry struct {
	raw []byte
	rep *api.NodeReport
}

// maxCachedReports bounds the cache (nodes of every cluster); beyond it
// the cache starts over rather than grow.
const maxCachedReports = 8192

func (c *reportCache) decode(nodeID string, raw []byte) *api.NodeReport {
	if len(raw) == 0 {
		return nil
	}
	c.mu.Lock()
	e, ok := c.m[nodeID]
	c.mu.Unlock()
	if ok && bytes.Equal(e.raw, raw) {
		return e.rep
	}
	rep := toAPINodeReport(raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedReports {
		c.m = map[string]reportEntry{}
	}
	c.m[nodeID] = reportEntry{raw: bytes.Clone(raw), rep: rep}
	return rep
}

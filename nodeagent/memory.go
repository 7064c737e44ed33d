package nodeagent

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/backstop-ha/backstop/openapi/envelope"
)

// memoryKeep is how many accepted command ids the memory keeps at least,
// expired or not. Ids of commands not yet expired are always kept, so an
// id is forgotten only when a replay of it would be refused as expired
// anyway.
const memoryKeep = 10000

// memory is the verifier's memory (envelope.Memory), persisted in the data
// directory so that replays and stale commands stay refused across agent
// restarts. Record and observeTerm write it to disk before returning.
type memory struct {
	path string
	keep int
	now  func() time.Time
	// mu guards the fields below.
	mu       sync.Mutex
	term     int64
	epochs   map[string]int64
	accepted []acceptedCommand // in acceptance order
	index    map[string]bool
}

var _ envelope.Memory = (*memory)(nil)

// acceptedCommand is one remembered command id.
type acceptedCommand struct {
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// memoryFile is the on-disk form of memory.
type memoryFile struct {
	Term     int64             `json:"term"`
	Epochs   map[string]int64  `json:"epochs"`
	Accepted []acceptedCommand `json:"accepted"`
}

// loadMemory reads the memory of dir (empty when the agent never accepted
// a command).
func loadMemory(dir string) (*memory, error) {
	m := &memory{path: filepath.Join(dir, fileMemory), keep: memoryKeep, now: time.Now, epochs: map[string]int64{}, index: map[string]bool{}}
	var f memoryFile
	if _, err := loadJSON(m.path, &f); err != nil {
		return nil, err
	}
	m.term = f.Term
	for h, e := range f.Epochs {
		m.epochs[h] = e
	}
	for _, a := range f.Accepted {
		if !m.index[a.ID] {
			m.index[a.ID] = true
			m.accepted = append(m.accepted, a)
		}
	}
	return m, nil
}

// Seen reports whether id was accepted before.
func (m *memory) Seen(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.index[id]
}

// Newest returns the newest epoch accepted for the hierarchy and the
// newest leader term seen at all.
func (m *memory) Newest(hierarchyID string) (epoch, term int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epochs[hierarchyID], m.term
}

// epochOf returns the newest epoch accepted for a hierarchy.
func (m *memory) epochOf(hierarchyID string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epochs[hierarchyID]
}

// Record remembers an accepted command (its id, its hierarchy's epoch and
// its term) and makes that durable before returning: the caller executes
// the command only after Record succeeded, so that a crash can never lead
// to running the same command twice or an older one after it. Even when
// writing fails, the command stays remembered in memory (refusing too much
// is the safe side).
func (m *memory) Record(c *envelope.Command) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.index[c.ID] {
		return fmt.Errorf("command %s was already recorded", c.ID)
	}
	m.index[c.ID] = true
	m.accepted = append(m.accepted, acceptedCommand{ID: c.ID, ExpiresAt: c.ExpiresAt})
	if c.Epoch > m.epochs[c.HierarchyID] {
		m.epochs[c.HierarchyID] = c.Epoch
	}
	if c.Term > m.term {
		m.term = c.Term
	}
	m.pruneLocked()
	return m.saveLocked()
}

// observeTerm raises the newest term to term (from a heartbeat answer). It
// writes the memory only when the term grows, which is rare.
func (m *memory) observeTerm(term int64) (raised bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if term <= m.term {
		return false, nil
	}
	m.term = term
	return true, m.saveLocked()
}

// pruneLocked forgets the oldest ids beyond keep whose command has
// expired.
func (m *memory) pruneLocked() {
	excess := len(m.accepted) - m.keep
	if excess <= 0 {
		return
	}
	now := m.now()
	kept := m.accepted[:0]
	for i, a := range m.accepted {
		if excess > 0 && i < len(m.accepted)-m.keep && !now.Before(a.ExpiresAt) {
			delete(m.index, a.ID)
			excess--
			continue
		}
		kept = append(kept, a)
	}
	clear(m.accepted[len(kept):])
	m.accepted = kept
}

// saveLocked writes compact JSON: with 10000 ids the file is rewritten at
// every accepted command, and indentation would double its size.
func (m *memory) saveLocked() error {
	b, err := json.Marshal(memoryFile{Term: m.term, Epochs: m.epochs, Accepted: m.accepted})
	if err != nil {
		return fmt.Errorf("encode memory: %w", err)
	}
	return writeFileAtomic(m.path, b)
}

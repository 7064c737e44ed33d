package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// errPartitioned is what a partitioned agent's requests fail with.
var errPartitioned = errors.New("servertest: partitioned from the control plane")

// doer is one agent's HTTP client to the control plane: it can be cut
// (a partition: every request fails, those in flight too), and it keeps
// the path reports of the agent's last heartbeat, which is what the
// control plane learns of the peers it sees (or would, when cut).
type doer struct {
	c *http.Client

	mu          sync.Mutex
	partitioned bool
	inflight    map[*int]context.CancelFunc
	peers       map[string]string // peer node id -> "up" if any path to it is up, else "down"
	beats       int               // heartbeats seen
	lastBeat    time.Time
}

func newDoer() *doer {
	return &doer{c: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}, inflight: map[*int]context.CancelFunc{}}
}

func (d *doer) Do(req *http.Request) (*http.Response, error) {
	// A heartbeat is tapped even when it will not get through: it is
	// what the agent sees of its peers.
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/agent/v1/heartbeat") && req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		d.tap(b)
	}
	ctx, cancel := context.WithCancel(req.Context())
	key := new(int)
	d.mu.Lock()
	if d.partitioned {
		d.mu.Unlock()
		cancel()
		return nil, errPartitioned
	}
	d.inflight[key] = cancel
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.inflight, key)
		d.mu.Unlock()
	}()
	resp, err := d.c.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
		if d.isPartitioned() {
			return nil, errPartitioned
		}
		return nil, err
	}
	// The body is read after Do returns: cancel only once it is closed.
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// tap records the path reports of a heartbeat.
func (d *doer) tap(body []byte) {
	var hb struct {
		Paths []struct {
			PeerNodeID string `json:"peer_node_id"`
			State      string `json:"state"`
		} `json:"paths"`
	}
	if json.Unmarshal(body, &hb) != nil {
		return
	}
	peers := map[string]string{}
	for _, p := range hb.Paths {
		if p.State == "up" || peers[p.PeerNodeID] == "" {
			peers[p.PeerNodeID] = p.State
		}
	}
	d.mu.Lock()
	d.peers, d.lastBeat = peers, time.Now()
	d.beats++
	d.mu.Unlock()
}

// sees returns what the agent's last heartbeat said of each peer.
func (d *doer) sees() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]string, len(d.peers))
	for k, v := range d.peers {
		out[k] = v
	}
	return out
}

func (d *doer) heartbeats() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.beats
}

func (d *doer) isPartitioned() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.partitioned
}

// partition cuts the agent from the control plane (on true) or heals it.
func (d *doer) partition(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.partitioned = on
	if on {
		for _, cancel := range d.inflight {
			cancel()
		}
	}
}

func (d *doer) close() { d.c.CloseIdleConnections() }

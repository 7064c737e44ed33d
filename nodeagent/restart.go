package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi/client"
)

// announceRestart runs when the agent stops cleanly (SIGTERM: systemctl
// stop or restart, a package upgrade). Services keep running, so the node
// must neither be failed over while the next agent process starts nor keep
// serving past a deadline the control plane does not know. It sends one
// last heartbeat asking the control plane to hold the lease for
// RestartHold; when granted, the lease (saved for the next process) and
// the fence guard's deadline become that hold. The next agent's first
// heartbeat ends the hold on both sides. Not granted (control plane
// unreachable), nothing changes: the guard fences at the ordinary lease
// deadline unless the next agent renews it first.
func (a *Agent) announceRestart() {
	if a.cfg.RestartHold <= 0 || a.identity() == nil {
		return
	}
	hold := int(a.cfg.RestartHold / time.Millisecond)
	hb := a.buildHeartbeat()
	hb.RestartHoldMs = &hold
	nFences := 0
	if hb.Fences != nil {
		nFences = len(*hb.Fences)
	}
	// This runs after ctx ended, so it has its own short deadline: a
	// stop must not wait on an unreachable control plane.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	sentAt := time.Now()
	resp, err := call(ctx, a.api, 2*time.Second, func(ctx context.Context, c *client.ClientWithResponses) (*client.AgentHeartbeatResponse, error) {
		return c.AgentHeartbeatWithResponse(ctx, hb)
	})
	if err == nil && (resp.StatusCode() != http.StatusOK || resp.JSON200 == nil) {
		err = unexpected(resp)
	}
	if err == nil && resp.JSON200.LeaseTtlMs < hold {
		err = fmt.Errorf("the control plane granted %d ms, not %d", resp.JSON200.LeaseTtlMs, hold)
	}
	if err != nil {
		rem, _ := a.lease.remaining()
		a.log.Warn("restart hold not granted: unless the next agent process renews the lease in time, the fence guard fences this node and the control plane fails it over",
			keyEvent, eventRestartHold, keyErr, err, keyLeaseRemaining, rem.Milliseconds())
		return
	}
	boot := boottime()
	a.lease.renew(sentAt, ms(resp.JSON200.LeaseTtlMs))
	a.fences.ack(nFences)
	rem, _ := a.lease.remaining()
	if a.guard != nil && a.fencingPolicy() != backstop.FencingNone {
		if err := armGuardOnce(a.cfg.DataDir, boot+rem); err != nil {
			a.log.Error("cannot give the fence guard the restart hold; it fences at the ordinary lease deadline", keyErr, err)
		}
	}
	a.log.Info("restart hold granted: hierarchies stay in place while the next agent process starts", keyEvent, eventRestartHold,
		keyLeaseRemaining, rem.Milliseconds(), keyHierarchies, a.runner.activeIDs())
}

// armGuardOnce gives the guard of dir deadline d over a connection of its
// own (the agent's link is closed by then).
func armGuardOnce(dir string, d time.Duration) error {
	c, err := net.DialTimeout("unix", filepath.Join(dir, fileGuardSock), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	return json.NewEncoder(c).Encode(guardMsg{ArmNS: int64(d)})
}

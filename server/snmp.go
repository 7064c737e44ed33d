package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/google/uuid"

	"github.com/backstop-ha/backstop"
	"github.com/backstop-ha/backstop/openapi"
	"github.com/backstop-ha/backstop/openapi/api"
)

// snmpHandlers manage SNMP trap targets and their deliveries, and show
// the SNMPv3 engine and the MIB.
type snmpHandlers struct {
	store   targetStore
	deliver Deliverer
}

func toAPISnmpTarget(t backstop.Target) api.SnmpTarget {
	c := t.SNMP
	out := api.SnmpTarget{Id: apiID(t.ID), Name: t.Name, Host: c.Host, Port: c.Port, SnmpVersion: api.SnmpVersion(c.Version), Enabled: t.Enabled,
		EventTypes: nonNilStrings(t.Filter.EventTypes), MinSeverity: api.Severity(t.Filter.MinSeverity), ClusterIds: apiUUIDs(t.Filter.ClusterIDs),
		Version: t.Version, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
	if t.Description != "" {
		out.Description = ptr(t.Description)
	}
	if c.Version == backstop.SNMPv3 {
		out.V3User, out.V3AuthProtocol, out.V3PrivProtocol = ptr(c.User), ptr(c.AuthProtocol), ptr(c.PrivProtocol)
	}
	return out
}

// snmpChange is the SNMP fields of a create or update request; nil
// fields are not changed.
type snmpChange struct {
	Host      *string
	Port      *int
	Version   *api.SnmpVersion
	Community *string
	V3        *api.SnmpV3
}

// snmpSettings applies the SNMP fields of a request to a configuration
// and its secrets, then checks they fit together.
func snmpSettings(c backstop.SNMPConfig, sec backstop.SNMPSecrets, ch snmpChange) (backstop.SNMPConfig, backstop.SNMPSecrets, error) {
	host, port, version, community, v3 := ch.Host, ch.Port, ch.Version, ch.Community, ch.V3
	v := &backstop.ValidationError{}
	if host != nil {
		c.Host = strings.TrimSpace(*host)
		if c.Host == "" || strings.ContainsAny(c.Host, " /") {
			v.Add("/host", "%q is not a host name or address", *host)
		} else if ip := net.ParseIP(c.Host); ip == nil && len(c.Host) > 253 {
			v.Add("/host", "host name too long")
		}
	}
	if port != nil {
		c.Port = *port
	}
	if version != nil && string(*version) != c.Version {
		c.Version = string(*version)
		// Another version's secrets do not carry over.
		sec = backstop.SNMPSecrets{}
		c.User, c.AuthProtocol, c.PrivProtocol = "", "", ""
	}
	if community != nil {
		sec.Community = *community
	}
	if v3 != nil {
		c.User, c.AuthProtocol, c.PrivProtocol = v3.User, string(v3.AuthProtocol), string(v3.PrivProtocol)
		sec.AuthPassphrase, sec.PrivPassphrase = deref(v3.AuthPassphrase, ""), deref(v3.PrivPassphrase, "")
	}
	switch c.Version {
	case backstop.SNMPv2c:
		if sec.Community == "" {
			v.Add("/community", "snmp_version v2c needs a community")
		}
		if v3 != nil {
			v.Add("/v3", "v3 settings are for snmp_version v3")
		}
	case backstop.SNMPv3:
		if c.User == "" {
			v.Add("/v3", "snmp_version v3 needs v3 (user, protocols and passphrases)")
		}
		if community != nil {
			v.Add("/community", "a community is for snmp_version v2c")
		}
		sec.Community = ""
	}
	return c, sec, v.Err()
}

func sealSNMP(d Deliverer, id string, sec backstop.SNMPSecrets) ([]byte, error) {
	b, err := json.Marshal(sec)
	if err != nil {
		return nil, err
	}
	return d.Seal(id, b), nil
}

// CreateSnmpTarget adds a trap target.
func (sh *snmpHandlers) CreateSnmpTarget(ctx context.Context, r api.CreateSnmpTargetRequestObject) (api.CreateSnmpTargetResponseObject, error) {
	dl, err := requireDeliverer(sh.deliver)
	if err != nil {
		return nil, err
	}
	b := r.Body
	c, sec, err := snmpSettings(backstop.SNMPConfig{Port: 162}, backstop.SNMPSecrets{},
		snmpChange{Host: &b.Host, Port: b.Port, Version: &b.SnmpVersion, Community: b.Community, V3: b.V3})
	if err != nil {
		return nil, err
	}
	f := backstop.TargetFilter{EventTypes: deref(b.EventTypes, nil), MinSeverity: string(deref(b.MinSeverity, api.Severity(backstop.SeverityCritical))),
		ClusterIDs: uuidStrings(b.ClusterIds)}
	if err := validateFilter(ctx, sh.store, f); err != nil {
		return nil, err
	}
	id := uuid.Must(uuid.NewV7()).String()
	sealed, err := sealSNMP(dl, id, sec)
	if err != nil {
		return nil, err
	}
	t, err := sh.store.CreateTarget(ctx, backstop.Target{ID: id, Kind: backstop.TargetSNMP, Name: deref(b.Name, ""), Description: deref(b.Description, ""),
		Enabled: deref(b.Enabled, true), Filter: f, SNMP: &c, Secret: sealed})
	if err != nil {
		return nil, err
	}
	return api.CreateSnmpTarget201JSONResponse{Body: toAPISnmpTarget(t),
		Headers: api.CreateSnmpTarget201ResponseHeaders{ETag: etag(t.Version), Location: location("/v1/snmp-targets/%s", t.ID)}}, nil
}

// ListSnmpTargets lists trap targets.
func (sh *snmpHandlers) ListSnmpTargets(ctx context.Context, r api.ListSnmpTargetsRequestObject) (api.ListSnmpTargetsResponseObject, error) {
	ts, next, err := sh.store.ListTargets(ctx, backstop.TargetSNMP, page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListSnmpTargets200JSONResponse{Items: make([]api.SnmpTarget, len(ts)), NextCursor: nextCursor(next)}
	for i, t := range ts {
		out.Items[i] = toAPISnmpTarget(t)
	}
	return out, nil
}

// GetSnmpTarget returns a trap target.
func (sh *snmpHandlers) GetSnmpTarget(ctx context.Context, r api.GetSnmpTargetRequestObject) (api.GetSnmpTargetResponseObject, error) {
	t, err := sh.store.FindTarget(ctx, backstop.TargetSNMP, r.TargetId.String())
	if err != nil {
		return nil, err
	}
	return api.GetSnmpTarget200JSONResponse{Body: toAPISnmpTarget(t), Headers: api.GetSnmpTarget200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// UpdateSnmpTarget changes a trap target; secrets given replace the
// stored ones.
func (sh *snmpHandlers) UpdateSnmpTarget(ctx context.Context, r api.UpdateSnmpTargetRequestObject) (api.UpdateSnmpTargetResponseObject, error) {
	dl, err := requireDeliverer(sh.deliver)
	if err != nil {
		return nil, err
	}
	b := r.Body
	f := patchFilter(backstop.TargetFilter{}, b.EventTypes, nil, b.ClusterIds)
	if err := validateFilter(ctx, sh.store, f); err != nil {
		return nil, err
	}
	t, err := sh.store.UpdateTarget(ctx, backstop.TargetSNMP, r.TargetId.String(), ifMatchVersion(r.Params.IfMatch), func(t backstop.Target) (backstop.Target, error) {
		var sec backstop.SNMPSecrets
		plain, err := dl.Open(t.ID, t.Secret)
		if err != nil {
			return t, err
		}
		if err := json.Unmarshal(plain, &sec); err != nil {
			return t, fmt.Errorf("SNMP secrets of %s: %w", t.ID, err)
		}
		c, sec, err := snmpSettings(*t.SNMP, sec, snmpChange{Host: b.Host, Port: b.Port, Version: b.SnmpVersion, Community: b.Community, V3: b.V3})
		if err != nil {
			return t, err
		}
		if t.Secret, err = sealSNMP(dl, t.ID, sec); err != nil {
			return t, err
		}
		t.SNMP = &c
		t.Name, t.Description, t.Enabled = deref(b.Name, t.Name), deref(b.Description, t.Description), deref(b.Enabled, t.Enabled)
		t.Filter = patchFilter(t.Filter, b.EventTypes, b.MinSeverity, b.ClusterIds)
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return api.UpdateSnmpTarget200JSONResponse{Body: toAPISnmpTarget(t), Headers: api.UpdateSnmpTarget200ResponseHeaders{ETag: etag(t.Version)}}, nil
}

// DeleteSnmpTarget deletes a trap target.
func (sh *snmpHandlers) DeleteSnmpTarget(ctx context.Context, r api.DeleteSnmpTargetRequestObject) (api.DeleteSnmpTargetResponseObject, error) {
	if err := sh.store.DeleteTarget(ctx, backstop.TargetSNMP, r.TargetId.String(), ifMatchVersion(r.Params.IfMatch)); err != nil {
		return nil, err
	}
	return api.DeleteSnmpTarget204Response{}, nil
}

// TestSnmpTarget sends a test trap now.
func (sh *snmpHandlers) TestSnmpTarget(ctx context.Context, r api.TestSnmpTargetRequestObject) (api.TestSnmpTargetResponseObject, error) {
	dl, err := requireDeliverer(sh.deliver)
	if err != nil {
		return nil, err
	}
	t, err := sh.store.FindTarget(ctx, backstop.TargetSNMP, r.TargetId.String())
	if err != nil {
		return nil, err
	}
	d, err := dl.TestTrap(ctx, t)
	if err != nil {
		return nil, err
	}
	return api.TestSnmpTarget200JSONResponse(toAPIDelivery(d)), nil
}

// ListSnmpDeliveries shows a trap target's delivery log.
func (sh *snmpHandlers) ListSnmpDeliveries(ctx context.Context, r api.ListSnmpDeliveriesRequestObject) (api.ListSnmpDeliveriesResponseObject, error) {
	ds, next, err := sh.store.ListDeliveries(ctx, backstop.TargetSNMP, r.TargetId.String(), statusFilter(r.Params.Status), page(r.Params.Limit, r.Params.Cursor))
	if err != nil {
		return nil, err
	}
	return api.ListSnmpDeliveries200JSONResponse(deliveryList(ds, next)), nil
}

// GetSnmpEngine shows the SNMPv3 engine.
func (sh *snmpHandlers) GetSnmpEngine(ctx context.Context, _ api.GetSnmpEngineRequestObject) (api.GetSnmpEngineResponseObject, error) {
	e, err := sh.store.SNMPEngine(ctx)
	if err != nil {
		return nil, err
	}
	return api.GetSnmpEngine200JSONResponse{EngineId: hex.EncodeToString(e.ID), Boots: int(e.Boots), Time: int(e.Time)}, nil
}

// GetSnmpMib serves BACKSTOP-MIB.
func (sh *snmpHandlers) GetSnmpMib(ctx context.Context, _ api.GetSnmpMibRequestObject) (api.GetSnmpMibResponseObject, error) {
	return api.GetSnmpMib200TextResponse(openapi.MIB), nil
}

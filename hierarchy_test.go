package backstop

import (
	"errors"
	"strings"
	"testing"
)

func lanCluster() *Cluster {
	return &Cluster{SwitchbackDefault: SwitchbackIntelligent, Timing: Profiles[ProfileLAN]}
}

func mailHierarchy() Hierarchy {
	return Hierarchy{
		Name: "mail",
		Resources: []Resource{
			{Name: "postfix", Kind: KindService, Params: map[string]any{"start": "postfix start"}, DependsOn: []string{"spool"}},
			{Name: "spool", Kind: KindVolume, Params: map[string]any{"source": "/srv/mail", "target": "/var/spool/postfix"}, DependsOn: []string{"vip"}},
			{Name: "vip", Kind: KindIP, Params: map[string]any{"address": "198.18.1.50/24", "interface": "eth0"}},
		},
		Priorities: []Priority{{NodeID: "b", Priority: 2}, {NodeID: "a", Priority: 1}},
	}
}

func TestNormalizeValid(t *testing.T) {
	h := mailHierarchy()
	if err := h.Normalize(lanCluster()); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	if h.Switchback != SwitchbackIntelligent {
		t.Errorf("switchback = %q, want the cluster default", h.Switchback)
	}
	if q := h.Resources[0].QuickCheck; q.IntervalMS != 500 || q.TimeoutMS != 250 {
		t.Errorf("quick check defaults = %+v, want the lan profile's", *q)
	}
	if h.Priorities[0].NodeID != "a" {
		t.Errorf("priorities not sorted: %+v", h.Priorities)
	}
	var order []string
	for _, r := range BringUpOrder(h.Resources) {
		order = append(order, r.Name)
	}
	if got := strings.Join(order, ","); got != "vip,spool,postfix" {
		t.Errorf("bring-up order = %s, want vip,spool,postfix", got)
	}
}

func TestNormalizeRejects(t *testing.T) {
	cases := []struct {
		name     string
		mutate   func(h *Hierarchy)
		location string
		message  string
	}{
		{"cycle", func(h *Hierarchy) { h.Resources[2].DependsOn = []string{"postfix"} }, "/resources/", "dependency cycle"},
		{"unknown dependency", func(h *Hierarchy) { h.Resources[0].DependsOn = []string{"nfs"} }, "/resources/0/depends_on/0", "unknown dependency"},
		{"self dependency", func(h *Hierarchy) { h.Resources[2].DependsOn = []string{"vip"} }, "/resources/2/depends_on/0", "itself"},
		{"duplicate name", func(h *Hierarchy) { h.Resources[1].Name = "postfix" }, "/resources/1/name", "already used"},
		{"duplicate priority", func(h *Hierarchy) { h.Priorities[1].Priority = 2 }, "/priorities/1/priority", "priority 2"},
		{"duplicate node", func(h *Hierarchy) { h.Priorities[1].NodeID = "b" }, "/priorities/1/node_id", "already has a priority"},
		{"bad cidr", func(h *Hierarchy) { h.Resources[2].Params["address"] = "198.18.1.50" }, "/resources/2/params/address", "CIDR"},
		{"missing interface", func(h *Hierarchy) { delete(h.Resources[2].Params, "interface") }, "/resources/2/params/interface", "required"},
		{"unknown param", func(h *Hierarchy) { h.Resources[2].Params["netmask"] = "24" }, "/resources/2/params/netmask", "unknown parameter"},
		{"relative volume target", func(h *Hierarchy) { h.Resources[1].Params["target"] = "spool" }, "/resources/1/params/target", "absolute"},
		{"check timeout", func(h *Hierarchy) { h.Resources[0].QuickCheck = &CheckSettings{IntervalMS: 100, TimeoutMS: 100} }, "/resources/0/quick_check/timeout_ms", "below"},
		{"ocf agent", func(h *Hierarchy) {
			h.Resources[0] = Resource{Name: "postfix", Kind: KindOCF, Params: map[string]any{"agent": "postfix"}, DependsOn: []string{"spool"}}
		}, "/resources/0/params/agent", "provider:type"},
		{"tcp port", func(h *Hierarchy) {
			h.Resources = append(h.Resources, Resource{Name: "smtp", Kind: KindTCP, Params: map[string]any{"host": "x", "port": 70000.0}})
		}, "/resources/3/params/port", "between"},
		{"name outside its zone", func(h *Hierarchy) {
			h.Resources = append(h.Resources, dnsName("mail.other.example", "test.example", "198.18.0.53"))
		}, "/resources/3/params/name", "not inside zone"},
		{"name not a domain", func(h *Hierarchy) {
			h.Resources = append(h.Resources, dnsName("mail server", "test.example", "198.18.0.53"))
		}, "/resources/3/params/name", "domain name"},
		{"name server", func(h *Hierarchy) {
			h.Resources = append(h.Resources, dnsName("mail.test.example", "test.example", "198.18.0.53:99999"))
		}, "/resources/3/params/server", "port"},
		{"name address", func(h *Hierarchy) {
			r := dnsName("mail.test.example", "test.example", "ns1.test.example")
			r.Params["address"] = "198.18.1.50/24"
			h.Resources = append(h.Resources, r)
		}, "/resources/3/params/address", "without prefix"},
		{"name key file", func(h *Hierarchy) {
			r := dnsName("mail.test.example", "test.example", "198.18.0.53")
			r.Params["tsig_key_file"] = "dns.key"
			h.Resources = append(h.Resources, r)
		}, "/resources/3/params/tsig_key_file", "absolute"},
		{"mail probe recipient", func(h *Hierarchy) {
			h.Resources = append(h.Resources, Resource{Name: "mailcheck", Kind: KindMail, Params: map[string]any{
				"host": "198.18.1.50", "rcpt": "probe", "imap_user": "probe", "imap_password_file": "/etc/backstop/probe.pw"}})
		}, "/resources/3/params/rcpt", "mail address"},
		{"mail probe password file", func(h *Hierarchy) {
			h.Resources = append(h.Resources, Resource{Name: "mailcheck", Kind: KindMail, Params: map[string]any{
				"host": "198.18.1.50", "rcpt": "probe@example.com", "imap_user": "probe", "imap_password_file": "probe.pw"}})
		}, "/resources/3/params/imap_password_file", "absolute"},
		{"name missing zone", func(h *Hierarchy) {
			r := dnsName("mail.test.example", "test.example", "198.18.0.53")
			delete(r.Params, "zone")
			h.Resources = append(h.Resources, r)
		}, "/resources/3/params/zone", "required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := mailHierarchy()
			tc.mutate(&h)
			err := h.Normalize(lanCluster())
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Normalize = %v, want a *ValidationError wrapping ErrInvalid", err)
			}
			for _, f := range ve.Fields {
				if strings.HasPrefix(f.Location, tc.location) && strings.Contains(f.Message, tc.message) {
					return
				}
			}
			t.Fatalf("fields %+v: none at %q saying %q", ve.Fields, tc.location, tc.message)
		})
	}
}

func TestTimingProfilesValid(t *testing.T) {
	for name, p := range Profiles {
		if err := p.Validate("/timing"); err != nil {
			t.Errorf("profile %s: %v", name, err)
		}
	}
	bad := Profiles[ProfileLAN]
	bad.HeartbeatMS = 400
	if err := bad.Validate("/timing"); err == nil || !strings.Contains(err.Error(), "/timing/heartbeat_ms") {
		t.Errorf("heartbeat 400 ms with a 1 s lease: err = %v, want heartbeat_ms named", err)
	}
	if _, err := ResolveTiming(ProfileLAN, &bad, "/timing"); err == nil {
		t.Error("timing values with a named profile were accepted")
	}
	if _, err := ResolveTiming(ProfileCustom, nil, "/timing"); err == nil {
		t.Error("custom profile without timing was accepted")
	}
}

func dnsName(name, zone, server string) Resource {
	return Resource{Name: "dnsname", Kind: KindName, Params: map[string]any{"name": name, "zone": zone, "server": server}}
}

func TestNormalizeName(t *testing.T) {
	h := mailHierarchy()
	r := dnsName("Mail.Test.Example.", "test.example", "[2001:db8::53]:5353")
	r.Params["address"] = "198.18.1.50"
	r.Params["ttl"] = 5.0
	r.Params["tsig_key_file"] = "/etc/backstop/dns.key"
	h.Resources = append(h.Resources, r)
	if err := h.Normalize(lanCluster()); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
}

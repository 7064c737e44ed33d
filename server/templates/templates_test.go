package templates

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/backstop-ha/backstop"
)

func lan() *backstop.Cluster {
	return &backstop.Cluster{SwitchbackDefault: backstop.SwitchbackIntelligent, Timing: backstop.Profiles[backstop.ProfileLAN]}
}

var prios = []backstop.Priority{{NodeID: "n1", Priority: 1}, {NodeID: "n2", Priority: 2}}

// minimal gives each template's required parameters.
var minimal = map[string]map[string]any{
	"mail": {"vip": "198.18.1.50", "data_source": "/dev/vg0/mail", "probe_rcpt": "probe@example.com",
		"probe_user": "probe", "probe_password_file": "/etc/backstop/probe.pw"},
	"postgresql": {"vip": "198.18.1.60", "data_source": "/dev/vg0/pg", "pg_data": "/srv/postgresql/15/main"},
	"nginx":      {"vip": "198.18.1.70", "data_source": "/srv/www-data"},
}

// TestEveryTemplateExpands: each embedded template, with only its
// required parameters and then with a DNS name too, expands into a
// hierarchy the domain accepts.
func TestEveryTemplateExpands(t *testing.T) {
	ts, err := List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range ts {
		names = append(names, tp.Name)
	}
	if !slices.Equal(names, []string{"mail", "nginx", "postgresql"}) {
		t.Fatalf("templates %v", names)
	}
	for _, tp := range ts {
		t.Run(tp.Name, func(t *testing.T) {
			h, err := tp.Expand("x", minimal[tp.Name], prios)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Normalize(lan()); err != nil {
				t.Fatalf("expanded hierarchy refused: %v", err)
			}
			if slices.ContainsFunc(h.Resources, func(r backstop.Resource) bool { return r.Kind == backstop.KindName }) {
				t.Errorf("a name resource without dns_name")
			}
			for _, r := range h.Resources {
				if slices.Contains(r.DependsOn, "dns") {
					t.Errorf("%s still depends on the left-out dns resource: %v", r.Name, r.DependsOn)
				}
				if r.Kind == backstop.KindVolume {
					if _, ok := r.Params["fstype"]; ok {
						t.Errorf("fstype set without data_fstype: %v", r.Params)
					}
				}
			}
			withName := map[string]any{"dns_name": "svc.example.com", "dns_zone": "example.com", "dns_server": "198.18.0.53", "tsig_key_file": "/etc/backstop/dns.key",
				"backup_interfaces": []any{"eth1"}}
			for k, v := range minimal[tp.Name] {
				withName[k] = v
			}
			h, err = tp.Expand("x", withName, prios)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Normalize(lan()); err != nil {
				t.Fatalf("expanded hierarchy with a name refused: %v", err)
			}
			i := slices.IndexFunc(h.Resources, func(r backstop.Resource) bool { return r.Kind == backstop.KindName })
			if i < 0 || h.Resources[i].Params["address"] != minimal[tp.Name]["vip"] || h.Resources[i].Params["ttl"] != 10.0 {
				t.Fatalf("name resource: %+v", h.Resources)
			}
			order := backstop.BringUpOrder(h.Resources)
			pos := func(kind string) int {
				return slices.IndexFunc(order, func(r backstop.Resource) bool { return r.Kind == kind })
			}
			if !(pos(backstop.KindIP) < pos(backstop.KindName) && pos(backstop.KindName) < pos(backstop.KindService)) {
				t.Errorf("bring-up order %v: want ip, then name, then the service", order)
			}
			if !strings.Contains(h.Description, "from template "+tp.Name+", version") {
				t.Errorf("description %q does not name the template", h.Description)
			}
		})
	}
}

func TestMailTemplate(t *testing.T) {
	tp, err := Find("mail")
	if err != nil {
		t.Fatal(err)
	}
	h, err := tp.Expand("mail", minimal["mail"], prios)
	if err != nil {
		t.Fatal(err)
	}
	if h.ExclusivityGroup != "mail" {
		t.Errorf("exclusivity group %q, want mail (one per server)", h.ExclusivityGroup)
	}
	var kinds []string
	for _, r := range h.Resources {
		kinds = append(kinds, r.Name+":"+r.Kind)
	}
	if got := strings.Join(kinds, ","); got != "vip:ip,data:volume,postfix:service,dovecot:service,mailcheck:mail" {
		t.Errorf("resources %s", got)
	}
	if got := h.Resources[0].Params["address"]; got != "198.18.1.50/24" {
		t.Errorf("vip address %v", got)
	}
	if got := h.Resources[2].DependsOn; !slices.Equal(got, []string{"data", "vip"}) {
		t.Errorf("postfix depends on %v, want [data vip] (dns and config left out, their own dependencies in their place)", got)
	}

	// With config_paths: a files resource that Postfix and Dovecot depend
	// on, so a bring-up installs the configuration before they start.
	withConfig := map[string]any{"config_paths": []any{"/etc/postfix/main.cf", "/etc/postfix/master.cf"}}
	for k, v := range minimal["mail"] {
		withConfig[k] = v
	}
	h, err = tp.Expand("mail", withConfig, prios)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Normalize(lan()); err != nil {
		t.Fatalf("mail with config_paths refused: %v", err)
	}
	i := slices.IndexFunc(h.Resources, func(r backstop.Resource) bool { return r.Kind == backstop.KindFiles })
	if i < 0 || fmt.Sprint(h.Resources[i].Params["paths"]) != "[/etc/postfix/main.cf /etc/postfix/master.cf]" {
		t.Fatalf("files resource: %+v", h.Resources)
	}
	order := backstop.BringUpOrder(h.Resources)
	at := func(name string) int {
		return slices.IndexFunc(order, func(r backstop.Resource) bool { return r.Name == name })
	}
	if !(at("config") < at("postfix") && at("config") < at("dovecot")) {
		t.Errorf("bring-up order %v: the configuration must come before Postfix and Dovecot", order)
	}
}

func TestExpandRejects(t *testing.T) {
	tp, _ := Find("mail")
	for _, tc := range []struct {
		values map[string]any
		at     string
		msg    string
	}{
		{map[string]any{"vip": "198.18.1.50"}, "/parameters/data_source", "required"},
		{map[string]any{"vip": "198.18.1.50/24", "data_source": "/d", "probe_rcpt": "a@b.c", "probe_user": "u", "probe_password_file": "/p"}, "/parameters/vip", "without prefix"},
		{map[string]any{"vip": "198.18.1.50", "data_source": "d", "probe_rcpt": "a@b.c", "probe_user": "u", "probe_password_file": "/p"}, "/parameters/data_source", "absolute"},
		{map[string]any{"vip": "198.18.1.50", "data_source": "/d", "probe_rcpt": "a@b.c", "probe_user": "u", "probe_password_file": "/p", "prefix_length": "24"}, "/parameters/prefix_length", "integer"},
		{map[string]any{"vip": "198.18.1.50", "data_source": "/d", "probe_rcpt": "a@b.c", "probe_user": "u", "probe_password_file": "/p", "vips": "x"}, "/parameters/vips", "no parameter"},
	} {
		_, err := tp.Expand("mail", tc.values, prios)
		var ve *backstop.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%v: %v, want a validation error", tc.values, err)
			continue
		}
		if !slices.ContainsFunc(ve.Fields, func(f backstop.FieldError) bool { return f.Location == tc.at && strings.Contains(f.Message, tc.msg) }) {
			t.Errorf("%v: %v, want %s saying %q", tc.values, err, tc.at, tc.msg)
		}
	}
	if _, err := Find("exchange"); !errors.Is(err, backstop.ErrNotFound) || !strings.Contains(err.Error(), "mail") {
		t.Errorf("Find(exchange): %v", err)
	}
}

// TestLoadChecksTemplates: a template naming a parameter it does not
// declare is refused when loaded (a broken template never ships: the
// embedded ones load in init, and TestEveryTemplateExpands would fail).
func TestLoadChecksTemplates(t *testing.T) {
	bad := `name: x
version: 1
title: X
parameters:
  - {name: vip, description: V}
hierarchy:
  resources:
    - {name: vip, kind: ip, params: {address: "{{vip}}/{{prefix}}", interface: eth0}}
`
	if _, err := load(fstest.MapFS{"x.yaml": {Data: []byte(bad)}}); err == nil || !strings.Contains(err.Error(), "prefix") {
		t.Fatalf("load: %v, want the unknown placeholder named", err)
	}
	if _, err := load(fstest.MapFS{"x.yaml": {Data: []byte(strings.Replace(bad, "title", "titel", 1))}}); err == nil {
		t.Fatal("a misspelt key was accepted")
	}
}

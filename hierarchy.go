package backstop

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Resource kinds (kits).
const (
	KindIP      = "ip"
	KindVolume  = "volume"
	KindService = "service"
	KindOCF     = "ocf"
	KindTCP     = "tcp"
	KindHTTP    = "http"
	KindSMTP    = "smtp"
	KindCommand = "command"
	KindName    = "name"
	KindMail    = "mail"
)

// CheckSettings are a check's interval and timeout.
type CheckSettings struct {
	IntervalMS int `json:"interval_ms"`
	TimeoutMS  int `json:"timeout_ms"`
}

// LocalRecovery bounds local restarts before a hierarchy fails over.
type LocalRecovery struct {
	MaxRestarts int `json:"max_restarts"`
	WindowS     int `json:"window_s"`
}

// DefaultLocalRecovery applies when a resource gives none: three restarts
// within five minutes, as most HA products default to.
var DefaultLocalRecovery = LocalRecovery{MaxRestarts: 3, WindowS: 300}

// Resource is one protected thing of a hierarchy, managed by the kit its
// Kind names.
type Resource struct {
	Name          string         `json:"name"`
	Kind          string         `json:"kind"`
	Params        map[string]any `json:"params"`
	DependsOn     []string       `json:"depends_on"`
	QuickCheck    *CheckSettings `json:"quick_check"`
	DeepCheck     *CheckSettings `json:"deep_check"`
	LocalRecovery *LocalRecovery `json:"local_recovery"`
}

// Priority is a node's rank for a hierarchy: 1 is the primary.
type Priority struct {
	NodeID   string
	Priority int
}

// Hierarchy is a protected application: a DAG of resources and the nodes
// that may run it, by priority.
type Hierarchy struct {
	ID               string
	ClusterID        string
	Name             string
	Description      string
	ExclusivityGroup string
	Switchback       string
	Resources        []Resource
	Priorities       []Priority
	// Placement is managed by placement actions, never by updates.
	Placement Placement
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// HierarchyUpdate lists the fields to change on a hierarchy; nil leaves a
// field alone, and lists replace the whole list.
type HierarchyUpdate struct {
	Name             *string
	Description      *string
	ExclusivityGroup *string
	Switchback       *string
	Resources        []Resource
	Priorities       []Priority
}

// Apply returns h with u's fields applied.
func (u HierarchyUpdate) Apply(h Hierarchy) Hierarchy {
	if u.Name != nil {
		h.Name = *u.Name
	}
	if u.Description != nil {
		h.Description = *u.Description
	}
	if u.ExclusivityGroup != nil {
		h.ExclusivityGroup = *u.ExclusivityGroup
	}
	if u.Switchback != nil {
		h.Switchback = *u.Switchback
	}
	if u.Resources != nil {
		h.Resources = u.Resources
	}
	if u.Priorities != nil {
		h.Priorities = u.Priorities
	}
	return h
}

// Normalize fills the defaults of h from its cluster (switchback policy,
// check settings from the timing, local recovery) and validates every rule
// that needs no database: unique resource names, known dependencies, no
// dependency cycle, kind parameters, check timeouts below intervals, and
// unique priorities and nodes. Whether priority nodes belong to the cluster
// is checked by the store. Offending fields are named by JSON pointer.
func (h *Hierarchy) Normalize(c *Cluster) error {
	v := &ValidationError{}
	if h.Switchback == "" {
		h.Switchback = c.SwitchbackDefault
	}
	index := make(map[string]int, len(h.Resources))
	for i := range h.Resources {
		r := &h.Resources[i]
		at := fmt.Sprintf("/resources/%d", i)
		if j, dup := index[r.Name]; dup {
			v.Add(at+"/name", "resource name %q is already used by resources[%d]", r.Name, j)
			continue
		}
		index[r.Name] = i
		if r.Params == nil {
			r.Params = map[string]any{}
		}
		if r.DependsOn == nil {
			r.DependsOn = []string{}
		}
		if r.QuickCheck == nil {
			r.QuickCheck = &CheckSettings{IntervalMS: c.Timing.QuickCheckIntervalMS, TimeoutMS: c.Timing.QuickCheckIntervalMS / 2}
		}
		if r.DeepCheck == nil {
			r.DeepCheck = &CheckSettings{IntervalMS: c.Timing.DeepCheckIntervalMS, TimeoutMS: c.Timing.DeepCheckIntervalMS / 2}
		}
		if r.LocalRecovery == nil {
			lr := DefaultLocalRecovery
			r.LocalRecovery = &lr
		}
		if r.QuickCheck.TimeoutMS >= r.QuickCheck.IntervalMS {
			v.Add(at+"/quick_check/timeout_ms", "timeout_ms (%d) must be below interval_ms (%d)", r.QuickCheck.TimeoutMS, r.QuickCheck.IntervalMS)
		}
		if r.DeepCheck.TimeoutMS >= r.DeepCheck.IntervalMS {
			v.Add(at+"/deep_check/timeout_ms", "timeout_ms (%d) must be below interval_ms (%d)", r.DeepCheck.TimeoutMS, r.DeepCheck.IntervalMS)
		}
		validateParams(v, at+"/params", r.Kind, r.Params)
	}
	for i, r := range h.Resources {
		seen := map[string]bool{}
		for j, d := range r.DependsOn {
			at := fmt.Sprintf("/resources/%d/depends_on/%d", i, j)
			switch _, ok := index[d]; {
			case d == r.Name:
				v.Add(at, "resource %q cannot depend on itself", r.Name)
			case !ok:
				v.Add(at, "unknown dependency %q: no resource of this hierarchy has that name", d)
			case seen[d]:
				v.Add(at, "dependency %q is listed twice", d)
			}
			seen[d] = true
		}
	}
	if len(v.Fields) == 0 {
		if cyc := findCycle(h.Resources, index); cyc != nil {
			v.Add(fmt.Sprintf("/resources/%d/depends_on", index[cyc[0]]), "dependency cycle: %s", strings.Join(cyc, " -> "))
		}
	}
	nodes := map[string]int{}
	prios := map[int]int{}
	for i, p := range h.Priorities {
		if j, dup := nodes[p.NodeID]; dup {
			v.Add(fmt.Sprintf("/priorities/%d/node_id", i), "node %s already has a priority (priorities[%d])", p.NodeID, j)
		}
		nodes[p.NodeID] = i
		if j, dup := prios[p.Priority]; dup {
			v.Add(fmt.Sprintf("/priorities/%d/priority", i), "priority %d is already given to priorities[%d]; priorities are unique per hierarchy", p.Priority, j)
		}
		prios[p.Priority] = i
	}
	slices.SortStableFunc(h.Priorities, func(a, b Priority) int { return a.Priority - b.Priority })
	return v.Err()
}

// findCycle returns one dependency cycle as resource names (first name
// repeated at the end), or nil for a DAG.
func findCycle(rs []Resource, index map[string]int) []string {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(rs))
	var stack []string
	var visit func(i int) []string
	visit = func(i int) []string {
		color[i] = grey
		stack = append(stack, rs[i].Name)
		for _, d := range rs[i].DependsOn {
			j := index[d]
			switch color[j] {
			case grey:
				start := slices.Index(stack, d)
				return append(slices.Clone(stack[start:]), d)
			case white:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return nil
	}
	for i := range rs {
		if color[i] == white {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// BringUpOrder returns the resources of a valid hierarchy children first:
// every resource after all it depends on, ties in the order given. Take
// down in the reverse order.
func BringUpOrder(rs []Resource) []Resource {
	done := make(map[string]bool, len(rs))
	out := make([]Resource, 0, len(rs))
	for len(out) < len(rs) {
		progressed := false
		for _, r := range rs {
			if done[r.Name] {
				continue
			}
			ready := true
			for _, d := range r.DependsOn {
				if !done[d] {
					ready = false
					break
				}
			}
			if ready {
				done[r.Name] = true
				out = append(out, r)
				progressed = true
			}
		}
		if !progressed { // a cycle: Normalize refuses these
			break
		}
	}
	return out
}

var (
	ocfAgentRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*:[A-Za-z0-9][A-Za-z0-9._-]*$`)
	ifaceNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,14}$`)
	ocfParamRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// paramSpec describes one kind parameter.
type paramSpec struct {
	required bool
	check    func(v any) string // "" when fine, else the complaint
}

var kindParams = map[string]map[string]paramSpec{
	KindIP: {
		"address":           {true, checkCIDR},
		"interface":         {true, checkIface},
		"backup_interfaces": {false, checkIfaceList},
	},
	KindVolume: {
		"source":  {true, checkAbsPath},
		"target":  {true, checkAbsPath},
		"fstype":  {false, checkString},
		"options": {false, checkString},
	},
	KindService: {
		"start":           {true, checkString},
		"stop":            {false, checkString},
		"pid_file":        {false, checkAbsPath},
		"stop_timeout_ms": {false, checkIntRange(100, 3600000)},
	},
	KindOCF: {
		"agent":  {true, checkOCFAgent},
		"params": {false, checkOCFParams},
	},
	KindTCP: {
		"host": {true, checkString},
		"port": {true, checkIntRange(1, 65535)},
	},
	KindHTTP: {
		"url":           {true, checkHTTPURL},
		"expect_status": {false, checkIntRange(100, 599)},
	},
	KindSMTP: {
		"host": {true, checkString},
		"port": {true, checkIntRange(1, 65535)},
	},
	KindCommand: {
		"check": {true, checkString},
	},
	KindMail: {
		"host":               {true, checkString},
		"smtp_port":          {false, checkIntRange(1, 65535)},
		"imap_port":          {false, checkIntRange(1, 65535)},
		"rcpt":               {true, checkMailAddr},
		"imap_user":          {true, checkString},
		"imap_password_file": {true, checkAbsPath},
	},
	KindFiles: {
		"paths":          {true, checkConfigPaths},
		"max_bytes":      {false, checkIntRange(1, MaxConfigMaxBytes)},
		"secret":         {false, checkBool},
		"keep_versions":  {false, checkIntRange(1, MaxConfigKeep)},
		"on_unreachable": {false, checkOnUnreachable},
	},
	KindName: {
		"name":          {true, checkDNSName},
		"zone":          {true, checkDNSName},
		"server":        {true, checkDNSServer},
		"address":       {false, checkIPAddr},
		"ttl":           {false, checkIntRange(1, 86400)},
		"tsig_key_file": {false, checkAbsPath},
	},
}

// KindParams returns the parameter names a kind accepts, sorted.
func KindParams(kind string) []string {
	names := make([]string, 0, len(kindParams[kind]))
	for n := range kindParams[kind] {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func validateParams(v *ValidationError, at, kind string, params map[string]any) {
	spec, ok := kindParams[kind]
	if !ok {
		v.Add(strings.TrimSuffix(at, "/params")+"/kind", "unknown kind %q", kind)
		return
	}
	for name, val := range params {
		ps, ok := spec[name]
		if !ok {
			v.Add(at+"/"+name, "unknown parameter for kind %s (accepted: %s)", kind, strings.Join(KindParams(kind), ", "))
			continue
		}
		if msg := ps.check(val); msg != "" {
			v.Add(at+"/"+name, "%s", msg)
		}
	}
	for _, name := range KindParams(kind) {
		if _, given := params[name]; spec[name].required && !given {
			v.Add(at+"/"+name, "required for kind %s", kind)
		}
	}
	if kind == KindName {
		n, _ := params["name"].(string)
		z, _ := params["zone"].(string)
		if checkDNSName(n) == "" && checkDNSName(z) == "" && !inZone(n, z) {
			v.Add(at+"/name", "%q is not inside zone %q: the update goes to the zone's primary server, so the name must be below the zone", n, z)
		}
	}
}

// dnsLabelRE is one label of a host or zone name (letters, digits,
// hyphens, underscores as in _service names), 1..63 characters.
var dnsLabelRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

func checkDNSName(v any) string {
	if m := checkString(v); m != "" {
		return m
	}
	s := strings.TrimSuffix(v.(string), ".")
	if len(s) > 253 {
		return "must be a domain name of at most 253 characters"
	}
	for l := range strings.SplitSeq(s, ".") {
		if !dnsLabelRE.MatchString(l) {
			return fmt.Sprintf("must be a domain name such as mail.example.com (label %q is not valid)", l)
		}
	}
	return ""
}

// inZone reports whether name is below zone (not the zone's apex).
func inZone(name, zone string) bool {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	return strings.HasSuffix(n, "."+z)
}

func checkDNSServer(v any) string {
	if m := checkString(v); m != "" {
		return m
	}
	s := v.(string)
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		p, perr := strconv.Atoi(port)
		if perr != nil || p < 1 || p > 65535 {
			return "port must be between 1 and 65535"
		}
		host = h
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return ""
	}
	if checkDNSName(host) != "" {
		return "must be the DNS server as host or host:port, e.g. 198.18.0.53 or ns1.example.com:53"
	}
	return ""
}

func checkMailAddr(v any) string {
	if m := checkString(v); m != "" {
		return m
	}
	local, domain, ok := strings.Cut(v.(string), "@")
	if !ok || local == "" || checkDNSName(domain) != "" || strings.ContainsAny(v.(string), " <>\r\n") {
		return "must be a mail address such as probe@example.com"
	}
	return ""
}

func checkIPAddr(v any) string {
	if m := checkString(v); m != "" {
		return m
	}
	a, err := netip.ParseAddr(v.(string))
	if err != nil || a.Zone() != "" {
		return "must be an IPv4 or IPv6 address without prefix length, e.g. 198.18.1.50"
	}
	return ""
}

func checkString(v any) string {
	s, ok := v.(string)
	switch {
	case !ok:
		return "must be a string"
	case strings.TrimSpace(s) == "":
		return "must not be empty"
	case len(s) > 4096:
		return "must be at most 4096 characters"
	}
	return ""
}

func checkCIDR(v any) string {
	if m := checkString(v); m != "" {
		return m
	}
	p, err := netip.ParsePrefix(v.(string))
	if err != nil {
		return "must be an IP address with a prefix length (CIDR), e.g. 198.18.1.50/24"
	}
	if p.Addr() == p.Masked().Addr() && p.Bits() < p.Addr().BitLen() {
		return "must be a host address, not the network address of its prefix"
	}
	return ""
}

func checkIface(v any) string {
	s, ok := v.(string)
	if !ok || !ifaceNameRE.MatchString(s) {
		return "must be a network interface name (1..15 characters)"
	}
	return ""
}

func checkIfaceList(v any) string {
	l, ok := v.([]any)
	if !ok {
		return "must be a list of interface names"
	}
	for _, e := range l {
		if m := checkIface(e); m != "" {
			return "each entry " + m
		}
	}
	return ""
}

func checkAbsPath(v any) string {
	if m := checkString(v); m != "" {
		return m
	}
	s := v.(string)
	if !path.IsAbs(s) {
		return "must be an absolute path"
	}
	return ""
}

func checkIntRange(lo, hi int) func(any) string {
	return func(v any) string {
		f, ok := v.(float64) // encoding/json's number type
		if !ok {
			if i, isInt := v.(int); isInt {
				f, ok = float64(i), true
			}
		}
		if !ok || f != float64(int(f)) {
			return "must be an integer"
		}
		if int(f) < lo || int(f) > hi {
			return fmt.Sprintf("must be between %d and %d", lo, hi)
		}
		return ""
	}
}

func checkOCFAgent(v any) string {
	s, ok := v.(string)
	if !ok || !ocfAgentRE.MatchString(s) {
		return `must be "provider:type", e.g. "heartbeat:IPaddr2"`
	}
	return ""
}

func checkOCFParams(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return "must be an object of string parameters"
	}
	for k, val := range m {
		if !ocfParamRE.MatchString(k) {
			return fmt.Sprintf("parameter name %q is not a valid OCF_RESKEY_ suffix", k)
		}
		if _, ok := val.(string); !ok {
			return fmt.Sprintf("parameter %q must be a string", k)
		}
	}
	return ""
}

func checkHTTPURL(v any) string {
	if m := checkString(v); m != "" {
		return m
	}
	u, err := url.Parse(v.(string))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "must be an absolute http:// or https:// URL"
	}
	return ""
}

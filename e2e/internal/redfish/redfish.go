// Package redfish is a small Redfish BMC emulator for the e2e tests: just
// what Debian's fence_redfish (fence-agents) calls, over HTTPS with basic
// authentication. The service root names the Systems collection, the
// collection its one system, the system its PowerState and its
// ComputerSystem.Reset action; a ForceOff runs the test's power-off
// (kill every process of the node's namespace, take its links down) before
// it is answered, as a real BMC cuts the power at once.
package redfish

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// Reset is one ComputerSystem.Reset the BMC received.
type Reset struct {
	Type string
	// User and Password are the credentials it came with; only resets
	// with the right ones are carried out.
	User, Password string
	Authorized     bool
	At             time.Time
}

// BMC is one emulated baseboard management controller.
type BMC struct {
	user, password string
	powerOff       func()
	powerOn        func()
	srv            *httptest.Server

	// mu guards the fields below.
	mu     sync.Mutex
	power  string // "On" or "Off"
	broken int    // answer every request with this status (0: healthy)
	resets []Reset
	calls  int
}

// SystemURI is the path of the emulated system.
const SystemURI = "/redfish/v1/Systems/1"

const resetURI = SystemURI + "/Actions/ComputerSystem.Reset"

// Start serves a BMC on host (an address of the host the fence agent
// runs on; port chosen freely) with the given credentials. off runs on
// ForceOff, on on On; either may be nil.
func Start(host, user, password string, off, on func()) (*BMC, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, err
	}
	b := &BMC{user: user, password: password, powerOff: off, powerOn: on, power: "On"}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	b.srv.Listener.Close()
	b.srv.Listener = ln
	b.srv.StartTLS()
	return b, nil
}

// Host and Port are where the BMC listens (fence_redfish's ip and ipport).
func (b *BMC) Host() string {
	h, _, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	return h
}

// Port is the BMC's TCP port.
func (b *BMC) Port() int {
	_, p, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// Close stops the BMC.
func (b *BMC) Close() { b.srv.Close() }

// SetBroken makes the BMC answer every request with status (e.g. 500), or
// work again with 0.
func (b *BMC) SetBroken(status int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.broken = status
}

// Resets returns the resets received, oldest first.
func (b *BMC) Resets() []Reset {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Reset(nil), b.resets...)
}

// Calls returns how many requests the BMC got.
func (b *BMC) Calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// Power returns "On" or "Off".
func (b *BMC) Power() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.power
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (b *BMC) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.calls++
	broken := b.broken
	b.mu.Unlock()
	if broken != 0 {
		http.Error(w, "BMC firmware fault", broken) // not JSON: the agent fails
		return
	}
	user, pass, _ := r.BasicAuth()
	authorized := user == b.user && pass == b.password
	if r.Method == http.MethodPost && r.URL.Path == resetURI {
		var body struct {
			ResetType string `json:"ResetType"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		b.mu.Lock()
		b.resets = append(b.resets, Reset{Type: body.ResetType, User: user, Password: pass, Authorized: authorized, At: time.Now()})
		b.mu.Unlock()
	}
	if !authorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="BMC"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{"code": "Base.1.0.NoValidSession", "message": "authentication required"}})
		return
	}
	switch {
	case r.Method == http.MethodGet && (r.URL.Path == "/redfish/v1" || r.URL.Path == "/redfish/v1/"):
		writeJSON(w, 200, map[string]any{"@odata.id": "/redfish/v1", "Id": "RootService", "RedfishVersion": "1.6.0",
			"Systems": map[string]any{"@odata.id": "/redfish/v1/Systems"}})
	case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1/Systems":
		writeJSON(w, 200, map[string]any{"@odata.id": "/redfish/v1/Systems", "Members@odata.count": 1,
			"Members": []any{map[string]any{"@odata.id": SystemURI}}})
	case r.Method == http.MethodGet && r.URL.Path == SystemURI:
		writeJSON(w, 200, map[string]any{"@odata.id": SystemURI, "Id": "1", "PowerState": b.Power(),
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{"target": resetURI,
				"ResetType@Redfish.AllowableValues": []string{"On", "ForceOff", "ForceRestart", "Nmi"}}}})
	case r.Method == http.MethodPost && r.URL.Path == resetURI:
		b.reset(w, r)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{"code": "Base.1.0.ResourceMissingAtURI", "message": r.URL.Path}})
	}
}

func (b *BMC) reset(w http.ResponseWriter, r *http.Request) {
	rs := b.Resets()
	typ := rs[len(rs)-1].Type
	switch typ {
	case "ForceOff":
		if b.Power() == "On" && b.powerOff != nil {
			b.powerOff()
		}
		b.mu.Lock()
		b.power = "Off"
		b.mu.Unlock()
	case "On":
		if b.Power() == "Off" && b.powerOn != nil {
			b.powerOn()
		}
		b.mu.Lock()
		b.power = "On"
		b.mu.Unlock()
	default:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"code": "Base.1.0.ActionParameterNotSupported", "message": typ}})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

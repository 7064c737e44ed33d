package nodeagent

import (
	"net"
	"os"
	"runtime"

	"github.com/backstop-ha/backstop/openapi/client"
)

// hostFacts describes this host for enrollment: name, platform, kernel
// release and network interfaces with their hardware and CIDR addresses
// (bounded by the contract's limits).
func hostFacts(version string) client.HostFacts {
	f := client.HostFacts{Os: runtime.GOOS, Arch: runtime.GOARCH, AgentVersion: version}
	if h, err := os.Hostname(); err == nil {
		f.Hostname = h
	}
	if f.Hostname == "" {
		f.Hostname = "unknown"
	}
	if k := kernelRelease(); k != "" {
		f.Kernel = &k
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return f
	}
	list := make([]client.HostInterface, 0, len(ifs))
	for _, ifc := range ifs {
		if len(list) == 256 {
			break
		}
		hi := client.HostInterface{Name: ifc.Name}
		if mac := ifc.HardwareAddr.String(); mac != "" {
			hi.Mac = &mac
		}
		if addrs, err := ifc.Addrs(); err == nil {
			var cidrs []string
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && len(cidrs) < 64 {
					cidrs = append(cidrs, n.String())
				}
			}
			if len(cidrs) > 0 {
				hi.Addresses = &cidrs
			}
		}
		list = append(list, hi)
	}
	f.Interfaces = &list
	return f
}

package nodeagent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// Path heartbeat packet, all integers big-endian:
//
//	offset size field
//	     0    4 magic "BSPH"
//	     4    1 version (1)
//	     5    1 flags (0)
//	     6   16 cluster id (UUID bytes)
//	    22   16 sender node id
//	    38   16 receiver node id
//	    54   16 path id (the sender's directed path)
//	    70    8 seq: increases by one per packet on this path; starts at
//	            the sender's wall-clock nanoseconds when it started, so a
//	            restarted sender continues above its old numbers
//	    78    8 sent: sender's monotonic clock, nanoseconds
//	    86    8 echo seq: seq of the newest packet the sender received on
//	            the reverse path (0: none yet)
//	    94    8 echo sent: that packet's sent field, echoed back
//	   102    8 echo hold: nanoseconds between receiving that packet and
//	            sending this one
//	   110   32 HMAC-SHA256 over bytes 0..109, keyed by the cluster's path key
//
// The receiver of an echo computes the round-trip time from its own clock
// only: now - echo sent - echo hold. No clock synchronisation is needed.
const (
	pathMagic      = "BSPH"
	pathVersion    = 1
	pathBodyLen    = 110
	pathPacketLen  = pathBodyLen + sha256.Size
	pathMaxReadLen = 512
)

// pathPacket is one decoded path heartbeat.
type pathPacket struct {
	Cluster, Sender, Receiver, Path [16]byte
	Seq                             uint64
	SentNS                          int64
	EchoSeq                         uint64
	EchoSentNS                      int64
	EchoHoldNS                      int64
}

// Decoding errors; they name the drop reason in metrics.
var (
	errPathLength  = errors.New("bad_length")
	errPathMagic   = errors.New("bad_magic")
	errPathVersion = errors.New("bad_version")
	errPathMAC     = errors.New("bad_mac")
)

// marshal encodes p and authenticates it with key.
func (p *pathPacket) marshal(key []byte) []byte {
	b := make([]byte, pathPacketLen)
	copy(b[0:4], pathMagic)
	b[4] = pathVersion
	b[5] = 0
	copy(b[6:22], p.Cluster[:])
	copy(b[22:38], p.Sender[:])
	copy(b[38:54], p.Receiver[:])
	copy(b[54:70], p.Path[:])
	binary.BigEndian.PutUint64(b[70:], p.Seq)
	binary.BigEndian.PutUint64(b[78:], uint64(p.SentNS))
	binary.BigEndian.PutUint64(b[86:], p.EchoSeq)
	binary.BigEndian.PutUint64(b[94:], uint64(p.EchoSentNS))
	binary.BigEndian.PutUint64(b[102:], uint64(p.EchoHoldNS))
	m := hmac.New(sha256.New, key)
	m.Write(b[:pathBodyLen])
	m.Sum(b[:pathBodyLen])
	return b
}

// unmarshalPathPacket authenticates and decodes b. The MAC is checked
// before any field is looked at; an empty key authenticates nothing.
func unmarshalPathPacket(b, key []byte) (pathPacket, error) {
	var p pathPacket
	if len(b) != pathPacketLen {
		return p, errPathLength
	}
	if len(key) == 0 {
		return p, errPathMAC
	}
	m := hmac.New(sha256.New, key)
	m.Write(b[:pathBodyLen])
	if !hmac.Equal(m.Sum(nil), b[pathBodyLen:]) {
		return p, errPathMAC
	}
	if string(b[0:4]) != pathMagic {
		return p, errPathMagic
	}
	if b[4] != pathVersion {
		return p, errPathVersion
	}
	copy(p.Cluster[:], b[6:22])
	copy(p.Sender[:], b[22:38])
	copy(p.Receiver[:], b[38:54])
	copy(p.Path[:], b[54:70])
	p.Seq = binary.BigEndian.Uint64(b[70:])
	p.SentNS = int64(binary.BigEndian.Uint64(b[78:]))
	p.EchoSeq = binary.BigEndian.Uint64(b[86:])
	p.EchoSentNS = int64(binary.BigEndian.Uint64(b[94:]))
	p.EchoHoldNS = int64(binary.BigEndian.Uint64(b[102:]))
	return p, nil
}

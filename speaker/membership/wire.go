package membership

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
)

// Wire format, version 1 (all integers big-endian):
//
//	offset  size  field
//	0       1     version (1)
//	1       1     type: 1 heartbeat, 2 leaving
//	2       1     n = length of the sender's node name, 1..253
//	3       n     sender node name
//	3+n     1     m = length of the destination's node name, 1..253
//	4+n     m     destination node name
//	4+n+m   8     sender incarnation (random, non-zero, fixed for the process)
//	12+n+m  8     sender sequence (strictly increasing per incarnation, non-zero)
//	20+n+m  8     echo incarnation: the destination's incarnation, 0 if unknown
//	28+n+m  8     echo sequence: the destination's newest sequence seen, 0 if unknown
//	36+n+m  16    MAC: HMAC-SHA256(k, all preceding bytes) truncated to 16 bytes,
//	              k = HMAC-SHA256(Config.Key, "ironlb-membership-v1")
//
// The destination name is authenticated so that a packet sent to one node is
// worthless when replayed to another. The echo is what makes a heartbeat
// fresh without synchronised clocks; see the package documentation.
//
// 253 bytes is the longest Kubernetes node name (a DNS subdomain), so a
// packet is at most 558 bytes: it never fragments.
const (
	wireVersion = 1
	// typeOffset is where the type byte is.
	typeOffset = 1

	// macLen is the truncated MAC length: 128 bits is plenty for an online
	// forgery (every guess costs a packet) and halves the overhead.
	macLen = 16

	maxNameLen = 253

	// fixedLen is everything but the two names.
	fixedLen = 1 + 1 + 1 + 1 + 4*8 + macLen

	minPacketLen = fixedLen + 2
	maxPacketLen = fixedLen + 2*maxNameLen
)

// macContext separates our MAC key from any other use of the same Secret and
// from future wire versions: the packets are signed with a key derived from
// Config.Key, never with Config.Key itself.
const macContext = "ironlb-membership-v1"

type msgType uint8

const (
	msgHeartbeat msgType = 1
	msgLeaving   msgType = 2
)

func (t msgType) String() string {
	switch t {
	case msgHeartbeat:
		return "heartbeat"
	case msgLeaving:
		return "leaving"
	}
	return "unknown"
}

// message is a decoded packet, without its MAC.
type message struct {
	typ     msgType
	sender  string
	dest    string
	inc     uint64
	seq     uint64
	echoInc uint64
	echoSeq uint64
}

var errMalformed = errors.New("membership: malformed packet")

// validName tells whether a node name fits the wire format.
func validName(name string) bool {
	return len(name) > 0 && len(name) <= maxNameLen
}

// appendBody appends the packet without its MAC to dst. The names must be
// valid (the callers check them when they are configured); the integers may
// be anything, decode is the one that insists on non-zero values.
func (msg *message) appendBody(dst []byte) []byte {
	dst = append(dst, wireVersion, byte(msg.typ), byte(len(msg.sender)))
	dst = append(dst, msg.sender...)
	dst = append(dst, byte(len(msg.dest)))
	dst = append(dst, msg.dest...)
	dst = binary.BigEndian.AppendUint64(dst, msg.inc)
	dst = binary.BigEndian.AppendUint64(dst, msg.seq)
	dst = binary.BigEndian.AppendUint64(dst, msg.echoInc)
	dst = binary.BigEndian.AppendUint64(dst, msg.echoSeq)
	return dst
}

// decode parses a packet's structure. It does not check the MAC (see
// macer.verify), so that garbage and forgeries are told apart in the
// metrics. It must never panic, whatever b is: FuzzDecode checks that.
func decode(b []byte) (message, error) {
	var msg message
	if len(b) < minPacketLen || len(b) > maxPacketLen || b[0] != wireVersion {
		return msg, errMalformed
	}
	msg.typ = msgType(b[1])
	if msg.typ != msgHeartbeat && msg.typ != msgLeaving {
		return msg, errMalformed
	}
	i := 2
	name := func() (string, bool) {
		if i >= len(b) {
			return "", false
		}
		n := int(b[i])
		i++
		if n == 0 || n > len(b)-i {
			return "", false
		}
		s := string(b[i : i+n])
		i += n
		return s, true
	}
	var ok bool
	if msg.sender, ok = name(); !ok {
		return msg, errMalformed
	}
	if msg.dest, ok = name(); !ok {
		return msg, errMalformed
	}
	// Exactly the four integers and the MAC must remain: one encoding per
	// message, no slack for an attacker to play with.
	if len(b)-i != 4*8+macLen {
		return msg, errMalformed
	}
	msg.inc = binary.BigEndian.Uint64(b[i:])
	msg.seq = binary.BigEndian.Uint64(b[i+8:])
	msg.echoInc = binary.BigEndian.Uint64(b[i+16:])
	msg.echoSeq = binary.BigEndian.Uint64(b[i+24:])
	// Zero is "none": a sender always has an incarnation and a sequence,
	// and an echo is either wholly present or wholly absent.
	if msg.inc == 0 || msg.seq == 0 || (msg.echoInc == 0) != (msg.echoSeq == 0) {
		return msg, errMalformed
	}
	return msg, nil
}

// macer computes and checks packet MACs. It is not safe for concurrent use:
// the sender and the receiver each own one.
type macer struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// deriveKey turns the shared secret into the packet MAC key.
func deriveKey(secret []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(macContext))
	return h.Sum(nil)
}

func newMacer(macKey []byte) *macer {
	return &macer{h: hmac.New(sha256.New, macKey)}
}

// mac returns the truncated MAC of body. The result aliases c's buffer and
// is valid until the next call.
func (c *macer) mac(body []byte) []byte {
	c.h.Reset()
	c.h.Write(body)
	return c.h.Sum(c.sum[:0])[:macLen]
}

// seal appends the MAC of body to body.
func (c *macer) seal(body []byte) []byte {
	return append(body, c.mac(body)...)
}

// verify tells whether the packet's trailing MAC is right, in constant time.
func (c *macer) verify(b []byte) bool {
	if len(b) < macLen {
		return false
	}
	body, tag := b[:len(b)-macLen], b[len(b)-macLen:]
	return hmac.Equal(c.mac(body), tag)
}

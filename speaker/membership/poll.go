package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// batchWriter sends many datagrams in one call (sendmmsg on Linux; one by
// one elsewhere). ipv4.Message and ipv6.Message are the same type.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// newBatchWriter returns the batch writer for a socket bound to an
// address of bind's family.
func newBatchWriter(c *net.UDPConn, bind netip.Addr) batchWriter {
	if bind.Is4() || bind.Is4In6() {
		return ipv4.NewPacketConn(c)
	}
	return ipv6.NewPacketConn(c)
}

// rcvBuf is the socket receive buffer asked for: the packets of an
// Interval wait there until Run reads them (the kernel caps it at
// net.core.rmem_max, 208 KiB by default: a few hundred heartbeats).
const rcvBuf = 1 << 20

// poller reads, without blocking, every datagram waiting on a UDP socket,
// with the time the kernel received it.
type poller struct {
	rc  syscall.RawConn
	buf []byte
	oob []byte
	// stamps says the kernel timestamps packets (SO_TIMESTAMPNS).
	stamps bool
}

func newPoller(c *net.UDPConn) (*poller, error) {
	_ = c.SetReadBuffer(rcvBuf) // best effort: the default holds an Interval of a big cluster too
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	p := &poller{rc: rc, buf: make([]byte, recvBufLen), oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	p.stamps = serr == nil
	return p, nil
}

// drain hands every waiting datagram to fn, oldest first, and returns
// once none is left (or with the socket's error). drop, if it returns
// true, discards packets (a test hook).
func (p *poller) drain(drop func() bool, fn func(b []byte, arrived time.Time)) error {
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, _, err := unix.Recvmsg(int(fd), p.buf, p.oob, unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return true // nothing left: done, without waiting
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				rerr = err
				return true
			}
			if drop() {
				continue
			}
			fn(p.buf[:n], p.arrival(p.oob[:oobn]))
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// arrival turns the kernel's receive timestamp (wall clock) into a time
// on the monotonic clock, by its age now; without one, now.
func (p *poller) arrival(oob []byte) time.Time {
	now := time.Now()
	if !p.stamps {
		return now
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return now
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS || len(m.Data) < int(unsafe.Sizeof(unix.Timespec{})) {
			continue
		}
		ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
		age := now.Sub(time.Unix(ts.Unix()))
		// A wall clock step between the two readings can't make a
		// packet arrive in the future, or implausibly long ago.
		if age < 0 || age > time.Minute {
			return now
		}
		return now.Add(-age)
	}
	return now
}

// listenPair binds the mesh's two sockets on one address: main (polled
// each tick) and urgent, to which the kernel steers leaving messages only
// (a classic BPF program selects the socket of an SO_REUSEPORT group by
// the packet's type byte), so that a goodbye wakes its reader at once
// while heartbeats wake nobody. urgent is nil where steering is not
// available; leaving messages are then read at the next tick.
func listenPair(bind netip.AddrPort) (main, urgent *net.UDPConn, err error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ctx := context.Background()
	pc, err := lc.ListenPacket(ctx, "udp", bind.String())
	if err != nil {
		// No SO_REUSEPORT: one plain socket.
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(bind))
		return c, nil, err
	}
	main = pc.(*net.UDPConn)
	local := main.LocalAddr().(*net.UDPAddr).AddrPort() // the port, if bind's was 0
	pc2, err := lc.ListenPacket(ctx, "udp", local.String())
	if err != nil {
		return main, nil, nil
	}
	urgent = pc2.(*net.UDPConn)
	// Index 0 of the group is main (bound first), 1 is urgent.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: typeOffset}, // A = payload[typeOffset]
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: uint32(msgLeaving)},
		{Code: unix.BPF_RET | unix.BPF_K, K: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	rc, err := main.SyscallConn()
	if err != nil {
		urgent.Close()
		return main, nil, nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil || serr != nil {
		// Without steering the kernel would spread heartbeats over both
		// sockets by hash: keep one.
		urgent.Close()
		return main, nil, nil
	}
	return main, urgent, nil
}

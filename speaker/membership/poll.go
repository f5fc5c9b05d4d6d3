package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
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

func newPoller(rc syscall.RawConn) (*poller, error) {
	p := &poller{rc: rc, buf: make([]byte, recvBufLen), oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// Best effort: the default holds an Interval of a big cluster too.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
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

// sockets are the mesh's sockets, all on its one address and port, in one
// SO_REUSEPORT group whose classic BPF program steers each arriving
// packet by its type byte:
//
//   - rx (index 0 of the group) gets the heartbeats. It is read at each
//     tick, and kept out of Go's network poller altogether (a blocking
//     socket wrapped in an os.File, read with MSG_DONTWAIT): in the
//     poller, every arriving heartbeat woke a thread to report a socket
//     nobody was waiting on, some 200 wakeups a second on a quiet node of
//     a 50-node cluster.
//   - urgent (index 1) gets the leaving messages only, and a goroutine
//     reads it at once, so a goodbye is handled within microseconds.
//   - tx (index 2) sends. The program never selects it, so it receives
//     nothing and its poller registration never fires; sending from the
//     group keeps the mesh port as the source port.
//
// Where the group or the program can't be had, one ordinary socket does
// everything (rx is tx, urgent is nil): correct, with one wakeup per
// packet and leaving messages read at the next tick.
type sockets struct {
	rx     syscall.RawConn
	tx     *net.UDPConn
	urgent *net.UDPConn
	local  netip.AddrPort
	close  []io.Closer
}

func (s *sockets) Close() error {
	var first error
	for _, c := range s.close {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func listenGroup(bind netip.AddrPort) (*sockets, error) {
	rx, local, err := blockingUDP(bind)
	if err != nil {
		return plainSocket(bind)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	s := &sockets{local: local, close: []io.Closer{rx}}
	for _, c := range []**net.UDPConn{&s.urgent, &s.tx} {
		pc, err := lc.ListenPacket(context.Background(), "udp", local.String())
		if err != nil {
			s.Close()
			return plainSocket(bind)
		}
		*c = pc.(*net.UDPConn)
		s.close = append(s.close, *c)
	}
	if s.rx, err = rx.SyscallConn(); err != nil {
		s.Close()
		return plainSocket(bind)
	}
	// Group indexes follow the order of binding: rx 0, urgent 1, tx 2.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: typeOffset}, // A = payload[typeOffset]
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: uint32(msgLeaving)},
		{Code: unix.BPF_RET | unix.BPF_K, K: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	var serr error
	if err := s.rx.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil || serr != nil {
		// Without steering the kernel would spread packets over all
		// three by hash.
		s.Close()
		return plainSocket(bind)
	}
	return s, nil
}

// blockingUDP binds a UDP socket that joins an SO_REUSEPORT group and that
// Go's network poller never sees: the socket is blocking when os.NewFile
// wraps it, so the runtime leaves it alone (reads use MSG_DONTWAIT). It
// returns the bound address (the port, if bind's was 0).
func blockingUDP(bind netip.AddrPort) (*os.File, netip.AddrPort, error) {
	var family int
	var sa unix.Sockaddr
	if bind.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(bind.Port()), Addr: bind.Addr().As4()}
	} else {
		sa6 := &unix.SockaddrInet6{Port: int(bind.Port()), Addr: bind.Addr().As16()}
		if z := bind.Addr().Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return nil, netip.AddrPort{}, err
			}
			sa6.ZoneId = uint32(ifi.Index)
		}
		family, sa = unix.AF_INET6, sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	fail := func(err error) (*os.File, netip.AddrPort, error) {
		unix.Close(fd)
		return nil, netip.AddrPort{}, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail(err)
	}
	if family == unix.AF_INET6 {
		// As Go's own UDP sockets have it, or the others can't join.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail(err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail(err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail(err)
	}
	local := bind
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		local = netip.AddrPortFrom(bind.Addr(), uint16(a.Port))
	case *unix.SockaddrInet6:
		local = netip.AddrPortFrom(bind.Addr(), uint16(a.Port))
	}
	return os.NewFile(uintptr(fd), "membership"), local, nil
}

// plainSocket is the fallback of listenGroup: one ordinary socket.
func plainSocket(bind netip.AddrPort) (*sockets, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(bind))
	if err != nil {
		return nil, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return &sockets{rx: rc, tx: c, local: netip.AddrPortFrom(bind.Addr(), local.Port()), close: []io.Closer{c}}, nil
}

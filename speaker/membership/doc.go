// Package membership tells each speaker, within a fraction of a second,
// which other speakers are alive.
//
// Layer-2 failover needs that fast: when the node that answers ARP/NDP for
// an address dies, another must take over within about a second, and the
// Node's Ready condition takes 40 s or more to change. So the speakers
// exchange small authenticated UDP heartbeats, every Interval (100 ms),
// with every other speaker, and a peer silent for Timeout (400 ms) is dead.
// A speaker that stops gracefully says so (Leave) and its peers drop it at
// once, for a handover within one network trip.
//
// The peer list is fixed and known (the Node objects), so unlike
// hashicorp/memberlist there is no gossip, no indirect probing and no
// suspicion protocol: each speaker only trusts what it hears directly. The
// cost is N−1 heartbeats per Interval sent and received by each node,
// about 100 bytes each. Two things keep that cheap on big clusters and
// small machines:
//
//   - A packet budget (Config.MaxRate, 250 per second by default): past 25
//     peers the Interval and the Timeout stretch by the same factor, so a
//     node's packet rate stops growing with the cluster and detection time
//     grows instead (49 peers: 196 ms and 784 ms).
//   - Received heartbeats are read at each tick, all at once, with the
//     kernel's arrival timestamps (SO_TIMESTAMPNS), not as they arrive:
//     one wakeup per Interval instead of one per packet, which on small
//     virtual machines was most of an idle speaker's CPU. The timestamps
//     keep the freshness and expiry arithmetic exact. Heartbeats go out
//     in one sendmmsg per tick, from the same socket, and that socket is
//     kept out of Go's network poller, which would otherwise still wake
//     a thread for each packet received or sent, just to note the socket
//     readable or writable. Leaving messages still wake their reader at
//     once: the kernel steers them, by their type byte, to a second
//     socket of the same port (an SO_REUSEPORT group with a classic BPF
//     selector; see sockets).
//
// # Authentication and replay protection
//
// Every packet carries an HMAC-SHA256 (truncated to 128 bits) keyed from a
// shared Secret, and names both its sender and its destination (the wire
// format is described in wire.go). Authentication alone doesn't stop
// replays, and a replayed heartbeat of a crashed speaker would keep its
// addresses black-holed, so a heartbeat must also be fresh. Freshness
// without synchronised clocks comes from an echo:
//
//   - Each process picks a random 64-bit incarnation at start. Its sequence
//     numbers increase strictly; they are its monotonic clock reading at
//     send time (nanoseconds since start).
//   - Each packet to a peer echoes the peer's incarnation and the newest
//     sequence received from it.
//   - A heartbeat proves its sender alive only if it echoes our current
//     incarnation and a sequence we sent less than Timeout ago (we compute
//     that age on our own clock: the sequence is our send time). So it was
//     made less than Timeout ago, by a process holding the key.
//   - Per sender we keep its current incarnation and newest sequence: an
//     older or equal sequence of that incarnation is a replay and is
//     dropped. A new incarnation (a restart) replaces a confirmed one (one
//     that has sent a fresh heartbeat) only with a fresh heartbeat, and the
//     replaced incarnation is remembered as superseded, so its packets are
//     dropped from then on.
//
// Consequences, the trade-offs chosen:
//
//   - No clock synchronisation is needed, and no clock jump matters (all
//     ages are monotonic and local).
//   - A replay can't resurrect a dead peer: a packet already received fails
//     the sequence check, and one withheld and replayed later echoes a
//     sequence too old. An attacker on the path who delays packets can
//     postpone the detection of a crash by at most one Timeout (the freshest
//     packet it holds is accepted, and the peer then times out normally);
//     an attacker who can drop packets can make peers look dead anyway.
//     Anyone holding the key can impersonate any speaker: it is a
//     cluster-wide secret, only for the speakers to read.
//   - Liveness needs two-way connectivity: a peer's heartbeats only count
//     if ours reach it. That makes liveness nearly symmetric, so the two
//     sides of an asymmetric partition agree that they are cut off.
//   - A new connection (start, restart, heal) needs a handshake: the first
//     packet only teaches the receiver the sender's sequence, and proves
//     nothing. The receiver answers it with a heartbeat (which echoes
//     what it learnt), and while a handshake is under way both sides read
//     their sockets every Interval/10 and answer each step at once, so
//     peers find each other within about one Interval of the first
//     packet. An answer goes only to the peer's configured address, only
//     for an authenticated packet that is not a replay, and at most one
//     per packet: the mesh can't be used as an amplifier or a reflector.
//   - The leaving message needs no echo, only a sequence newer than
//     anything else from the sender's current incarnation: a replayed one
//     is rejected, and nothing but the process itself (or a key holder)
//     can make a new one.
//
// # Timing
//
// A peer is declared dead Timeout after its last fresh heartbeat arrived.
// Since it last sent one at most an Interval before crashing, a crash is
// detected Timeout−Interval to Timeout after it happens (300–400 ms by
// default), plus scheduling delay, always within Timeout+Interval. About
// Timeout/Interval−1 consecutive lost packets (3) are tolerated, in either
// direction since heartbeats carry echoes.
//
// Right after Run starts (or a peer is added) every peer is dead until the
// handshake completes, a few Intervals later; a consumer that acts on dead
// peers (takes over their addresses) should wait until Settled: every
// listed peer heard from, or one detection period passed since the peer
// list arrived.
package membership

// Package l2 announces LoadBalancer IPs on a node's interface at layer 2.
//
// An Announcer answers ARP requests (IPv4) and NDP Neighbor Solicitations
// (IPv6) for the Service IPs this node currently owns, so that hosts and
// routers on the segment send the traffic for those IPs to this node's MAC
// address. Which node owns which IP is decided elsewhere (speaker/announce);
// this package only acts on the set it is given with Announcer.Set.
//
// The IPs are never configured on the interface: the kernel knows nothing
// about them, and this package is the only thing that answers for them. That
// is what makes a release instantaneous (drop the IP from the owned set and
// the next request goes unanswered) and what lets several announcers coexist
// with the node's own addresses.
//
// Lifecycle of one IP on one interface:
//
//	Set([..ip..])   probing: an RFC 5227 ARP probe or an NDP Neighbor
//	                Solicitation asks whether anyone else holds the IP. Nothing
//	                is answered yet.
//	after ProbeTimeout, no foreign answer
//	                announcing: GratuitousCount gratuitous ARPs / unsolicited
//	                Neighbor Advertisements update the neighbours' caches, and
//	                requests for the IP are answered until it is removed.
//	foreign answer  conflict: OnConflict is called, the IP is not announced,
//	                and it is probed again later with exponential backoff.
//	Set without ip  released: requests are no longer answered, at once.
//
// The decision what to do with one received packet is a pure function
// (decideARP, decideNDP) so that it can be unit-tested and fuzzed without
// sockets; the read loops only feed it bytes and execute its verdict.
package l2

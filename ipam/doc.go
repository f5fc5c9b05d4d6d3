// Package ipam is ironlb's IP address allocator for LoadBalancer Services.
//
// It is deliberately free of Kubernetes types: the controller translates
// Services and address pools into the small structs declared here, which
// keeps the allocation rules testable (and fuzzable) in isolation and keeps
// API churn in client-go away from the code that decides who owns an IP.
//
// The allocator is deterministic: given the same pools and the same sequence
// of calls it hands out the same addresses. Auto allocation always takes the
// lowest free address, so a restarted controller that replays the same
// requests converges to the same assignments, and so that tests can name the
// addresses they expect.
//
// Every pool keeps, per address family, an ordered set of free address
// intervals in a B-tree. Taking, assigning and returning an address are
// O(log n) in the number of free intervals, never a scan of the pool, so a
// nearly full /16 or an IPv6 /64 costs the same as an empty /24.
//
// An IP never moves on its own: holdings survive pool reconfiguration (as
// orphans if their pool no longer contains them) and a failed request leaves
// the service with what it had. Losing a working address is worse for users
// than failing to honour a changed request, which can be retried.
package ipam

package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Sentinel errors, for errors.Is. The returned errors carry the specifics
// (pool, family, IP, holder) in their text; the sentinels let the controller
// choose a reaction (event reason, retry or not) without parsing strings.
var (
	// ErrInvalidRequest: the Service or Request is malformed (missing key,
	// bad family, two requested IPs of one family...). Retrying will not help.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrInvalidPools: SetPools was given a configuration it cannot accept.
	ErrInvalidPools = errors.New("invalid pool configuration")
	// ErrNoFreeAddress: the pool(s) that may be used have no free address of
	// the wanted family. Retrying after a release or a pool change may help.
	ErrNoFreeAddress = errors.New("no free address")
	// ErrNotInPool: a requested IP is not inside any (or the named) pool.
	ErrNotInPool = errors.New("IP not inside a pool")
	// ErrUnknownPool: a named or candidate pool does not exist.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrNoCandidates: auto allocation was needed but the caller allowed no pool.
	ErrNoCandidates = errors.New("no candidate pool")
	// ErrConflict: the IP is held by a service this one may not share with.
	// The concrete type is *ConflictError.
	ErrConflict = errors.New("IP held by an incompatible service")
	// ErrDualStack: RequireAll could not be satisfied from a single pool.
	ErrDualStack = errors.New("dual-stack request cannot be satisfied from one pool")
)

// ConflictError reports that an IP is held by services that the requesting
// service may not share it with. errors.Is(err, ErrConflict) holds.
type ConflictError struct {
	IP      netip.Addr
	Service string   // the service that wanted the IP
	Holders []string // the incompatible holders, sorted; never empty
	// Reason says why the first holder is incompatible, e.g.
	// "port TCP/80 is used by both".
	Reason string
	// which selects the phrasing "held by X, which <Reason>" over
	// "held by X: <Reason>".
	which bool
}

func (e *ConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "IP %s is held by %s", e.IP, e.Holders[0])
	if e.which {
		b.WriteString(", which ")
	} else {
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	if len(e.Holders) > 1 {
		fmt.Fprintf(&b, " (also incompatible with %s)", strings.Join(e.Holders[1:], ", "))
	}
	return b.String()
}

// Is makes errors.Is(err, ErrConflict) work.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// FamilyError is why one family of a request could not be satisfied.
type FamilyError struct {
	Family Family
	Err    error
}

func (e FamilyError) Error() string { return e.Family.String() + " unavailable: " + e.Err.Error() }

func (e FamilyError) Unwrap() error { return e.Err }

// PartialError is returned by Ensure, together with non-empty holdings, when
// a request that does not require all families (single stack is trivially
// complete; PreferDualStack may not be) got some families but not others. The
// holdings are committed: the caller should publish them, report the missing
// families (e.g. "PreferDualStack: IPv6 unavailable") and retry later, since
// a pool change or a release may make the missing family available.
//
// Detect it with errors.As; errors.Is also sees through it to the causes
// (e.g. ErrNoFreeAddress).
type PartialError struct {
	Missing []FamilyError // in request order
}

func (e *PartialError) Error() string {
	parts := make([]string, len(e.Missing))
	for i, m := range e.Missing {
		parts[i] = m.Error()
	}
	return "partial allocation: " + strings.Join(parts, "; ")
}

// Unwrap exposes the per-family causes to errors.Is and errors.As.
func (e *PartialError) Unwrap() []error {
	errs := make([]error, len(e.Missing))
	for i, m := range e.Missing {
		errs[i] = m
	}
	return errs
}

// noFreeError is "no free IPv6 address", matching ErrNoFreeAddress.
type noFreeError struct{ family Family }

func (e noFreeError) Error() string        { return "no free " + e.family.String() + " address" }
func (e noFreeError) Is(target error) bool { return target == ErrNoFreeAddress }

// listError joins several errors under one message; errors.Is and errors.As
// see every cause. Unlike errors.Join it renders on one line, which is what
// Kubernetes event messages need.
type listError struct {
	msg  string
	errs []error
	// sentinel, if set, also matches errors.Is.
	sentinel error
	// brief renders msg alone: it already says everything (e.g. the
	// pools tried), and repeating "no free address" per pool is noise.
	brief bool
	// colon renders "msg: a; b" instead of "msg (a; b)".
	colon bool
}

func (e *listError) Error() string {
	if e.brief {
		return e.msg
	}
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = err.Error()
	}
	list := strings.Join(parts, "; ")
	switch {
	case e.msg == "":
		return list
	case e.colon:
		return e.msg + ": " + list
	default:
		return e.msg + " (" + list + ")"
	}
}

func (e *listError) Unwrap() []error { return e.errs }

func (e *listError) Is(target error) bool { return e.sentinel != nil && target == e.sentinel }

// sentinelError renders as msg and matches sentinel with errors.Is; used
// where the specific message reads better than "<sentinel>: <details>".
type sentinelError struct {
	msg      string
	sentinel error
}

func (e *sentinelError) Error() string        { return e.msg }
func (e *sentinelError) Is(target error) bool { return target == e.sentinel }

func errorf(sentinel error, format string, args ...any) error {
	return &sentinelError{msg: fmt.Sprintf(format, args...), sentinel: sentinel}
}

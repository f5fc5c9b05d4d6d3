package controller

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

// ObjectRef names one configuration object.
type ObjectRef struct{ Kind, Name string }

// State is what the controller knows beyond the API server's objects: the
// allocator, the parsed configuration and which Services wait for
// addresses. One mutex guards it all; allocation takes microseconds, so the
// lock is never what limits throughput (the API server is).
type State struct {
	mu       sync.Mutex
	primed   chan struct{} // closed once Prime has run
	alloc    *ipam.Allocator
	cfg      *config.Config
	problems map[ObjectRef][]config.Problem
	// gens is the generation of each object the last parse saw.
	gens map[ObjectRef]int64
	// pending are the Services that want an address they do not have yet;
	// they are the only ones retried when addresses free up.
	pending map[string]bool
	// conflicts are Services whose recorded addresses clashed with an
	// older Service's at Prime.
	conflicts map[string]error
}

// NewState returns an empty, unprimed State.
func NewState() *State {
	return &State{
		primed:    make(chan struct{}),
		alloc:     ipam.New(),
		cfg:       &config.Config{Pools: map[string]*config.Pool{}},
		problems:  map[ObjectRef][]config.Problem{},
		gens:      map[ObjectRef]int64{},
		pending:   map[string]bool{},
		conflicts: map[string]error{},
	}
}

// WaitPrimed blocks until Prime has run, so no reconcile assigns anything
// before the allocator knows every address already in use.
func (s *State) WaitPrimed(ctx context.Context) error {
	select {
	case <-s.primed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReadConfig lists every configuration object.
func ReadConfig(ctx context.Context, r client.Reader) (config.Objects, error) {
	var objs config.Objects
	for _, k := range config.Kinds() {
		l := k.NewList()
		if err := r.List(ctx, l); err != nil {
			return objs, fmt.Errorf("list %s: %w", k.Name, err)
		}
		k.Store(&objs, l)
	}
	return objs, nil
}

// Prime rebuilds the allocator from the addresses already written in
// Service statuses. It reads live from the API server, not from a cache: a
// new leader's cache may trail the old leader's last writes by a moment,
// and an address it did not see is an address it could hand out twice.
// Services whose recorded addresses conflict are remembered (Conflict).
func (s *State) Prime(ctx context.Context, live client.Reader, filter config.ClassFilter) error {
	objs, err := ReadConfig(ctx, live)
	if err != nil {
		return err
	}
	var svcs corev1.ServiceList
	if err := live.List(ctx, &svcs); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	// The previous leader's verdicts, read back from the Ready
	// conditions, decide conflicts the way it did.
	objs.Established = map[string]bool{}
	gens := map[ObjectRef]int64{}
	eachObject(&objs, func(kind string, o client.Object) {
		gens[ObjectRef{kind, o.GetName()}] = o.GetGeneration()
		if c := meta.FindStatusCondition(commonStatus(o).Conditions, v1beta1.ConditionReady); c != nil &&
			(c.Status == metav1.ConditionTrue || c.Reason == v1beta1.ReasonUnknownRef || c.Reason == v1beta1.ReasonTerminating) {
			objs.Established[kind+"/"+o.GetName()] = true
		}
	})
	cfg, problems := config.Parse(objs)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.setConfigLocked(cfg, problems, gens)
	// Oldest first: if two Services claim one address, the one that had
	// it first keeps it.
	items := svcs.Items
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i].CreationTimestamp, items[j].CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return items[i].Namespace+"/"+items[i].Name < items[j].Namespace+"/"+items[j].Name
	})
	for i := range items {
		svc := &items[i]
		ips := config.IngressIPs(svc)
		if !filter.Manages(svc) || len(ips) == 0 {
			continue
		}
		isvc, _, _ := ServiceRequest(svc, nil, cfg)
		if _, err := s.alloc.Restore(isvc, ips); err != nil {
			s.conflicts[isvc.Key] = err
		}
	}
	select {
	case <-s.primed:
	default:
		close(s.primed)
	}
	return nil
}

// Conflict returns why a Service's recorded addresses could not be
// restored at start, or nil.
func (s *State) Conflict(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflicts[key]
}

// PendingIn lists the waiting Services of one namespace.
func (s *State) PendingIn(ns string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.pending {
		if strings.HasPrefix(k, ns+"/") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (s *State) setConfigLocked(cfg *config.Config, problems []config.Problem, gens map[ObjectRef]int64) {
	s.gens = gens
	if err := s.alloc.SetPools(cfg.IPAMPools()); err != nil {
		// Parse drops overlapping and invalid pools, so this is a bug;
		// keep the previous pools rather than disturb assignments.
		problems = append(problems, config.Problem{Kind: "ironlb", Name: "allocator", Field: "pools", Reason: v1beta1.ReasonInvalid, Message: err.Error(), Fatal: true})
	} else {
		s.cfg = cfg
	}
	s.problems = map[ObjectRef][]config.Problem{}
	for _, p := range problems {
		ref := ObjectRef{p.Kind, p.Name}
		s.problems[ref] = append(s.problems[ref], p)
	}
}

// SetConfig installs a new configuration. It returns the Services to look at
// again: those waiting for addresses and those whose addresses moved in or
// out of a pool (their conditions change). Nobody else's address changes.
func (s *State) SetConfig(cfg *config.Config, problems []config.Problem, gens map[ObjectRef]int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.orphansLocked()
	s.setConfigLocked(cfg, problems, gens)
	after := s.orphansLocked()
	touched := map[string]bool{}
	for k := range s.pending {
		touched[k] = true
	}
	for k := range before {
		if !after[k] {
			touched[k] = true
		}
	}
	for k := range after {
		if !before[k] {
			touched[k] = true
		}
	}
	return sortedKeys(touched)
}

func (s *State) orphansLocked() map[string]bool {
	out := map[string]bool{}
	for _, k := range s.alloc.Services() {
		for _, h := range s.alloc.Holdings(k) {
			if h.Orphan {
				out[k] = true
			}
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Config returns the current configuration (immutable).
func (s *State) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Parsed returns the problems of one object and the generation of it that
// the last parse saw (parsed is false when it saw none).
func (s *State) Parsed(ref ObjectRef) (problems []config.Problem, gen int64, parsed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen, parsed = s.gens[ref]
	return s.problems[ref], gen, parsed
}

// Ensure runs the allocator for one Service and records whether it still
// waits for addresses.
func (s *State) Ensure(svc ipam.Service, req ipam.Request) ([]ipam.Holding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.alloc.Ensure(svc, req)
	if err != nil || len(h) < len(req.Families) {
		s.pending[svc.Key] = true
	} else {
		delete(s.pending, svc.Key)
	}
	if err != nil && !isPartial(err) {
		// A failed Ensure leaves the previous holdings in place.
		h = s.alloc.Holdings(svc.Key)
	}
	return h, err
}

// MarkPending records that a Service waits for addresses it could not be
// given for a reason outside the allocator (a bad request).
func (s *State) MarkPending(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[key] = true
}

// Holdings returns a Service's current addresses.
func (s *State) Holdings(key string) []ipam.Holding {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alloc.Holdings(key)
}

// Release frees a Service's addresses. When any address became free it
// returns the waiting Services, the only ones that may now succeed.
func (s *State) Release(key string) (freed []netip.Addr, retry []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, key)
	delete(s.conflicts, key)
	freed = s.alloc.Release(key)
	if len(freed) > 0 {
		retry = sortedKeys(s.pending)
	}
	return freed, retry
}

// Usage returns a pool's usage per family and how many addresses of it
// are held.
func (s *State) Usage(pool string) (map[ipam.Family]ipam.Usage, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.alloc.Usage(pool)
	return u, s.alloc.InUse(pool), ok
}

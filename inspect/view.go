// Package inspect explains a cluster's load balancing to its admin: what
// each Service was given, who announces it and why the other nodes do
// not, why a Service is pending, how full the pools are, and which
// addresses a node's drain would move. It is kubectl-ironlb's core.
//
// What it says is computed, not guessed: the configuration is parsed by
// package config as the speakers parse it, and the announcements are
// speaker/core.Plan's, the very decision every speaker acts on. The only
// input the plugin cannot read as a speaker does is the mesh's liveness;
// it takes a node's speaker as running when its speaker Pod is Ready.
//
// Everything here is pure but Read, which lists what the reports need
// with read access only.
package inspect

import (
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/announce"
	"github.com/ironlb/ironlb/speaker/core"
)

// Cluster is what the plugin read, as read.
type Cluster struct {
	Objects        config.Objects
	Services       []corev1.Service
	EndpointSlices []discoveryv1.EndpointSlice
	Nodes          []corev1.Node
	Namespaces     []corev1.Namespace
	// SpeakerPods are the speaker DaemonSet's Pods; SpeakersUnknown says
	// they could not be read (no access), or none was found.
	SpeakerPods     []corev1.Pod
	SpeakersUnknown string
	NodeStatuses    []v1beta1.BGPNodeStatus
	Filter          config.ClassFilter
}

// View is a Cluster as the speakers see it.
type View struct {
	c        *Cluster
	Config   *config.Config
	Problems []config.Problem
	Alive    map[string]bool
	Plans    core.Plans
	why      *announce.Explainer // over Plans, made on first need
	infos    map[string]int      // Plans.Infos by Service key
	nodes    []string            // the Nodes' names, sorted
	// Notes are caveats that apply to every report made from the view.
	Notes []string
}

// NewView parses the configuration and plans the announcements.
func NewView(c *Cluster) *View {
	v := &View{c: c, Alive: map[string]bool{}}
	v.Config, v.Problems = config.Parse(c.Objects)
	switch {
	case c.SpeakersUnknown != "":
		v.Notes = append(v.Notes, c.SpeakersUnknown+": every node's speaker is taken as running")
		for _, n := range c.Nodes {
			v.Alive[n.Name] = true
		}
	default:
		for _, p := range c.SpeakerPods {
			if p.Spec.NodeName != "" && podReady(&p) {
				v.Alive[p.Spec.NodeName] = true
			}
		}
	}
	v.Plans = v.plan(c.Nodes, c.EndpointSlices)
	v.infos = make(map[string]int, len(v.Plans.Infos))
	for i, in := range v.Plans.Infos {
		v.infos[in.Key] = i
	}
	for _, n := range c.Nodes {
		v.nodes = append(v.nodes, n.Name)
	}
	sort.Strings(v.nodes)
	return v
}

// plan runs the speakers' decision over these nodes and endpoints.
func (v *View) plan(nodes []corev1.Node, eps []discoveryv1.EndpointSlice) core.Plans {
	svcs := make([]*core.Service, 0, len(v.c.Services))
	for i := range v.c.Services {
		if s := &v.c.Services[i]; s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			svcs = append(svcs, core.NewService(s))
		}
	}
	return core.Plan(core.Inputs{
		Config: v.Config, Filter: v.c.Filter, Nodes: pointers(nodes), Services: svcs,
		EndpointSlices: pointers(eps), Alive: v.Alive,
	})
}

// service finds a Service.
func (v *View) service(ns, name string) *corev1.Service {
	for i := range v.c.Services {
		if s := &v.c.Services[i]; s.Namespace == ns && s.Name == name {
			return s
		}
	}
	return nil
}

// covered tells whether an advertisement of proto covers info's k-th
// address.
func (v *View) covered(proto announce.Protocol, info announce.ServiceInfo, k int) bool {
	pool := ""
	if k < len(info.Pools) {
		pool = info.Pools[k]
	}
	return announce.Covers(v.Config, proto, info, pool)
}

// explain gives every node but those announcing ip over proto its reason.
func (v *View) explain(proto announce.Protocol, ip netip.Addr, announcing []string) []NodeReason {
	var out []NodeReason
	for _, n := range v.nodes {
		if slices.Contains(announcing, n) {
			continue
		}
		if v.why == nil {
			p := v.Plans
			v.why = announce.NewExplainer(v.Config, p.Nodes, p.Infos, p.L2, p.BGP)
		}
		out = append(out, NodeReason{Node: n, Reason: v.why.Why(proto, ip, n)})
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func pointers[T any](in []T) []*T {
	out := make([]*T, len(in))
	for i := range in {
		out[i] = &in[i]
	}
	return out
}

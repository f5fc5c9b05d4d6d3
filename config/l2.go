package config

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// L2Advertisement is a validated L2Advertisement.
type L2Advertisement struct {
	Name             string
	Pools            map[string]bool // resolved from names and selectors; nil = every pool
	NodeSelectors    []labels.Selector
	Interfaces       []string
	ServiceSelectors []labels.Selector
}

func parseL2(items []v1beta1.L2Advertisement, est map[string]bool, cfg *Config, poolLabels map[string]labels.Set, ps *problems) {
	for _, obj := range byAge(items, KindL2Adv, est, func(a *v1beta1.L2Advertisement) *metav1.ObjectMeta { return &a.ObjectMeta }) {
		pools, ok1 := resolvePools(KindL2Adv, obj.Name, obj.Spec.IPAddressPools, obj.Spec.IPAddressPoolSelectors, cfg, poolLabels, ps)
		nodes, ok2 := selectors(KindL2Adv, obj.Name, "spec.nodeSelectors", obj.Spec.NodeSelectors, ps)
		svcs, ok3 := selectors(KindL2Adv, obj.Name, "spec.serviceSelectors", obj.Spec.ServiceSelectors, ps)
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		cfg.L2Advertisements = append(cfg.L2Advertisements, &L2Advertisement{
			Name: obj.Name, Pools: pools, NodeSelectors: nodes, Interfaces: slices.Clone(obj.Spec.Interfaces), ServiceSelectors: svcs,
		})
	}
}

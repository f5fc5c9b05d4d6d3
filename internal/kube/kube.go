// Package kube is the speaker's Kubernetes plumbing on client-go alone:
// REST clients and informers for exactly the kinds the speaker uses.
//
// Why not controller-runtime and client-go's clientset, as the
// controller uses: both register every built-in API group (58 of them)
// at start-up, and a program that merely links them sits at 22 MiB of
// resident memory before it caches a single object. The speaker runs on
// every node, so that cost is paid once per node; with a scheme of four
// groups (two more for the metrics reviews, package app) it is a
// fraction of that (docs/scale.md).
package kube

import (
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// Scheme knows the kinds the speaker reads and writes, and no others.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme, eventsv1.AddToScheme, v1beta1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Clients are REST clients of the API groups the speaker uses, sharing
// one HTTP client (one connection to the API server).
type Clients struct {
	Core, Discovery, Events, IronLB *rest.RESTClient
	// Scheme is what the clients decode with (Scheme's).
	Scheme *runtime.Scheme
}

// NewClients builds the REST clients from cfg. Responses are decoded
// straight into the typed objects, without conversion.
func NewClients(cfg *rest.Config) (*Clients, error) {
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("API server client: %w", err)
	}
	cs := Clients{Scheme: scheme}
	for _, x := range []struct {
		c  **rest.RESTClient
		gv schema.GroupVersion
	}{
		{&cs.Core, corev1.SchemeGroupVersion},
		{&cs.Discovery, discoveryv1.SchemeGroupVersion},
		{&cs.Events, eventsv1.SchemeGroupVersion},
		{&cs.IronLB, v1beta1.GroupVersion},
	} {
		if *x.c, err = RESTClient(cfg, hc, scheme, x.gv); err != nil {
			return nil, err
		}
	}
	return &cs, nil
}

// RESTClient is a client of group version gv through hc, decoding with
// scheme (which must know gv's kinds).
func RESTClient(cfg *rest.Config, hc *http.Client, scheme *runtime.Scheme, gv schema.GroupVersion) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &gv
	c.APIPath = "/apis"
	if gv.Group == "" {
		c.APIPath = "/api"
	}
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.ContentType == "" {
		c.ContentType = runtime.ContentTypeJSON
	}
	rc, err := rest.RESTClientForConfigAndClient(c, hc)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", gv, err)
	}
	return rc, nil
}

// HTTPClient is the client all of cs share.
func (cs *Clients) HTTPClient() *http.Client { return cs.Core.Client }

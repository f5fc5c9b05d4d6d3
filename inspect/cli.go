package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

// Usage is the plugin's help.
const Usage = `kubectl ironlb: explains ironlb's load balancing (read only).

Commands:
  status [SERVICE]      addresses, pools, the nodes announcing each address per
                        protocol and why each other node does not; BGP sessions
  why SERVICE           why a Service is pending or not announced
  pools                 each pool's usage per family
  simulate-drain NODE   which addresses a drain of NODE moves, and where

Flags:
  -n, --namespace NS        the Service's namespace (default: the context's)
  -A, --all-namespaces      status: every namespace
  -o, --output FORMAT       table (default), json or yaml
      --kubeconfig FILE     kubeconfig (default: $KUBECONFIG, ~/.kube/config)
      --context NAME        kubeconfig context
      --speaker-selector S  labels of the speaker Pods (default ` + DefaultSpeakerSelector + `)
      --default-class=false ironlb runs with --default-class=false
`

// ErrUsage is returned for a command line that does not parse.
var ErrUsage = errors.New("usage")

// options are the parsed command line.
type options struct {
	kubeconfig, context, namespace, output, speakers string
	all, defaultClass                                bool
	args                                             []string
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("kubectl-ironlb", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, n := range []string{"n", "namespace"} {
		fs.StringVar(&o.namespace, n, "", "")
	}
	for _, n := range []string{"o", "output"} {
		fs.StringVar(&o.output, n, "table", "")
	}
	for _, n := range []string{"A", "all-namespaces"} {
		fs.BoolVar(&o.all, n, false, "")
	}
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "")
	fs.StringVar(&o.context, "context", "", "")
	fs.StringVar(&o.speakers, "speaker-selector", DefaultSpeakerSelector, "")
	fs.BoolVar(&o.defaultClass, "default-class", true, "")
	// Flags may come after the arguments, as kubectl allows.
	for {
		if err := fs.Parse(args); err != nil {
			return o, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		if args = fs.Args(); len(args) == 0 {
			break
		}
		o.args, args = append(o.args, args[0]), args[1:]
	}
	switch o.output {
	case "table", "json", "yaml":
	default:
		return o, fmt.Errorf("%w: -o %q: want table, json or yaml", ErrUsage, o.output)
	}
	return o, nil
}

// Run runs one command line (without the program name), writing the
// report to out and caveats to errOut.
func Run(ctx context.Context, args []string, out, errOut io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if len(o.args) == 0 || o.args[0] == "help" {
		fmt.Fprint(out, Usage)
		return nil
	}
	cmd, rest := o.args[0], o.args[1:]
	want := map[string][2]int{"status": {0, 1}, "why": {1, 1}, "pools": {0, 0}, "simulate-drain": {1, 1}}
	n, ok := want[cmd]
	if !ok {
		return fmt.Errorf("%w: unknown command %q", ErrUsage, cmd)
	}
	if len(rest) < n[0] || len(rest) > n[1] {
		return fmt.Errorf("%w: %s takes %d to %d arguments, got %d", ErrUsage, cmd, n[0], n[1], len(rest))
	}
	r, ns, err := o.connect()
	if err != nil {
		return err
	}
	c, err := Read(ctx, r, o.speakers, config.ClassFilter{Default: o.defaultClass})
	if err != nil {
		return err
	}
	v := NewView(c)
	var report any
	var table func(io.Writer)
	switch cmd {
	case "status":
		if len(rest) == 1 {
			s := v.service(ns, rest[0])
			if s == nil {
				return fmt.Errorf("service %s/%s not found", ns, rest[0])
			}
			st := v.ServiceStatus(s)
			report, table = st, func(w io.Writer) { writeServiceStatus(w, st) }
			break
		}
		if o.all {
			ns = ""
		}
		l := v.Status(ns)
		report, table = list(l), func(w io.Writer) { writeStatusTable(w, l) }
	case "why":
		e := v.Why(ns, rest[0])
		report, table = e, func(w io.Writer) { writeWhy(w, e) }
	case "pools":
		p := v.Pools()
		report, table = list(p), func(w io.Writer) { writePools(w, p) }
	case "simulate-drain":
		d, err := v.SimulateDrain(rest[0])
		if err != nil {
			return err
		}
		report, table = d, func(w io.Writer) { writeDrain(w, d) }
	}
	for _, n := range v.Notes {
		fmt.Fprintln(errOut, "note:", n)
	}
	switch o.output {
	case "json":
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(report)
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	}
	table(out)
	return nil
}

// list wraps a list for -o json|yaml, as kubectl wraps its lists.
func list[T any](items []T) map[string]any {
	if items == nil {
		items = []T{}
	}
	return map[string]any{"items": items}
}

// connect builds a reader from the kubeconfig, and the namespace to use.
func (o options) connect() (client.Reader, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	ns := o.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", fmt.Errorf("kubeconfig namespace: %w", err)
		}
	}
	r, err := NewReader(cfg)
	return r, ns, err
}

// NewReader is a client with ironlb's types that reads from the API
// server directly (no cache: the plugin reads once).
func NewReader(cfg *rest.Config) (client.Reader, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubectl-ironlb"
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", strings.TrimSpace(cfg.Host), err)
	}
	return c, nil
}

// Package labkit holds what the lab and the end-to-end tests both do to a
// cluster of network-namespace "nodes": register Node objects, start
// speaker processes, serve a Service's "pods" and reach it from a client.
package labkit

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

// CreateNode registers a Ready Node with the host's address, as a kubelet
// would (there is none here).
func CreateNode(ctx context.Context, c client.Client, name string, h *netlab.Host) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	if err := c.Create(ctx, node); err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: h.IPv4.Addr().String()},
		{Type: corev1.NodeHostName, Address: name},
	}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := c.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("node %s status: %w", name, err)
	}
	return nil
}

// Speaker is a running speaker process: ironlb's, or a peer's that is
// measured beside it.
type Speaker struct {
	*proc.Proc
	Node string
}

// StartSpeaker runs bin/speaker for a node inside the node's namespace, as
// on a real node's host network. kubeconfig's API server must serve on the
// LAN (apiserver.NewOn and Lab.AttachThisHost), where the node reaches it.
func StartSpeaker(root, dir, node string, h *netlab.Host, kubeconfig, keyFile string, extraArgs ...string) (*Speaker, error) {
	args := append([]string{"--node-name=" + node, "--kubeconfig=" + kubeconfig, "--mesh-key-file=" + keyFile,
		"--metrics-bind-address=0", "--health-probe-bind-address=0"}, extraArgs...)
	s, err := StartIn(h, "speaker-"+node, filepath.Join(dir, "speaker-"+node+".log"), filepath.Join(root, "bin", "speaker"), args...)
	if err != nil {
		return nil, fmt.Errorf("%w (run `make build`)", err)
	}
	return &Speaker{Proc: s, Node: node}, nil
}

// StartIn runs bin with args inside the host's namespace (`ip netns exec`
// execs it in place: the process is bin itself), its output in log.
func StartIn(h *netlab.Host, name, log, bin string, args ...string) (*proc.Proc, error) {
	return proc.Start(name, log, nil, append([]string{"ip", "netns", "exec", h.Name, bin}, args...)...)
}

// Stop ends the speaker (SIGTERM: a graceful stop) and waits up to 10s.
func (s *Speaker) Stop() { s.Proc.Stop(10 * time.Second) }

// Kill ends the speaker at once (SIGKILL: a crash) and waits for it.
func (s *Speaker) Kill() {
	s.Proc.Kill()
	s.Wait()
}

// ServePods stands in for kube-proxy and a pod: it puts the Service
// address on the host's loopback (with arp_ignore so only the speaker,
// never the kernel, answers ARP for it) and serves HTTP on it, answering
// "hello from NODE". The server stops with ctx.
func ServePods(ctx context.Context, h *netlab.Host, node string, vip netip.Addr) error {
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"},
		{"sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=1"},
		{"sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2"},
	} {
		if _, err := h.In(args...); err != nil {
			return err
		}
	}
	bits := 32
	if vip.Is6() {
		bits = 128
	}
	if _, err := h.In("ip", "addr", "replace", netip.PrefixFrom(vip, bits).String(), "dev", "lo"); err != nil {
		return err
	}
	ln, err := netlab.InNS(h.Name, func() (net.Listener, error) {
		return net.Listen("tcp", netip.AddrPortFrom(vip, 80).String())
	})
	if err != nil {
		return fmt.Errorf("listen on %s in %s: %w", vip, h.Name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", node)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return nil
}

// Get fetches http://vip/ from inside the client host.
func Get(client *netlab.Host, vip netip.Addr, timeout time.Duration) (string, error) {
	conn, err := netlab.InNS(client.Name, func() (net.Conn, error) {
		return net.DialTimeout("tcp", netip.AddrPortFrom(vip, 80).String(), timeout)
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	host := vip.String()
	if vip.Is6() {
		host = "[" + host + "]"
	}
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	body := string(b)
	if i := indexBody(body); i >= 0 {
		body = body[i:]
	}
	return body, nil
}

func indexBody(s string) int {
	for i := 0; i+3 < len(s); i++ {
		if s[i:i+4] == "\r\n\r\n" {
			return i + 4
		}
	}
	return -1
}

// WaitIP waits until the Service namespace/name has an address in its
// status and returns the first one.
func WaitIP(ctx context.Context, c client.Client, namespace, name string, timeout time.Duration) (netip.Addr, error) {
	var svc corev1.Service
	deadline := time.Now().Add(timeout)
	for {
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &svc); err == nil && len(svc.Status.LoadBalancer.Ingress) > 0 {
			return netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("service %s/%s got no EXTERNAL-IP in %s", namespace, name, timeout)
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

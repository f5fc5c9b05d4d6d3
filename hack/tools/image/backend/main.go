// Command backend is the lab's backend pod (test/datapath on real
// kubelets): GET / answers "pod=POD node=NODE from=SOURCE", the source
// address it saw (the client's, or a node's after kube-proxy's SNAT);
// GET /ready is its readiness probe, and POST /ready?ready=false|true
// makes it fail or pass, as a test turns a pod unready. POD_NAME and
// NODE_NAME come from the downward API; READY=false starts it unready.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	var ready atomic.Bool
	ready.Store(os.Getenv("READY") != "false")
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /ready", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("ready") {
		case "true":
			ready.Store(true)
		case "false":
			ready.Store(false)
		default:
			http.Error(w, "want ?ready=true or ?ready=false", http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "pod=%s node=%s from=%s\n", pod, node, host)
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	// As a container's PID 1 it gets no default signal action: SIGTERM
	// must be handled for the pod to stop within its grace period.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

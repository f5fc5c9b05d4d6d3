# ironlb — see README.md. Every target builds what it needs itself.
SHELL := /bin/bash
GO ?= go
CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# grpcnotrace: gRPC (linked by GoBGP) otherwise links golang.org/x/net/trace,
# whose html/template calls methods by name, so the linker must keep every
# exported method of every type: 5.6 MB more speaker binary, resident on
# every node (docs/scale.md). `build` fails if such a call comes back.
BUILD_TAGS := grpcnotrace
export KUBEBUILDER_ASSETS := $(CURDIR)/bin/k8s

# lab: the chart's pods from the image on real kubelets (containerd v2)
# on every node (lab -processes: the binaries as host processes instead).
lab: deps k8s-binaries helm build image
	$(GO) run ./lab

# lab-failover: in a second shell while `make lab` runs: cut the link of
# the node answering for the LAN address and of the node the routed
# client's flow goes to, print both clients' outage, restore the node.
lab-failover:
	$(GO) run ./lab -failover -runs=$${RUNS:-1}

lab-down:
	-pkill -f '$(CURDIR)/bin/(controller|speaker|k8s/|lab/frr)'
	$(GO) run ./lab -down
	rm -rf bin/lab

.PHONY: test-vm peers bench-vs-metallb deps chaos bench-failover bench-bgp helm image lab lab-failover lab-down bench-lab bench-datapath image-push all build generate lint vet test unit k8s-binaries bench bench-ipam bench-controller bench-scale fuzz clean

all: build

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -tags '$(BUILD_TAGS)' -trimpath -ldflags '$(LDFLAGS) -dumpdep' -o bin/ ./cmd/... 2>bin/linked.txt || \
		{ grep -v ' -> ' bin/linked.txt; exit 1; }
	@if grep -m3 '<ReflectMethod>' bin/linked.txt; then \
		echo "build: a linked function calls methods by name (above; trace it back in bin/linked.txt), which keeps every exported method in the binaries"; \
		rm -f bin/controller bin/speaker; exit 1; fi
	@rm -f bin/linked.txt

generate:
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./config/... crd:crdVersions=v1 output:crd:artifacts:config=charts/ironlb/crds

k8s-binaries:
	hack/k8s-binaries.sh

# peers: what ironlb is measured beside (MetalLB's controller and speaker,
# built from the Go module proxy into bin/peers/; hack/peers.sh).
peers:
	hack/peers.sh

# deps: the Debian tools the network tests and the lab drive (present on
# the base image, installed if not). frr provides the routers the BGP tests
# peer with (test/frr runs its daemons itself; the system service is never
# started, and stopped if the package started it); podman and runc run the
# image (test/podman), ca-certificates is the bundle the image ships;
# nftables, iptables and conntrack are what kube-proxy drives, and
# containernetworking-plugins the CNI (ptp, host-local) that plugs the
# lab's pods into their nodes (test/datapath).
deps:
	@command -v ip >/dev/null && command -v pgrep >/dev/null && command -v sysctl >/dev/null && test -x /usr/lib/frr/bgpd && \
	 command -v podman >/dev/null && command -v runc >/dev/null && test -r /etc/ssl/certs/ca-certificates.crt && \
	 command -v nft >/dev/null && command -v iptables-restore >/dev/null && command -v conntrack >/dev/null && test -x /usr/lib/cni/ptp || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 procps frr ca-certificates && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc nftables iptables conntrack containernetworking-plugins && \
		 (service frr stop >/dev/null 2>&1; true))

helm:
	hack/helm.sh

vet:
	$(GO) vet ./...
	cd hack/tools/image && GOWORK=off $(GO) vet ./...
	$(GO) vet -tags bench ./test/bench/ ./test/e2e/

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# test: everything CI runs. Builds the Kubernetes test binaries first.
test: deps k8s-binaries helm lint build image
	cd hack/tools/image && GOWORK=off $(GO) test -count=1 ./...
	$(GO) test -count=1 -timeout 20m -v -run '^TestLab$$' ./lab
	$(GO) run ./lab -oneshot -processes
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/lab$$')
	$(MAKE) test-vm
	$(GO) test -count=1 -run '^$$' -fuzz FuzzOperations -fuzztime 5000x ./ipam
	$(GO) test -count=1 -run '^$$' -fuzz FuzzARPPacket -fuzztime 100000x ./l2
	$(GO) test -count=1 -run '^$$' -fuzz FuzzNDP -fuzztime 100000x ./l2
	$(GO) test -count=1 -run '^$$' -fuzz FuzzDecode -fuzztime 100000x ./speaker/membership
	$(GO) test -count=1 -run '^$$' -fuzz FuzzParse -fuzztime 50000x ./config

# test-vm: what this machine's kernel cannot run (it has no VRF devices
# and loads no modules), in a Debian kernel under QEMU: BGP in a Linux VRF
# against FRR. make test runs it too.
test-vm:
	hack/vm-test.sh bgp '^TestVRF$$'

bench-ipam:
	mkdir -p bin && $(GO) test -run '^$$' -bench . -benchmem -count 6 ./ipam ./speaker/announce | tee bin/bench-ipam.txt

# bench-controller: create-to-IP against the plain client (the API
# server's limit), paced (RATE creates/s) and then as a burst (WRITERS
# closed-loop writers, PAIRS pairs, each phase on a fresh API server).
bench-controller: k8s-binaries
	$(GO) test -tags bench -count=1 -timeout 30m -run '^TestBenchController$$' -v ./test/bench/ -args -bench-services=$${N:-1000} -bench-rate=$${RATE:-60} -bench-report=$(CURDIR)/bin/bench-controller.txt
	$(GO) test -tags bench -count=1 -timeout 60m -run '^TestBenchControllerBurst$$' -v ./test/bench/ -args -bench-services=$${N:-1000} -burst-writers=$${WRITERS:-8} -burst-pairs=$${PAIRS:-3} -bench-report=$(CURDIR)/bin/bench-controller.txt

# bench-vs-metallb: ironlb beside MetalLB v0.15.2 (bin/peers/, `make
# peers`), in one run: the controller paced (MetalLB's controller a fourth
# interleaved writer, each writer on its own fresh API server) and as a burst (MetalLB a fourth writer, each on a
# fresh API server), each controller then restarted with its N Services;
# then both load balancers in the same beds at once: layer-2 failover
# (RUNS of each fault), BGP announce and crash withdrawal, and the
# speakers' footprint with IPS addresses each. The controller tables go
# to bin/bench-vs-metallb.txt, the rest into docs/comparison.md. 10,000
# Services: `make bench-vs-metallb N=10000 PAIRS=1` (MetalLB takes 9 min
# for the burst and 8 more for the restart); PACED_N=10000 paces 10,000
# per writer too.
bench-vs-metallb: deps k8s-binaries build peers
	$(GO) test -tags bench -count=1 -timeout 60m -run '^TestBenchController$$' -v ./test/bench/ -args -bench-services=$${PACED_N:-1000} -bench-rate=$${RATE:-60} -bench-metallb -bench-report=$(CURDIR)/bin/bench-vs-metallb.txt
	$(GO) test -tags bench -count=1 -timeout 120m -run '^TestBenchControllerBurst$$' -v ./test/bench/ -args -bench-services=$${N:-1000} -burst-writers=$${WRITERS:-8} -burst-pairs=$${PAIRS:-3} -burst-metallb -burst-restart -bench-report=$(CURDIR)/bin/bench-vs-metallb.txt
	$(GO) test -tags bench -count=1 -timeout 90m -run '^TestBenchVsMetalLB(L2|BGP|Footprint)$$' -v ./test/e2e/ -args -failover-runs=$${RUNS:-20} -vs-ips=$${IPS:-2000} -report=$(CURDIR)/docs/comparison.md

# bench-scale: the controller process with 10,000 Services over 20 pools,
# then 50 speaker processes announcing 2,000 L2 addresses; one after the
# other, each (re)writing its section of docs/scale.md.
bench-scale: k8s-binaries build
	$(GO) test -tags bench -count=1 -timeout 40m -run '^TestBenchScale$$' -v ./test/bench/ -args -scale-services=$${N:-10000} -scale-rate=$${RATE:-25} -scale-report=$(CURDIR)/docs/scale.md
	$(GO) test -tags bench -count=1 -timeout 40m -run '^TestBenchSpeakerScale$$' -v ./test/e2e/ -args -scale-speakers=$${SPEAKERS:-50} -scale-ips=$${IPS:-2000} -scale-report=$(CURDIR)/docs/scale.md

# bench: every benchmark, one after the other (about an hour); each writes
# its results with the command that produced them under docs/.
bench: bench-ipam bench-scale bench-failover bench-bgp

# bench-lab: TestLab's link cuts in `make lab`, RUNS of them, written into
# docs/performance.md.
bench-lab: deps k8s-binaries helm build
	$(GO) test -count=1 -timeout 40m -v -run '^TestLab$$' ./lab -args -failover-runs=$${RUNS:-20} -report=$(CURDIR)/docs/performance.md

bench-failover: deps k8s-binaries build
	$(GO) test -tags bench -count=1 -timeout 20m -run '^TestBench(Failover|Handover|PingFailover)$$' -v ./test/e2e/ -args -failover-runs=$${RUNS:-20} -report=$(CURDIR)/docs/performance.md

bench-bgp: deps k8s-binaries build
	$(GO) test -tags bench -count=1 -timeout 40m -run '^TestBenchBGP' -v ./test/e2e/ -args -failover-runs=$${RUNS:-20} -report=$(CURDIR)/docs/performance.md

# bench-datapath: failover under real traffic on the real data path
# (kube-proxy, Pods, EndpointSlices): new connections every 10 ms while the
# carrying node's speaker crashes, hands over or its link is cut, L2 and
# BGP + BFD, and externalTrafficPolicy Local moves; RUNS of each, written
# into docs/performance.md.
bench-datapath: deps k8s-binaries build
	$(GO) test -tags bench -count=1 -timeout 60m -run '^TestBenchDataPath(Local)?$$' -v ./test/e2e/ -args -failover-runs=$${RUNS:-20} -report=$(CURDIR)/docs/performance.md

# chaos: the long fault runs (the default suite runs the same tests
# shorter), written into docs/reliability.md.
chaos: deps k8s-binaries build
	$(GO) test -count=1 -timeout 40m -run '^(TestAPIServerOutage|TestBGPEndToEnd|TestControllerChaos)$$' -v ./test/e2e/ -args -outage=60s -bgp-outage=60s -controller-kills=20 -report=$(CURDIR)/docs/reliability.md

# image: the container image without a container engine or a base image
# to pull (hack/tools/image, go-containerregistry): static binaries for
# each platform, an OCI layout in bin/image/oci and a docker archive per
# platform. Reproducible: every time in it is the commit's.
IMAGE ?= ghcr.io/ironlb/ironlb:$(VERSION)
IMAGE_ARCHES := amd64 arm64
image: deps
	for arch in $(IMAGE_ARCHES); do \
		rm -rf bin/image/linux_$$arch; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -tags '$(BUILD_TAGS)' -trimpath -ldflags '$(LDFLAGS)' -o bin/image/linux_$$arch/ ./cmd/controller ./cmd/speaker || exit 1; \
	done
	cd hack/tools/image && GOWORK=off $(GO) run -mod=readonly . -root $(CURDIR) -bin $(CURDIR)/bin/image -out $(CURDIR)/bin/image \
		-tag $(IMAGE) -version $(VERSION) -revision $$(git rev-parse HEAD) -epoch $$(git log -1 --format=%ct)

# image-push: the layout `make image` wrote, to REGISTRY (credentials from
# docker/podman login).
image-push: image
	@test -n "$(REGISTRY)" || { echo "image-push: set REGISTRY, e.g. make image-push REGISTRY=registry.example/ironlb"; exit 1; }
	cd hack/tools/image && GOWORK=off $(GO) run -mod=readonly . -out $(CURDIR)/bin/image -push $(REGISTRY)/ironlb:$(VERSION)

clean:
	rm -rf bin/

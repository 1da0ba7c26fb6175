# admitfn: admission-policy functions for Kubernetes.
GO ?= go

.PHONY: run test unit e2e fuzz tools vet build bench soak fmt cluster-deps cluster-tools knative-e2e

# Serve every handler on localhost with the embedded policy, over HTTPS with a
# throwaway CA, and print how to point kube-apiserver at it.
run:
	$(GO) run ./functions/cmd/admitfn serve --listen 127.0.0.1:8443 --dev-certs .run/certs

# Everything CI runs.
test: vet unit fuzz e2e knative-e2e

# test/knative is a module of its own (Knative Serving pins older k8s.io
# modules): it checks config/'s Services with Serving's validation. So is
# test/vap: it runs the generated ValidatingAdmissionPolicies with
# k8s.io/apiserver's own libraries against the engine.
unit:
	$(GO) test -race -count=1 ./...
	cd test/knative && $(GO) test -count=1 ./...
	cd test/kubelet && $(GO) test -count=1 ./...
	cd test/vap && $(GO) test -count=1 ./...

# Each fuzz target for a short while (FUZZTIME=1000000x make fuzz for longer).
# Crashers land in the package's testdata/fuzz and replay in every go test.
# The budget is a count of executions, not a duration: Go 1.26's fuzz
# coordinator can fail a clean run with "context deadline exceeded" when a
# duration expires mid-execution (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 30000x
FUZZ_TARGETS := imageref:FuzzParse imageref:FuzzRepoPattern policy:FuzzParse policy:FuzzImageUser imagepolicy:FuzzImageReview admission:FuzzAdmissionReview
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn ./functions/$$pkg ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./functions/$$pkg >/tmp/admitfn-fuzz.log 2>&1 || { cat /tmp/admitfn-fuzz.log; exit 1; }; \
	done
	@echo "fuzz FuzzGeneratedPolicies ./test/vap ($(FUZZTIME))"
	@cd test/vap && $(GO) test -run '^$$' -fuzz '^FuzzGeneratedPolicies$$' -fuzztime $(FUZZTIME) . >/tmp/admitfn-fuzz.log 2>&1 || { cat /tmp/admitfn-fuzz.log; exit 1; }

# The end-to-end suite: admitfn judged by a real kube-apiserver and etcd on
# loopback, built from the pinned module in test/tools.
# The pod-create benchmarks run once each too, so their own checks (which
# creates reached which backend) keep working; make bench times them.
e2e: tools
	KO=$(abspath $(TOOLS_BIN)/ko-$(KO_VERSION)) COSIGN=$(abspath $(TOOLS_BIN)/cosign-$(COSIGN_VERSION)) \
		NOTATION=$(abspath $(TOOLS_BIN)/notation-$(NOTATION_VERSION)) $(GO) test -tags e2e -count=1 -v -timeout 30m \
		-bench '^BenchmarkPodCreate' -benchtime 1x ./test/e2e/

# kube-apiserver, kubectl and etcd, rebuilt only when their pins change. A
# cold kube-apiserver build takes about 8 minutes on 2 cores; Go's build
# cache makes the next ones quick.
TOOLS_BIN := test/tools/bin
KO_VERSION := v0.19.1
COSIGN_VERSION := v2.6.5
NOTATION_VERSION := v1.3.2
tools: $(TOOLS_BIN)/kube-apiserver $(TOOLS_BIN)/kubectl $(TOOLS_BIN)/etcd $(TOOLS_BIN)/ko-$(KO_VERSION) $(TOOLS_BIN)/cosign-$(COSIGN_VERSION) $(TOOLS_BIN)/notation-$(NOTATION_VERSION)

# The version the binaries report, as Kubernetes' own build stamps it (a
# module build says v0.0.0-master+$$Format:%H$$, which Knative's version
# check refuses). Keep it equal to k8s.io/kubernetes in test/tools/go.mod.
K8S_VERSION := v1.37.2
K8S_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37

$(TOOLS_BIN)/kube-apiserver: test/tools/go.mod test/tools/go.sum Makefile
	cd test/tools && $(GO) build -ldflags '$(K8S_LDFLAGS)' -o bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver

$(TOOLS_BIN)/kubectl: test/tools/go.mod test/tools/go.sum
	cd test/tools && $(GO) build -ldflags '$(K8S_LDFLAGS)' -o bin/kubectl k8s.io/kubernetes/cmd/kubectl

# The node and the rest of the control plane, for the real-cluster tests
# (knative-e2e): about 3 minutes on top of kube-apiserver's build cache.
CLUSTER_TOOLS := $(TOOLS_BIN)/kubelet $(TOOLS_BIN)/kube-proxy $(TOOLS_BIN)/kube-controller-manager $(TOOLS_BIN)/kube-scheduler
cluster-tools: $(CLUSTER_TOOLS)

$(TOOLS_BIN)/kubelet $(TOOLS_BIN)/kube-proxy $(TOOLS_BIN)/kube-controller-manager $(TOOLS_BIN)/kube-scheduler: test/tools/go.mod test/tools/go.sum Makefile
	cd test/tools && $(GO) build -ldflags '$(K8S_LDFLAGS)' -o bin/$(notdir $@) k8s.io/kubernetes/cmd/$(notdir $@)

# Debian's container runtime, runc, CNI plugins, iptables, ip and unshare:
# what a real node needs that the module proxy does not serve.
cluster-deps:
	@command -v containerd >/dev/null && command -v runc >/dev/null && test -x /usr/lib/cni/bridge && command -v iptables >/dev/null \
		&& command -v ip >/dev/null && command -v unshare >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc containernetworking-plugins iptables iproute2 util-linux; }

# Real Knative on this machine (test/e2e/cluster_*_test.go): a node with
# the kubelet, containerd and a CNI bridge, Knative Serving and Traefik
# built with ko, admitfn deployed with `ko apply -f config/`. Needs root.
knative-e2e: tools cluster-tools cluster-deps
	KO=$(abspath $(TOOLS_BIN)/ko-$(KO_VERSION)) $(GO) test -tags e2e,cluster -count=1 -v -timeout 40m -run '^TestKnative' ./test/e2e/

$(TOOLS_BIN)/etcd: test/tools/go.mod test/tools/go.sum test/tools/etcd/main.go
	cd test/tools && $(GO) build -o bin/etcd ./etcd

# ko, pinned; `go install pkg@version` builds it with ko's own go.mod. The
# e2e suite runs `ko apply -f config/` with it.
$(TOOLS_BIN)/ko-$(KO_VERSION):
	mkdir -p $(TOOLS_BIN)
	GOBIN=$(abspath $(TOOLS_BIN)) $(GO) install github.com/google/ko@$(KO_VERSION)
	mv $(TOOLS_BIN)/ko $@

# The real notation CLI, pinned, for the Notation signature tests (signs
# into the loopback registry; notation verify is the oracle). Built in its
# own module, test/notation: the module proxy serves v1.3.2 but refuses
# the version list `go install pkg@version` asks for.
$(TOOLS_BIN)/notation-$(NOTATION_VERSION): test/notation/go.mod test/notation/go.sum
	mkdir -p $(TOOLS_BIN)
	cd test/notation && $(GO) build -o ../tools/bin/notation-$(NOTATION_VERSION) github.com/notaryproject/notation/cmd/notation

# The real cosign CLI, pinned, for the signature tests: they sign images
# in a loopback registry with it and check that cosign verify and admitfn
# agree. About 2 minutes cold.
$(TOOLS_BIN)/cosign-$(COSIGN_VERSION):
	mkdir -p $(TOOLS_BIN)
	GOBIN=$(abspath $(TOOLS_BIN)) $(GO) install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)
	mv $(TOOLS_BIN)/cosign $@

vet:
	@test -z "$$(gofmt -l functions test *.go)" || { echo "gofmt needed:"; gofmt -l functions test *.go; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e,cluster ./test/e2e/
	cd test/knative && $(GO) vet ./...
	cd test/kubelet && $(GO) vet ./...
	cd test/vap && $(GO) vet ./...

# Static, like the image ko builds (ko.yaml).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/admitfn ./functions/cmd/admitfn

# Go micro-benchmarks, then the side-by-side table (test/bench): admitfn
# against a constant-response floor on loopback, cold start, RSS, pod
# creation through kube-apiserver with and without the webhook, image size.
BENCH_FLAGS := -ko $(abspath $(TOOLS_BIN)/ko-$(KO_VERSION)) -pod-creates 1000
bench: tools $(TOOLS_BIN)/kyverno-$(KYVERNO_VERSION)
	$(GO) test -run '^$$' -bench . -benchmem ./functions/...
	KYVERNO=$(abspath $(TOOLS_BIN)/kyverno-$(KYVERNO_VERSION)) $(GO) run ./test/bench $(BENCH_FLAGS)

# Kyverno's admission controller, for make bench only (side by side with
# admitfn in test/e2e BenchmarkKyvernoSideBySide): its own module,
# test/kyverno; about 8 minutes cold on 2 cores, a 250 MiB binary.
KYVERNO_VERSION := v1.19.1
$(TOOLS_BIN)/kyverno-$(KYVERNO_VERSION): test/kyverno/go.mod test/kyverno/go.sum
	mkdir -p $(TOOLS_BIN)
	cd test/kyverno && $(GO) build -o ../tools/bin/kyverno-$(KYVERNO_VERSION) github.com/kyverno/kyverno/cmd/kyverno

# The bench table plus 60 s at half the maximum rate.
soak: tools
	$(GO) run ./test/bench -duration 3s -soak 60s $(BENCH_FLAGS)

fmt:
	gofmt -w functions test *.go

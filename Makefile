# admitfn: admission-policy functions for Kubernetes.
GO ?= go

.PHONY: run test unit e2e tools vet build bench fmt

# Serve every handler on localhost with the embedded policy, over HTTPS with a
# throwaway CA, and print how to point kube-apiserver at it.
run:
	$(GO) run ./functions/cmd/admitfn serve --listen 127.0.0.1:8443 --dev-certs .run/certs

# Everything CI runs.
test: vet unit e2e

unit:
	$(GO) test -race -count=1 ./...

# The end-to-end suite: admitfn judged by a real kube-apiserver and etcd on
# loopback, built from the pinned module in test/tools.
e2e: tools
	$(GO) test -tags e2e -count=1 -v -timeout 30m ./test/e2e/

# kube-apiserver, kubectl and etcd, rebuilt only when their pins change. A
# cold kube-apiserver build takes about 8 minutes on 2 cores; Go's build
# cache makes the next ones quick.
TOOLS_BIN := test/tools/bin
tools: $(TOOLS_BIN)/kube-apiserver $(TOOLS_BIN)/kubectl $(TOOLS_BIN)/etcd

$(TOOLS_BIN)/kube-apiserver: test/tools/go.mod test/tools/go.sum
	cd test/tools && $(GO) build -o bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver

$(TOOLS_BIN)/kubectl: test/tools/go.mod test/tools/go.sum
	cd test/tools && $(GO) build -o bin/kubectl k8s.io/kubernetes/cmd/kubectl

$(TOOLS_BIN)/etcd: test/tools/go.mod test/tools/go.sum test/tools/etcd/main.go
	cd test/tools && $(GO) build -o bin/etcd ./etcd

vet:
	@test -z "$$(gofmt -l functions test)" || { echo "gofmt needed:"; gofmt -l functions test; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/

build:
	$(GO) build -trimpath -o bin/admitfn ./functions/cmd/admitfn

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./functions/...

fmt:
	gofmt -w functions test

# admitfn: admission-policy functions for Kubernetes.
GO ?= go

.PHONY: run test unit vet build bench fmt

# Serve every handler on localhost with the embedded policy, over HTTPS with a
# throwaway CA, and print how to point kube-apiserver at it.
run:
	$(GO) run ./functions/cmd/admitfn serve --listen 127.0.0.1:8443 --dev-certs .run/certs

# Everything CI runs.
test: vet unit

unit:
	$(GO) test -race -count=1 ./...

vet:
	@test -z "$$(gofmt -l functions test)" || { echo "gofmt needed:"; gofmt -l functions test; exit 1; }
	$(GO) vet ./...

build:
	$(GO) build -trimpath -o bin/admitfn ./functions/cmd/admitfn

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./functions/...

fmt:
	gofmt -w functions test

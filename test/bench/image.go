package main

import (
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// imageSize builds admitfn with ko and ko.yaml for this machine's platform
// onto an empty base in a loopback registry, and returns the compressed
// size of the image: manifest's config and layers, all of them ko's since
// the base has none. The published image adds the distroless/static base,
// which cannot be pulled here.
func imageSize(ko string) (int64, error) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: platform.OS, Architecture: platform.Architecture, Config: v1.Config{User: "65532"}})
	if err != nil {
		return 0, err
	}
	baseRef, err := name.ParseReference(host + "/base:nonroot")
	if err != nil {
		return 0, err
	}
	if err := remote.Write(baseRef, base); err != nil {
		return 0, err
	}
	cmd := exec.Command(ko, "build", "--platform="+platform.OS+"/"+platform.Architecture, "./functions/cmd/admitfn")
	cmd.Env = append(os.Environ(), "KO_CONFIG_PATH=ko.yaml", "KO_DOCKER_REPO="+host+"/admitfn", "KO_DEFAULTBASEIMAGE="+baseRef.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("ko build: %v\n%s", err, stderr.String())
	}
	ref, err := name.ParseReference(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("ko build printed %q: %v", out, err)
	}
	img, err := remote.Image(ref, remote.WithPlatform(platform))
	if err != nil {
		return 0, err
	}
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	return total, nil
}

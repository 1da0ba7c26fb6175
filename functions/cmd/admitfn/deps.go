package main
import (
 _ "k8s.io/api/imagepolicy/v1alpha1"
 _ "k8s.io/api/admission/v1"
 _ "sigs.k8s.io/yaml"
 _ "github.com/google/go-containerregistry/pkg/v1/remote"
 _ "github.com/google/go-containerregistry/pkg/registry"
 _ "github.com/google/go-containerregistry/pkg/v1/random"
 _ "github.com/google/go-containerregistry/pkg/v1/mutate"
 _ "github.com/google/go-containerregistry/pkg/authn"
 _ "golang.org/x/sync/singleflight"
 _ "github.com/google/go-cmp/cmp"
)
func main(){}

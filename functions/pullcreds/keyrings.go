package pullcreds

import "strings"

// Keyrings are keyrings tried one after another, as the kubelet tries a
// pod's pull Secrets before the node's own credentials.
type Keyrings []*Keyring

// Lookup is every keyring's Lookup, in order.
func (ks Keyrings) Lookup(repo string) []Auth {
	var out []Auth
	for _, k := range ks {
		out = append(out, k.Lookup(repo)...)
	}
	return out
}

// KubeletName is a repository as the kubelet names it when it looks up
// credentials: go-containerregistry calls Docker Hub index.docker.io,
// the kubelet docker.io.
func KubeletName(repo string) string {
	if rest, ok := strings.CutPrefix(repo, "index.docker.io/"); ok {
		return "docker.io/" + rest
	}
	return repo
}

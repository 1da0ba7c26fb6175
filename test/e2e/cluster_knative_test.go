//go:build e2e && cluster

package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// A real cluster on this machine: the control plane of controlplane_test.go
// on the node's bridge address, kube-controller-manager and kube-scheduler,
// one real node (cluster_node_test.go), Knative Serving built with ko from
// the module test/knative pins, and Traefik (test/traefik) as Knative's
// ingress, terminating TLS on 127.0.0.1:443 for *.admitfn.test.

const (
	// knativeDomain is config-domain's domain: Services get
	// https://NAME.NAMESPACE.admitfn.test.
	knativeDomain = "admitfn.test"
	// clusterDNSIP is the kube-dns Service's address, given to every pod:
	// Knative's components find each other, and each Revision's Services,
	// by name.
	clusterDNSIP = "10.96.0.10"
)

// cluster is a running cluster and what it was built from.
type cluster struct {
	*controlPlane
	node *node
	reg  *registrytest.Registry
	// private is a registry that wants a password (the token realm flow),
	// on the node's bridge address: pods and containerd both reach it.
	private      *registrytest.Registry
	privateCreds registrytest.Credentials
	base         string // the base image ko builds on
	ko           string
	admin        identity
	manager      *proc
	scheduler    *proc
}

// knativeHosts are the names the apiserver resolves to the ingress.
func knativeHosts(services ...string) string {
	return "127.0.0.1 localhost\n127.0.0.1 " + strings.Join(services, " ") + "\n"
}

func startCluster(t *testing.T, hosts string) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("a real node needs root (network namespaces, mounts, iptables)")
	}
	for _, tool := range []string{"containerd", "runc", "ctr", "iptables", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: `make cluster-deps` installs Debian's containerd, runc, CNI plugins and iptables", tool)
		}
	}
	ko := os.Getenv("KO")
	if ko == "" {
		t.Fatal("KO names no ko binary: run `make knative-e2e`, which builds the pinned one")
	}
	dir := keptDir(t)
	p := newPKI(t, dir)
	podNetwork(t)
	reg := registrytest.New(t)
	c := &cluster{reg: reg, ko: ko, privateCreds: registrytest.Credentials{Username: "team-a", Password: randomToken(t)}}
	c.private = registrytest.New(t, registrytest.WithTokenAuth(c.privateCreds), registrytest.WithAddress(nodeIP+":0"))
	pause := c.pushPause(t, dir)
	c.base = c.pushBase(t)

	c.controlPlane = startControlPlane(t, dir, p, controlPlaneOptions{
		Address:     nodeIP,
		ServiceCIDR: serviceCIDR,
		SANs:        []string{kubernetesServiceIP, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		Hosts:       hosts,
	})
	c.admin = c.clientFor(t, "cluster-admin", "system:masters")
	saKey := filepath.Join(dir, "sa.key")
	c.manager = startProc(t, dir, "kube-controller-manager", toolBin("kube-controller-manager"),
		"--kubeconfig", c.clientFor(t, "system:kube-controller-manager", "system:masters").Kubeconfig,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(harness.FreePort(t)),
		"--service-account-private-key-file", saKey, "--root-ca-file", p.CAFile,
		"--use-service-account-credentials=false", "--leader-elect=false",
		"--concurrent-deployment-syncs", "2", "--v", "1")
	c.scheduler = startProc(t, dir, "kube-scheduler", toolBin("kube-scheduler"),
		"--kubeconfig", c.clientFor(t, "system:kube-scheduler", "system:masters").Kubeconfig,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(harness.FreePort(t)), "--leader-elect=false")
	c.node = startNode(t, c.controlPlane, nodeOptions{Registry: reg.Host(), PrivateRegistries: []string{c.private.Host()}, PauseImage: pause, ClusterDNS: clusterDNSIP})
	for _, p := range []*proc{c.manager, c.scheduler} {
		if p.exited() {
			t.Fatalf("%s exited (see %s)", p.name, p.log)
		}
	}
	// Runs before the node's processes are stopped one by one.
	t.Cleanup(func() { c.node.stop(t) })
	c.installDNS(t)
	return c
}

// pushPause builds the sandbox image: a static binary that waits for a
// signal (registry.k8s.io/pause cannot be pulled here).
func (c *cluster) pushPause(t testing.TB, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "pause")
	writeFile(t, filepath.Join(src, "go.mod"), "module pause\n\ngo 1.26\n")
	writeFile(t, filepath.Join(src, "main.go"), `package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
`)
	bin := filepath.Join(src, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building pause: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := imageOf(t, map[string][]byte{"pause": b}, func(cf *v1.ConfigFile) {
		cf.Config.Entrypoint = []string{"/pause"}
		cf.Config.User = "65535"
	})
	// The same image, private: what the pull secret cases pull.
	c.private.Push("private/pause:v1", img)
	return c.reg.Ref("pause", "@"+c.reg.Push("pause:latest", img))
}

// pushBase pushes the base ko builds on, standing in for
// distroless/static:nonroot: /etc/passwd and /etc/group naming uid 65532,
// a world-writable /tmp, and that user.
func (c *cluster) pushBase(t testing.TB) string {
	t.Helper()
	img := imageOf(t, map[string][]byte{
		"etc/passwd": []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
		"etc/group":  []byte("root:x:0:\nnonroot:x:65532:\n"),
		"tmp/":       nil,
	}, func(cf *v1.ConfigFile) {
		cf.Config.User = "65532"
		cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	})
	return c.reg.Ref("base/static", "@"+c.reg.Push("base/static:nonroot", img))
}

// imageOf is a one-layer linux/amd64 image of files (a name ending in /
// is a folder; other files are executable).
func imageOf(t testing.TB, files map[string][]byte, tweak func(*v1.ConfigFile)) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		h := &tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o1777, 0
		} else if strings.HasPrefix(name, "etc/") {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(content)
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	tweak(cf)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// koApply runs `ko apply` in moduleDir with the cluster's registry and
// base, and the admin's kubeconfig.
func (c *cluster) koApply(t testing.TB, moduleDir, repo string, extraEnv []string, args ...string) {
	t.Helper()
	cmd := exec.Command(c.ko, append([]string{"apply", "--platform=linux/amd64", "--sbom=none"}, args...)...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), append([]string{
		"KO_DOCKER_REPO=" + c.reg.Host() + "/" + repo,
		"KO_DEFAULTBASEIMAGE=" + c.base,
		"KUBECONFIG=" + c.admin.Kubeconfig,
		"PATH=" + filepath.Dir(toolBin("kubectl")) + string(os.PathListSeparator) + os.Getenv("PATH"),
	}, extraEnv...)...)
	started := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("$ ko apply %s  (in %s, %s)\n%s", strings.Join(args, " "), moduleDir, time.Since(started).Round(time.Second), tail(string(out), 20))
	if err != nil {
		t.Fatalf("ko apply: %v", err)
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// installKnative builds Knative Serving's images with ko and applies its
// release manifests (config/core of knative.dev/serving, the networking
// CRDs of knative.dev/networking), with the settings this machine needs
// written into a copy: Traefik's ingress class, the domain, https URLs
// (TLS ends at Traefik), short autoscaling windows so a test sees scale to
// zero in seconds, and the loopback registry left unresolved.
func (c *cluster) installKnative(t testing.TB) {
	t.Helper()
	knativeModule, err := filepath.Abs(filepath.Join("..", "knative"))
	if err != nil {
		t.Fatal(err)
	}
	serving := moduleDir(t, knativeModule, "knative.dev/serving")
	networking := moduleDir(t, knativeModule, "knative.dev/networking")
	caching := moduleDir(t, knativeModule, "knative.dev/caching")
	out := filepath.Join(c.dir, "knative")

	// The module zips leave out the symlinks the repository has in
	// config/core: the networking CRDs and config-network come from the
	// networking module, the caching CRD from the caching module.
	crds := filepath.Join(out, "crds")
	for _, f := range []string{"ingress.yaml", "serverlessservice.yaml", "certificate.yaml", "domain-claim.yaml"} {
		copyFile(t, filepath.Join(networking, "config", f), filepath.Join(crds, f))
	}
	copyFile(t, filepath.Join(caching, "config", "image.yaml"), filepath.Join(crds, "image.yaml"))
	core := filepath.Join(out, "core")
	copyTree(t, filepath.Join(serving, "config", "core"), core, func(rel string) bool { return strings.HasSuffix(rel, ".yaml") })
	copyFile(t, filepath.Join(networking, "config", "config-network.yaml"), filepath.Join(core, "configmaps", "network.yaml"))

	editDocs(t, filepath.Join(core, "configmaps", "network.yaml"), func(kind, name string, doc map[string]any) {
		if kind == "ConfigMap" && name == "config-network" {
			setData(doc, "ingress-class", "traefik.ingress.networking.knative.dev")
			setData(doc, "default-external-scheme", "https")
		}
	})
	editDocs(t, filepath.Join(core, "configmaps", "domain.yaml"), func(kind, name string, doc map[string]any) {
		if kind == "ConfigMap" && name == "config-domain" {
			setData(doc, knativeDomain, "")
		}
	})
	editDocs(t, filepath.Join(core, "configmaps", "autoscaler.yaml"), func(kind, name string, doc map[string]any) {
		if kind == "ConfigMap" && name == "config-autoscaler" {
			setData(doc, "stable-window", "6s")
			setData(doc, "scale-to-zero-grace-period", "6s")
		}
	})
	editDocs(t, filepath.Join(core, "configmaps", "deployment.yaml"), func(kind, name string, doc map[string]any) {
		if kind == "ConfigMap" && name == "config-deployment" {
			setData(doc, "registries-skipping-tag-resolving", "kind.local,ko.local,dev.local,"+c.reg.Host())
		}
	})

	if _, _, err := c.admin.kubectl(t, "", "apply", "-f", crds); err != nil {
		t.Fatalf("applying Knative's networking CRDs: %v", err)
	}
	c.koApply(t, knativeModule, "knative", nil, "-R", "-f", core)
	if _, _, err := c.admin.kubectl(t, "", "wait", "--for=condition=Available", "deployment", "--all", "-n", "knative-serving", "--timeout=300s"); err != nil {
		c.admin.kubectl(t, "", "get", "pods", "-A", "-o", "wide")
		t.Fatalf("Knative Serving's deployments not available: %v", err)
	}
}

// installDNS runs CoreDNS (test/coredns pins it) as the cluster's DNS:
// Service and pod names under cluster.local, and nothing else (no
// forwarding: nothing in this cluster may resolve names beyond it).
func (c *cluster) installDNS(t testing.TB) {
	t.Helper()
	corednsModule, err := filepath.Abs(filepath.Join("..", "coredns"))
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, filepath.Join(c.dir, "coredns", "coredns.yaml"), fmt.Sprintf(corednsManifest, clusterDNSIP))
	c.koApply(t, corednsModule, "coredns", nil, "-f", path)
	if _, _, err := c.admin.kubectl(t, "", "rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=120s"); err != nil {
		t.Fatalf("CoreDNS not ready: %v", err)
	}
}

const corednsManifest = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:1053 {
        errors
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
        }
        cache 5
    }
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
spec:
  clusterIP: %s
  selector:
    k8s-app: kube-dns
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      # The cluster's DNS cannot ask itself.
      dnsPolicy: Default
      containers:
      - name: coredns
        image: ko://github.com/coredns/coredns
        args: [-conf, /etc/coredns/Corefile]
        readinessProbe:
          httpGet:
            path: /ready
            port: 8181
          periodSeconds: 2
        securityContext:
          runAsNonRoot: true
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities:
            drop: [ALL]
        volumeMounts:
        - name: config
          mountPath: /etc/coredns
          readOnly: true
      volumes:
      - name: config
        configMap:
          name: coredns
`

// installTraefik builds Traefik with ko (test/traefik pins it) and runs it
// on the node's network as Knative's ingress: TLS on 127.0.0.1:443 with a
// certificate for *.NAMESPACE.admitfn.test from the test's CA.
func (c *cluster) installTraefik(t testing.TB, namespaces ...string) {
	t.Helper()
	traefikModule, err := filepath.Abs(filepath.Join("..", "traefik"))
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, ns := range namespaces {
		hosts = append(hosts, "*."+ns+"."+knativeDomain)
	}
	pair, err := c.pki.ca.Server(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	ping := harness.FreePort(t)
	manifest := fmt.Sprintf(traefikManifest, indent(string(pair.Cert), 4), indent(string(pair.Key), 4), ping, ping)
	path := writeFile(t, filepath.Join(c.dir, "traefik", "traefik.yaml"), manifest)
	c.koApply(t, traefikModule, "traefik", nil, "-f", path)
	if _, _, err := c.admin.kubectl(t, "", "rollout", "status", "deployment/traefik", "-n", "traefik", "--timeout=180s"); err != nil {
		t.Fatalf("Traefik not ready: %v", err)
	}
}

// traefikManifest runs Traefik with its Knative provider (experimental in
// v3.6): it watches Knative's Ingresses, routes their hosts on the
// websecure entry point, and reports its Service as their load balancer.
// Formatted with the certificate, the key and the ping port (twice).
const traefikManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: traefik
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: traefik
  namespace: traefik
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: traefik-knative
rules:
- apiGroups: [networking.internal.knative.dev]
  resources: [ingresses, ingresses/status]
  verbs: [get, list, watch, update, patch]
- apiGroups: [""]
  resources: [services, secrets, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: traefik-knative
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: traefik-knative
subjects:
- kind: ServiceAccount
  name: traefik
  namespace: traefik
---
apiVersion: v1
kind: Secret
metadata:
  name: traefik-default-cert
  namespace: traefik
type: kubernetes.io/tls
stringData:
  tls.crt: |
%s
  tls.key: |
%s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: traefik-dynamic
  namespace: traefik
data:
  tls.yaml: |
    tls:
      stores:
        default:
          defaultCertificate:
            certFile: /etc/traefik/tls/tls.crt
            keyFile: /etc/traefik/tls/tls.key
---
apiVersion: v1
kind: Service
metadata:
  name: traefik
  namespace: traefik
spec:
  selector:
    app: traefik
  ports:
  - name: websecure
    port: 443
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: traefik
  namespace: traefik
spec:
  replicas: 1
  selector:
    matchLabels:
      app: traefik
  template:
    metadata:
      labels:
        app: traefik
    spec:
      serviceAccountName: traefik
      # On the node's network, listening on loopback only: the apiserver
      # reaches it at 127.0.0.1:443, nothing beyond the machine can.
      hostNetwork: true
      containers:
      - name: traefik
        image: ko://github.com/traefik/traefik/v3/cmd/traefik
        args:
        - --entryPoints.websecure.address=127.0.0.1:443
        - --entryPoints.websecure.http.tls=true
        - --entryPoints.ping.address=127.0.0.1:%d
        - --ping.entryPoint=ping
        - --experimental.knative=true
        - --providers.knative=true
        - --providers.knative.publicEntrypoints=websecure
        - --providers.knative.publicService.name=traefik
        - --providers.knative.publicService.namespace=traefik
        - --providers.file.filename=/etc/traefik/dynamic/tls.yaml
        - --log.level=INFO
        - --accessLog=true
        readinessProbe:
          httpGet:
            host: 127.0.0.1
            path: /ping
            port: %d
          periodSeconds: 2
        securityContext:
          # 443 is a privileged port.
          runAsUser: 0
          capabilities:
            drop: [ALL]
            add: [NET_BIND_SERVICE]
        volumeMounts:
        - name: cert
          mountPath: /etc/traefik/tls
          readOnly: true
        - name: dynamic
          mountPath: /etc/traefik/dynamic
          readOnly: true
      volumes:
      - name: cert
        secret:
          secretName: traefik-default-cert
      - name: dynamic
        configMap:
          name: traefik-dynamic
`

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}

// copyTree copies the files under from that keep accepts (by path
// relative to from).
func copyTree(t testing.TB, from, to string, keep func(rel string) bool) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if keep(rel) {
			copyFile(t, path, filepath.Join(to, rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// editDocs rewrites each YAML document of path through edit.
func editDocs(t testing.TB, path string, edit func(kind, name string, doc map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, part := range strings.Split(string(b), "\n---") {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(part), &doc); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc == nil {
			continue
		}
		kind, _ := doc["kind"].(string)
		name, _ := dig(doc, "metadata")["name"].(string)
		edit(kind, name, doc)
		out, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(out))
	}
	writeFile(t, path, strings.Join(docs, "---\n"))
}

// dig returns the map at path inside doc, creating it when missing.
func dig(doc map[string]any, path ...string) map[string]any {
	m := doc
	for _, k := range path {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	return m
}

func setData(doc map[string]any, key, value string) { dig(doc, "data")[key] = value }

//go:build e2e && cluster

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/test/internal/harness"
)

// A real node on this machine: containerd and runc (Debian's), a CNI
// bridge inside the machine, the kubelet and kube-proxy built from the
// module test/tools pins. The comments below say why each setting is
// needed: what a reader of this file would otherwise ask.

// The node's addresses. Pods live on a bridge the test creates; the node
// (the host side of the bridge) is its gateway, and Service addresses are
// routed onto the bridge too, so no packet for either range leaves the
// machine even when no iptables rule claims it.
const (
	bridgeName  = "admitfn0"
	nodeIP      = "10.244.0.1"
	podCIDR     = "10.244.0.0/24"
	serviceCIDR = "10.96.0.0/24"
	// kubernetesServiceIP is the first address of serviceCIDR: the
	// apiserver gives it to the default/kubernetes Service.
	kubernetesServiceIP = "10.96.0.1"
	nodeName            = "admitfn-node"
	guardChain          = "ADMITFN-GUARD"
)

// run runs a command that must succeed, and returns what it printed.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// try runs a command whose failure is expected or harmless (cleanup).
func try(name string, args ...string) error {
	return exec.Command(name, args...).Run()
}

// setSysctl writes a /proc/sys value and restores the old one at cleanup.
func setSysctl(t testing.TB, key, value string) {
	t.Helper()
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatalf("setting %s=%s: %v", key, value, err)
	}
	t.Cleanup(func() { os.WriteFile(path, old, 0o644) })
}

// podNetwork makes the bridge, routes the Service range onto it, and
// guards forwarding: a packet may be forwarded from the bridge only back
// onto it, so pods reach each other, Services and the node, and nothing
// beyond the machine (they cannot even reach its resolver).
func podNetwork(t testing.TB) {
	t.Helper()
	removePodNetwork()
	t.Cleanup(removePodNetwork)
	run(t, "ip", "link", "add", bridgeName, "type", "bridge")
	run(t, "ip", "addr", "add", nodeIP+"/24", "dev", bridgeName)
	run(t, "ip", "link", "set", bridgeName, "up")
	run(t, "ip", "route", "add", serviceCIDR, "dev", bridgeName)
	run(t, "iptables", "-w", "-N", guardChain)
	run(t, "iptables", "-w", "-A", guardChain, "-i", bridgeName, "!", "-o", bridgeName, "-j", "DROP")
	run(t, "iptables", "-w", "-A", guardChain, "!", "-i", bridgeName, "-o", bridgeName, "-j", "DROP")
	run(t, "iptables", "-w", "-I", "FORWARD", "1", "-j", guardChain)
	// Pod → Service → pod goes through the node: it forwards, and sees
	// the bridged replies so conntrack can undo the Service's DNAT.
	setSysctl(t, "net.ipv4.ip_forward", "1")
	setSysctl(t, "net.bridge.bridge-nf-call-iptables", "1")
}

func removePodNetwork() {
	try("iptables", "-w", "-D", "FORWARD", "-j", guardChain)
	try("iptables", "-w", "-F", guardChain)
	try("iptables", "-w", "-X", guardChain)
	try("ip", "link", "del", bridgeName)
}

// node is containerd, the kubelet and kube-proxy, registered with cp.
type node struct {
	dir        string
	cp         *controlPlane
	containerd *proc
	kubelet    *proc
	kubeProxy  *proc
	ctrSocket  string
	netnsAtRun map[string]bool
	// before lists, for each folder outside the run's own where the
	// runtime, the CNI plugins or the kubelet write whatever their
	// configuration says, what was there before the node started.
	before map[string]map[string]bool
}

// hostFolders are where containerd, runc, libcni and the kubelet write
// outside the folders they are given: shim sockets, runc's state, CNI
// result caches, the device-plugin socket, containerd's opt plugin.
var hostFolders = []string{"/run/containerd/s", "/run/containerd/runc/k8s.io", "/var/lib/cni/results", "/var/lib/kubelet/device-plugins", "/opt/containerd"}

// entries lists a folder's names (none when it does not exist).
func entries(dir string) map[string]bool {
	names := map[string]bool{}
	list, _ := os.ReadDir(dir)
	for _, e := range list {
		names[e.Name()] = true
	}
	return names
}

// nodeOptions are what the node needs from the test.
type nodeOptions struct {
	// Registry is the loopback registry's host:port: containerd pulls from
	// it over plain HTTP.
	Registry string
	// PrivateRegistries are more registries containerd pulls from over
	// plain HTTP, with the credentials the kubelet gives it.
	PrivateRegistries []string
	// PauseImage is the sandbox image, in Registry.
	PauseImage string
	// ClusterDNS is the kube-dns Service's address, for pods' resolv.conf.
	ClusterDNS string
	// StaticPods are manifests the kubelet runs without asking the
	// apiserver (file name → YAML).
	StaticPods map[string]string
}

// mirrors is containerd's configuration for pulling from each of hosts
// over plain HTTP.
func mirrors(hosts []string) string {
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n    endpoint = [\"http://%s\"]\n", h, h)
	}
	return b.String()
}

func startNode(t testing.TB, cp *controlPlane, o nodeOptions) *node {
	t.Helper()
	dir := filepath.Join(cp.dir, "node")
	n := &node{dir: dir, cp: cp, ctrSocket: filepath.Join(dir, "containerd", "containerd.sock"), netnsAtRun: netnsNames(), before: map[string]map[string]bool{}}
	for _, f := range hostFolders {
		n.before[f] = entries(f)
	}
	for _, d := range []string{"containerd", "cni", "cni-ipam", "kubelet", "manifests"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Registered first, so it runs last: after every process is gone.
	t.Cleanup(n.sweep)

	writeFile(t, filepath.Join(dir, "cni", "10-admitfn.conflist"), fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "admitfn",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": %q,
             "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}`, bridgeName, filepath.Join(dir, "cni-ipam"), podCIDR, nodeIP))

	ctrDir := filepath.Join(dir, "containerd")
	writeFile(t, filepath.Join(ctrDir, "config.toml"), fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # The kubelet asks for oom_score_adj -998 for the sandbox; this machine
  # may not lower it, and runc fails every sandbox without this.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
%s`, filepath.Join(ctrDir, "root"), filepath.Join(ctrDir, "state"), n.ctrSocket, n.ctrSocket+".ttrpc",
		o.PauseImage, filepath.Join(dir, "cni"), mirrors(append([]string{o.Registry}, o.PrivateRegistries...))))
	n.containerd = startProc(t, dir, "containerd", "containerd", "--config", filepath.Join(ctrDir, "config.toml"))
	harness.WaitFor(t, 30*time.Second, "containerd's socket", func() error {
		if n.containerd.exited() {
			t.Fatalf("containerd exited (see %s)", n.containerd.log)
		}
		_, err := os.Stat(n.ctrSocket)
		return err
	})

	for name, manifest := range o.StaticPods {
		writeFile(t, filepath.Join(dir, "manifests", name), manifest)
	}
	kubeletCert, kubeletKey := cp.pki.server(t, "kubelet", nodeIP, nodeName)
	healthz := harness.FreePort(t)
	writeFile(t, filepath.Join(dir, "kubelet", "config.yaml"), fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 and may not lower oom scores or manage QoS
# cgroups; the kubelet refuses cgroup v1 since 1.35 unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://%s
# The kubelet's API on the node's bridge address only; health on loopback.
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
podLogsDir: %s
staticPodPath: %s
fileCheckFrequency: 2s
# Pods ask the cluster's DNS; never the machine's resolver (its search
# domains and servers are not theirs, and they could not reach it).
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %s
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, n.ctrSocket, nodeIP, healthz, kubeletCert, kubeletKey, cp.pki.CAFile, filepath.Join(dir, "logs"), filepath.Join(dir, "manifests"), o.ClusterDNS, writeFile(t, filepath.Join(dir, "resolv.conf"), "")))
	n.kubelet = startProc(t, dir, "kubelet", toolBin("kubelet"),
		"--config", filepath.Join(dir, "kubelet", "config.yaml"),
		"--kubeconfig", cp.clientFor(t, "system:node:"+nodeName, "system:nodes").Kubeconfig,
		"--root-dir", filepath.Join(dir, "kubelet", "root"),
		"--hostname-override", nodeName, "--node-ip", nodeIP, "--v", "1")

	proxyMetrics, proxyHealth := harness.FreePort(t), harness.FreePort(t)
	n.kubeProxy = startProc(t, dir, "kube-proxy", toolBin("kube-proxy"),
		"--kubeconfig", cp.clientFor(t, "system:kube-proxy").Kubeconfig,
		"--hostname-override", nodeName, "--proxy-mode", "iptables", "--cluster-cidr", podCIDR,
		"--nodeport-addresses", nodeIP+"/32",
		"--metrics-bind-address", "127.0.0.1:"+strconv.Itoa(proxyMetrics),
		"--healthz-bind-address", "127.0.0.1:"+strconv.Itoa(proxyHealth),
		// Leave the machine's conntrack limits as they are.
		"--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0", "--conntrack-tcp-timeout-close-wait", "0")

	harness.WaitFor(t, 120*time.Second, "node "+nodeName+" Ready", func() error {
		for _, p := range []*proc{n.containerd, n.kubelet, n.kubeProxy} {
			if p.exited() {
				t.Fatalf("%s exited (see %s)", p.name, p.log)
			}
		}
		no, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range no.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("Ready %s: %s", c.Status, c.Message)
			}
		}
		return fmt.Errorf("no Ready condition yet")
	})
	waitReady(t, n.kubeProxy, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/healthz", proxyHealth), 60*time.Second)
	return n
}

// stop takes the node down while containerd still runs: the kubelet
// first, so it restarts nothing, then every container and sandbox through
// the runtime (which ends the shims), then containerd. It needs no
// apiserver: a test may have stopped that already.
func (n *node) stop(t testing.TB) {
	n.kubeProxy.stop()
	n.kubelet.stop()
	ctr := n.ctr
	for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
		ctr("tasks", "delete", "--force", id)
	}
	for _, id := range strings.Fields(ctr("containers", "ls", "-q")) {
		ctr("containers", "rm", id)
	}
	if left := strings.Fields(ctr("tasks", "ls", "-q")); len(left) > 0 {
		t.Logf("containerd still lists %d tasks after the node stopped", len(left))
	}
	n.containerd.stop()
}

// ctr runs containerd's ctr on the node's Kubernetes namespace and
// returns its output.
func (n *node) ctr(args ...string) string {
	out, _ := exec.Command("ctr", append([]string{"--address", n.ctrSocket, "-n", "k8s.io"}, args...)...).Output()
	return string(out)
}

// killContainers ends a pod's running containers with SIGKILL, as the
// kubelet does when a grace period runs out: the kubelet then finishes
// the pod's termination as usual.
func (n *node) killContainers(p corev1.Pod) {
	for _, cs := range p.Status.ContainerStatuses {
		if id, ok := strings.CutPrefix(cs.ContainerID, "containerd://"); ok && cs.State.Running != nil {
			n.ctr("tasks", "kill", "--signal", "SIGKILL", id)
		}
	}
}

// sweep runs after every process is stopped: it removes what a run cut
// short (a failed start, a killed test) may have left, and what the parts
// write outside the run's folder: shims and the containers under them,
// kube-proxy's and the kubelet's iptables chains, mounts under the node's
// folder, this run's network namespaces, files in hostFolders and the
// veths on the bridge.
func (n *node) sweep() {
	out, _ := exec.Command("pgrep", "-f", "containerd-shim-runc-v2 .*-address "+n.ctrSocket).Output()
	for _, pid := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(pid); err == nil {
			children, _ := exec.Command("pgrep", "-P", pid).Output()
			for _, c := range strings.Fields(string(children)) {
				if cp, err := strconv.Atoi(c); err == nil {
					syscall.Kill(cp, syscall.SIGKILL)
				}
			}
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	// kube-proxy's rules, then the chains the kubelet keeps (it recreates
	// them while it runs, so only now).
	try(toolBin("kube-proxy"), "--cleanup")
	for _, ipt := range []string{"iptables", "ip6tables"} {
		try(ipt, "-w", "-D", "INPUT", "-j", "KUBE-FIREWALL")
		try(ipt, "-w", "-D", "OUTPUT", "-j", "KUBE-FIREWALL")
		try(ipt, "-w", "-F", "KUBE-FIREWALL")
		try(ipt, "-w", "-X", "KUBE-FIREWALL")
		for _, table := range []string{"filter", "nat", "mangle"} {
			try(ipt, "-w", "-t", table, "-X", "KUBE-KUBELET-CANARY")
			try(ipt, "-w", "-t", table, "-X", "KUBE-IPTABLES-HINT")
		}
	}
	for _, m := range mountsUnder(n.dir) {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	for name := range netnsNames() {
		if !n.netnsAtRun[name] && strings.HasPrefix(name, "cni-") {
			p := filepath.Join("/var/run/netns", name)
			syscall.Unmount(p, syscall.MNT_DETACH)
			os.Remove(p)
		}
	}
	for _, f := range hostFolders {
		for name := range entries(f) {
			if !n.before[f][name] {
				os.RemoveAll(filepath.Join(f, name))
			}
		}
	}
	out, _ = exec.Command("ip", "-o", "link", "show", "master", bridgeName).Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			try("ip", "link", "del", strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
}

// mountsUnder lists the mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	return mounts
}

func netnsNames() map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

// writeFile writes content to path and returns path.
func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/admitfn/admitfn/functions/devcert"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// pki is the one CA every party of the test trusts, and the files it made.
type pki struct {
	dir string
	ca  *devcert.CA
	// CAFile is the CA certificate.
	CAFile string
}

func newPKI(t testing.TB, dir string) *pki {
	t.Helper()
	ca, err := devcert.NewCA("admitfn-e2e-ca")
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: dir, ca: ca, CAFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(p.CAFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// server writes a serving pair for the hosts and returns its files.
func (p *pki) server(t testing.TB, name string, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	pair, err := p.ca.Server(hosts...)
	return p.write(t, name, pair, err)
}

// client writes a client pair (CN user, O groups) and returns its files.
func (p *pki) client(t testing.TB, name, user string, groups ...string) (certFile, keyFile string) {
	t.Helper()
	pair, err := p.ca.Client(user, groups...)
	return p.write(t, name, pair, err)
}

func (p *pki) write(t testing.TB, name string, pair devcert.Pair, err error) (certFile, keyFile string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = pair.Write(p.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// keptDir is a scratch folder removed when the test passes and kept, with
// the processes' logs in it, when it fails.
func keptDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "admitfn-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// proc is a child process whose output goes to a log file kept when the
// test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(t testing.TB, dir, name, bin string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, dir, name, nil, bin, args...)
}

// startProcEnv is startProc with variables added to the environment.
func startProcEnv(t testing.TB, dir, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := launch(t, dir, name, env, bin, args...)
	p.stopAtCleanup(t)
	return p
}

// launch starts the process; the caller says which test stops it.
func launch(t testing.TB, dir, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logFile := filepath.Join(dir, name+".log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p
}

// stopAtCleanup stops p when t ends, showing its log's last lines if t
// failed.
func (p *proc) stopAtCleanup(t testing.TB) {
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			tail, _ := exec.Command("tail", "-n", "30", p.log).Output()
			t.Logf("last lines of %s (%s):\n%s", p.name, p.log, tail)
		}
	})
}

// stop sends SIGTERM, then SIGKILL after five seconds.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// controlPlane is etcd and kube-apiserver on loopback.
type controlPlane struct {
	dir       string
	pki       *pki
	URL       string
	AuditLog  string
	Admin     *kubernetes.Clientset
	AdminRest *rest.Config
	apiserver *proc
	// bin and args start the apiserver again (restart).
	bin  string
	args []string
	// restarts counts restarts, naming each run's log.
	restarts int
	// stoppingAt and stoppedAt bound the last restart's stop of the old
	// apiserver: a watch the audit log shows open at stoppingAt was cut by
	// the restart, and one starting after stoppedAt was opened on the new one.
	stoppingAt, stoppedAt time.Time
	// owner is the test that started the control plane: a restart made
	// in one of its subtests lives until it ends, not the subtest.
	owner testing.TB
}

// controlPlaneOptions are the apiserver settings a suite needs.
type controlPlaneOptions struct {
	// AdmissionPlugins are enabled on top of the defaults (which include
	// the validating and mutating webhook plugins).
	AdmissionPlugins []string
	AdmissionConfig  string // file, may be empty
	// Address is where the apiserver listens and what it advertises;
	// 127.0.0.1 when empty. A real node's pods reach it on the node's
	// bridge address (cluster_node_test.go).
	Address string
	// ServiceCIDR is the Service address range (10.0.0.0/24 when empty).
	ServiceCIDR string
	// SANs are more names and addresses for the serving certificate.
	SANs []string
	// Hosts, when set, is the /etc/hosts the apiserver sees (in a mount
	// namespace of its own): how it finds an ingress by the host names in
	// Knative's URLs without changing the machine's resolver.
	Hosts string
}

func startControlPlane(t testing.TB, dir string, p *pki, opts controlPlaneOptions) *controlPlane {
	t.Helper()
	etcdClient, etcdPeer := harness.FreePort(t), harness.FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcd := startProc(t, dir, "etcd", toolBin("etcd"),
		"--name", "e2e", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "e2e="+peerURL, "--unsafe-no-fsync", "--log-level", "warn")
	waitReady(t, etcd, http.DefaultClient, etcdURL+"/health", 30*time.Second)

	address := opts.Address
	if address == "" {
		address = "127.0.0.1"
	}
	serviceCIDR := opts.ServiceCIDR
	if serviceCIDR == "" {
		serviceCIDR = "10.0.0.0/24"
	}
	certFile, keyFile := p.server(t, "apiserver", append([]string{address, "localhost"}, opts.SANs...)...)
	saKey, saPub := serviceAccountKeys(t, dir)
	auditPolicy := filepath.Join(dir, "audit-policy.yaml")
	os.WriteFile(auditPolicy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  resources:\n  - group: \"\"\n    resources: [pods, pods/ephemeralcontainers]\n- level: Metadata\n  verbs: [watch]\n- level: None\n"), 0o644)
	port := harness.FreePort(t)
	cp := &controlPlane{dir: dir, pki: p, URL: fmt.Sprintf("https://%s:%d", address, port), AuditLog: filepath.Join(dir, "audit.log"), owner: t}
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--etcd-prefix=/admitfn-e2e",
		"--bind-address=" + address, "--advertise-address=" + address, "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + certFile, "--tls-private-key-file=" + keyFile,
		"--client-ca-file=" + p.CAFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--audit-policy-file=" + auditPolicy, "--audit-log-path=" + cp.AuditLog,
		"--v=2",
	}
	if address == "127.0.0.1" {
		// The endpoint reconciler refuses loopback addresses, and no
		// in-cluster client needs the kubernetes Service here.
		args = append(args, "--endpoint-reconciler-type=none")
	} else {
		// Logs and exec reach the kubelet by the node's address, never
		// by a name the machine's resolver would be asked for.
		args = append(args, "--kubelet-preferred-address-types=InternalIP")
	}
	cp.bin = toolBin("kube-apiserver")
	if opts.Hosts != "" {
		hosts := filepath.Join(dir, "apiserver-hosts")
		if err := os.WriteFile(hosts, []byte(opts.Hosts), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--mount", "--propagation", "private", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts, cp.bin}, args...)
		cp.bin = "unshare"
	}
	cp.args = args
	cp.apiserver = startProc(t, dir, "kube-apiserver", cp.bin, cp.withAdmission(opts.AdmissionPlugins, opts.AdmissionConfig)...)

	adminCert, adminKey := p.client(t, "admin", "admitfn-e2e-admin", "system:masters")
	cp.AdminRest = &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAFile: p.CAFile, CertFile: adminCert, KeyFile: adminKey},
		QPS:             100, Burst: 200,
		Timeout: 60 * time.Second,
	}
	admin, err := kubernetes.NewForConfig(cp.AdminRest)
	if err != nil {
		t.Fatal(err)
	}
	cp.Admin = admin
	cp.waitReady(t)
	return cp
}

// withAdmission is the apiserver's arguments with the admission plugins
// and configuration file added.
func (cp *controlPlane) withAdmission(plugins []string, config string) []string {
	args := append([]string(nil), cp.args...)
	if len(plugins) > 0 {
		args = append(args, "--enable-admission-plugins="+strings.Join(plugins, ","))
	}
	if config != "" {
		args = append(args, "--admission-control-config-file="+config)
	}
	return args
}

func (cp *controlPlane) waitReady(t testing.TB) {
	t.Helper()
	tlsCfg, err := rest.TLSConfigFor(cp.AdminRest)
	if err != nil {
		t.Fatal(err)
	}
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	waitReady(t, cp.apiserver, probe, cp.URL+"/readyz", 120*time.Second)
}

// restart stops the apiserver and starts it again with these admission
// plugins and configuration, as an operator does to change them; etcd
// keeps the cluster's state.
func (cp *controlPlane) restart(t testing.TB, plugins []string, config string) {
	t.Helper()
	cp.stoppingAt = time.Now()
	cp.apiserver.stop()
	cp.stoppedAt = time.Now()
	cp.restarts++
	cp.apiserver = launch(t, cp.dir, fmt.Sprintf("kube-apiserver-%d", cp.restarts+1), nil, cp.bin, cp.withAdmission(plugins, config)...)
	cp.apiserver.stopAtCleanup(cp.owner)
	cp.waitReady(t)
}

// identity is a user of the control plane: a clientset, and a kubeconfig
// for kubectl.
type identity struct {
	Client     *kubernetes.Clientset
	Kubeconfig string
}

// clientFor makes an identity authenticated by a client certificate for
// user in groups.
func (cp *controlPlane) clientFor(t testing.TB, user string, groups ...string) identity {
	t.Helper()
	name := strings.NewReplacer(":", "_").Replace(user)
	certFile, keyFile := cp.pki.client(t, name, user, groups...)
	cfg := rest.CopyConfig(cp.AdminRest)
	cfg.TLSClientConfig.CertFile, cfg.TLSClientConfig.KeyFile = certFile, keyFile
	id := identity{Kubeconfig: filepath.Join(cp.dir, name+".kubeconfig")}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id.Client = c
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthority: cp.pki.CAFile}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificate: certFile, ClientKey: keyFile}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	kc.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*kc, id.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	return id
}

// kubectl runs the pinned kubectl as id, with stdin, and returns what it
// printed and its error.
func (id identity) kubectl(t testing.TB, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(toolBin("kubectl"), append([]string{"--kubeconfig", id.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	t.Logf("$ kubectl %s\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	return out.String(), errOut.String(), err
}

// waitEstablished waits until a CRD is Established. `kubectl wait
// --for=condition=Established` fails at once, rather than waiting, when it
// looks before the CRD has any status condition.
func (id identity) waitEstablished(t testing.TB, crd string) {
	t.Helper()
	harness.WaitFor(t, 60*time.Second, "CRD "+crd+" Established", func() error {
		out, err := id.get("crd", crd, `{.status.conditions[?(@.type=="Established")].status}`)
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("Established is %q", out)
		}
		return nil
	})
}

// get prints fields of one object by a JSONPath template, quietly: for
// polling, where kubectl's log line per call would drown the test's.
func (id identity) get(args ...string) (string, error) {
	jsonpath := args[len(args)-1]
	out, err := exec.Command(toolBin("kubectl"), append(append([]string{"--kubeconfig", id.Kubeconfig, "get"}, args[:len(args)-1]...), "-o", "jsonpath="+jsonpath)...).Output()
	return string(out), err
}

// namespace creates a namespace with the default ServiceAccount that the
// ServiceAccount admission plugin wants (no controller-manager runs here).
func (cp *controlPlane) namespace(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := cp.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	_, err = cp.Admin.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func serviceAccountKeys(t testing.TB, dir string) (keyFile, pubFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	return keyFile, pubFile
}

// waitReady polls url until it answers 200, and fails at once if the
// process behind it exits.
func waitReady(t testing.TB, p *proc, client *http.Client, url string, timeout time.Duration) {
	t.Helper()
	harness.WaitFor(t, timeout, p.name+" at "+url, func() error {
		if p.exited() {
			t.Fatalf("%s exited (see %s)", p.name, p.log)
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

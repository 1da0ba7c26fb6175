// Package cli tests the admitfn binary as users run it: built from source,
// started as a process, asked over HTTPS, stopped with SIGTERM.
package cli

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/devcert"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
	"github.com/admitfn/admitfn/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Run(m, &binary) }

// process is a running "admitfn serve".
type process struct {
	cmd  *exec.Cmd
	url  string
	done chan error

	mu     sync.Mutex
	stdout strings.Builder
	stderr lockedBuffer
}

// lockedBuffer is an io.Writer safe to read while a process writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// output is what the process printed so far.
func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

var servingLine = regexp.MustCompile(`serving .+ on (https?://\S+) with policy`)

func startServe(t *testing.T, args ...string) *process {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	p := &process{cmd: cmd, done: make(chan error, 1)}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stdout.WriteString(line + "\n")
			p.mu.Unlock()
			if m := servingLine.FindStringSubmatch(line); m != nil {
				urls <- m[1]
			}
		}
	}()
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	select {
	case p.url = <-urls:
	case err := <-p.done:
		t.Fatalf("admitfn serve exited early: %v\n%s", err, p.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("admitfn serve did not report its address\n%s", p.stderr.String())
	}
	return p
}

func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("admitfn serve exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("admitfn serve did not stop on SIGTERM")
	}
}

func ask(t *testing.T, client *http.Client, url string, images ...string) map[string]any {
	t.Helper()
	resp, err := client.Post(url+"/imagepolicy?timeout=30s", "application/json", bytes.NewReader(harness.ImageReview("default", images...)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("status %d, body not JSON: %v", resp.StatusCode, err)
	}
	return out
}

func TestServeSeedScenario(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, "--dev-certs", dir)
	if !strings.HasPrefix(p.url, "https://127.0.0.1:") {
		t.Fatalf("serving on %q, want https on loopback", p.url)
	}
	client := harness.TLSClient(t, filepath.Join(dir, "ca.crt"))
	for _, tc := range []struct {
		image     string
		allowed   bool
		reasonHas string
	}{
		{"nginx", false, `"latest"`},
		{"nginx:1.17.1", true, ""},
	} {
		out := ask(t, client, p.url, tc.image)
		if out["apiVersion"] != "imagepolicy.k8s.io/v1alpha1" || out["kind"] != "ImageReview" {
			t.Errorf("%s: reply type %v %v", tc.image, out["apiVersion"], out["kind"])
		}
		status, _ := out["status"].(map[string]any)
		if status["allowed"] != tc.allowed {
			t.Errorf("%s: allowed = %v, want %v (status %v)", tc.image, status["allowed"], tc.allowed, status)
		}
		if reason, _ := status["reason"].(string); !strings.Contains(reason, tc.reasonHas) {
			t.Errorf("%s: reason %q lacks %q", tc.image, reason, tc.reasonHas)
		}
	}
	if !strings.Contains(p.output(), "certificate-authority: "+filepath.Join(dir, "ca.crt")) {
		t.Errorf("serve did not print how to point the apiserver at it:\n%s", p.output())
	}
	p.stop(t)
	if !strings.Contains(p.output(), "admitfn stopped") {
		t.Errorf("no clean stop reported:\n%s", p.output())
	}
}

func TestServeRequiresClientCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := devcert.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	srvPair, _ := ca.Server("127.0.0.1")
	certFile, keyFile, err := srvPair.Write(dir, "tls")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, "--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", caFile)
	apiserver, _ := ca.Client("kube-apiserver")
	cert, err := tls.X509KeyPair(apiserver.Cert, apiserver.Key)
	if err != nil {
		t.Fatal(err)
	}
	out := ask(t, harness.TLSClient(t, caFile, cert), p.url, "nginx:1.17.1")
	if status, _ := out["status"].(map[string]any); status["allowed"] != true {
		t.Errorf("apiserver's certificate: status %v, want allowed", out["status"])
	}
	resp, err := harness.TLSClient(t, caFile).Post(p.url+"/imagepolicy", "application/json", bytes.NewReader(harness.ImageReview("default", "nginx:1.17.1")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "client certificate") {
		t.Errorf("a client without a certificate: %s %q, want 401 naming the certificate", resp.Status, body)
	}
	// The kubelet probes without one (a static pod's liveness probe).
	if resp, err := harness.TLSClient(t, caFile).Get(p.url + "/health/liveness"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("liveness probe without a certificate: %v %v, want 200", resp, err)
	}
}

func TestServeUsageErrors(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: x\n    nonroot: true\n"), 0o644)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--handlers", "imagepolicy,bogus"}, `unknown handler "bogus"`},
		{[]string{"serve", "--policy", bad}, `unknown field "spec.rules[0].nonroot"`},
		{[]string{"serve", "--tls-cert", "x.crt"}, "--tls-cert and --tls-key go together"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"static-pod"}, "--image is required"},
		{[]string{"static-pod", "--image", "registry.example/admitfn:v1"}, "names no digest"},
		{[]string{"static-pod", "--image", "registry.example/admitfn@sha256:" + strings.Repeat("0", 64), "--host-dir", "admitfn"}, "must be an absolute path"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := exec.Command(binary, append(tc.args, "--listen", "127.0.0.1:0")...)
			if tc.args[0] != "serve" {
				cmd = exec.Command(binary, tc.args...)
			}
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit = %v, want 2; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output %q lacks %q", out, tc.want)
			}
		})
	}
}

func TestServeListensOnPORT(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary, "serve")
	cmd.Env = append(os.Environ(), "PORT=0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`on http://127\.0\.0\.1:\d+ `).MatchString(line) {
		t.Errorf("with PORT=0 the server should take a free port on all interfaces; printed %q", line)
	}
}

func runCheck(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"check"}, args...)...).CombinedOutput()
	if err == nil {
		return 0, string(out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return exit.ExitCode(), string(out)
}

func TestCheckExitCodes(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	digest := reg.Push("app:v1", registrytest.Image(t, nil))
	dir := t.TempDir()
	resolvable := filepath.Join(dir, "resolvable.yaml")
	os.WriteFile(resolvable, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: resolvable}
spec:
  registry: {insecure: [%q]}
  rules:
  - name: resolvable
    resolvable: true
`, reg.Host())), 0o644)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: x\n    mode: loud\n    nonRoot: true\n"), 0o644)

	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"all allowed", []string{"nginx:1.17.1", "registry.corp/app@sha256:" + strings.Repeat("0", 64)}, 0, []string{"allowed nginx:1.17.1"}},
		{"one denied", []string{"nginx:1.17.1", "nginx"}, 1, []string{"allowed nginx:1.17.1", "denied  nginx [no-latest/enforce]"}},
		{"no image", nil, 2, []string{"name at least one image"}},
		{"bad flag", []string{"--nope", "nginx"}, 2, []string{"flag provided but not defined"}},
		{"missing policy file", []string{"--policy", filepath.Join(dir, "none.yaml"), "nginx"}, 2, []string{"none.yaml"}},
		{"invalid policy", []string{"--policy", broken, "nginx"}, 2, []string{`spec.rules[0].mode: "loud"`}},
		{"resolvable tag", []string{"--policy", resolvable, reg.Ref("app", ":v1")}, 0, []string{"allowed " + reg.Ref("app", ":v1") + " " + digest}},
		{"missing tag", []string{"--policy", resolvable, reg.Ref("app", ":v1"), reg.Ref("app", ":v9")}, 1, []string{`denied  ` + reg.Ref("app", ":v9") + ` [resolvable/enforce] tag "v9" was not found`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCheck(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestAdmissionConfigURLSources checks how admission-config gets the
// backend's URL: a bare service URL gains /imagepolicy, --url and --service
// exclude each other, and an unreachable cluster is an error that says so.
// Reading a real Knative Service's status.url is in test/e2e.
func TestAdmissionConfigURLSources(t *testing.T) {
	t.Parallel()
	nowhere := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(nowhere, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--url", "https://image-policy.admitfn.example.com"}, 0, "for https://image-policy.admitfn.example.com/imagepolicy"},
		{[]string{"--url", "https://h.example.com", "--service", "image-policy"}, 2, "--url and --service exclude each other"},
		{[]string{"--url", "https://h.example.com", "--accept-lockout"}, 2, "--accept-lockout goes with --service"},
		{[]string{"--service", "image-policy", "--kubeconfig", nowhere}, 1, "reading Knative Service admitfn/image-policy"},
		{[]string{"--service", "image-policy", "--kubeconfig", nowhere + ".missing"}, 1, "kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"admission-config", "--out", t.TempDir()}, tc.args...)
			out, err := exec.Command(binary, args...).CombinedOutput()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output %q lacks %q", out, tc.want)
			}
		})
	}
}

// TestSIGTERMDrains: on SIGTERM, serve answers readiness with 503 while it
// keeps judging reviews for --drain, then exits; probes see the 503 before
// the listener closes.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	p := startServe(t, "--drain", "1500ms")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	deadline := signalled.Add(5 * time.Second)
	sawNotReady := false
	for time.Now().Before(deadline) && !sawNotReady {
		resp, err := http.Get(p.url + "/health/readiness")
		if err != nil {
			t.Fatalf("readiness during the drain: %v (the listener closed before a probe saw 503)", err)
		}
		resp.Body.Close()
		sawNotReady = resp.StatusCode == http.StatusServiceUnavailable
		time.Sleep(10 * time.Millisecond)
	}
	if !sawNotReady {
		t.Fatal("readiness never answered 503 after SIGTERM")
	}
	if out := ask(t, http.DefaultClient, p.url, "nginx:1.17.1"); out["status"] == nil {
		t.Errorf("a review during the drain got %v, want an answer", out)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
		t.Logf("exited %s after SIGTERM (--drain 1500ms)", time.Since(signalled).Round(10*time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not exit after the drain")
	}
}

// TestCertificateRenewalDuringReviews renews serve's certificate and key
// on disk while clients keep sending ImageReviews over new connections,
// as the apiserver would: every review is answered, and new connections
// get the renewed certificate without a restart.
func TestCertificateRenewalDuringReviews(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := devcert.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := ca.Server("127.0.0.1")
	certFile, keyFile, err := first.Write(dir, "tls")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, ca.PEM, 0o644)
	p := startServe(t, "--tls-cert", certFile, "--tls-key", keyFile, "--reload-interval", "20ms")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)

	var mu sync.Mutex
	serials := map[string]int{}
	var failures []string
	review := func() {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: tr}).Post(p.url+"/imagepolicy", "application/json", bytes.NewReader(harness.ImageReview("default", "nginx:1.17.1")))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failures = append(failures, err.Error())
			return
		}
		defer resp.Body.Close()
		var out struct{ Status struct{ Allowed bool } }
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil || !out.Status.Allowed {
			failures = append(failures, fmt.Sprintf("status %d", resp.StatusCode))
			return
		}
		serials[resp.TLS.PeerCertificates[0].SerialNumber.String()]++
	}
	renewed, _ := ca.Server("127.0.0.1")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 { // bounded
				select {
				case <-stop:
					return
				default:
				}
				review()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	// A renewal tool replaces each file by renaming a new one over it.
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, renewed.Cert}, {keyFile, renewed.Key}} {
		os.WriteFile(f.path+".new", f.data, 0o600)
		os.Rename(f.path+".new", f.path)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(serials)
		mu.Unlock()
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	total := 0
	for _, n := range serials {
		total += n
	}
	t.Logf("%d reviews answered, by serving certificate serial: %v; %d failed", total, serials, len(failures))
	if len(failures) > 0 {
		t.Errorf("%d reviews failed during the renewal; first: %s", len(failures), failures[0])
	}
	if len(serials) != 2 {
		t.Errorf("reviews saw %d certificates, want the first and the renewed one", len(serials))
	}
}

// TestCheckWithPullCredentials: check judges a private image with the
// credentials the cluster's kubelet would use — a pull Secret manifest, a
// node's docker config — and only those, against registries that ask
// for basic authentication and for the bearer-token realm flow.
func TestCheckWithPullCredentials(t *testing.T) {
	t.Parallel()
	creds := registrytest.Credentials{Username: "puller", Password: "s3cret-pull-token"}
	for _, flow := range []struct {
		name string
		opt  registrytest.Option
	}{{"basic", registrytest.WithBasicAuth(creds)}, {"token", registrytest.WithTokenAuth(creds)}} {
		t.Run(flow.name, func(t *testing.T) {
			t.Parallel()
			reg := registrytest.New(t, flow.opt)
			digest := reg.Push("private/app:v1", registrytest.Image(t, nil))
			dir := t.TempDir()
			policyFile := filepath.Join(dir, "policy.yaml")
			os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: non-root
    nonRoot: true
`, reg.Host())), 0o644)
			secret := func(name, host, user, pass string) string {
				auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
				f := filepath.Join(dir, name+".yaml")
				os.WriteFile(f, []byte(fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %s, namespace: team-a}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{"auths":{%q:{"auth":%q}}}'
`, name, host, auth)), 0o600)
				return f
			}
			dockerDir := filepath.Join(dir, "docker")
			os.MkdirAll(dockerDir, 0o700)
			os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, reg.Host(), creds.Username, creds.Password)), 0o600)
			opaque := filepath.Join(dir, "opaque.yaml")
			os.WriteFile(opaque, []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: opaque}\ntype: Opaque\nstringData: {token: x}\n"), 0o600)
			img := reg.Ref("private/app", ":v1")
			// A kubelet credential provider plugin (a script: exec'd as
			// any binary) answering the node's credentials, and one that
			// fails.
			plugins := filepath.Join(dir, "plugins")
			os.MkdirAll(plugins, 0o755)
			os.WriteFile(filepath.Join(plugins, "node-credentials"), fmt.Appendf(nil, `#!/bin/sh
cat >/dev/null
echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","auth":{%q:{"username":%q,"password":%q}}}'
`, reg.Host(), creds.Username, creds.Password), 0o755)
			os.WriteFile(filepath.Join(plugins, "broken"), []byte("#!/bin/sh\necho 'no instance profile' >&2\nexit 1\n"), 0o755)
			providerConfig := func(name string) string {
				f := filepath.Join(dir, name+"-providers.yaml")
				os.WriteFile(f, fmt.Appendf(nil, `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- {name: %s, apiVersion: credentialprovider.kubelet.k8s.io/v1, matchImages: [%q], defaultCacheDuration: 1m}
`, name, reg.Host()), 0o644)
				return f
			}

			tests := []struct {
				name string
				args []string
				code int
				want string
			}{
				{"no credentials", nil, 1, "refused admitfn access"},
				{"the pull Secret", []string{"--pull-secret", secret("regcred", reg.Host(), creds.Username, creds.Password)}, 0, "allowed " + img + " " + digest},
				{"a wrong password", []string{"--pull-secret", secret("wrong", reg.Host(), creds.Username, "nope")}, 1, "refused admitfn access"},
				{"a Secret for a look-alike host", []string{"--pull-secret", secret("elsewhere", "evil.io/"+reg.Host(), creds.Username, creds.Password)}, 1, "refused admitfn access"},
				{"a Secret for another registry, then the right docker config", []string{"--pull-secret", secret("wrong2", "other.corp", "x", "y"), "--docker-config", dockerDir}, 0, "allowed " + img},
				// The kubelet tries each matching credential in turn.
				{"a wrong Secret for the registry, then the right docker config", []string{"--pull-secret", secret("wrong3", reg.Host(), creds.Username, "nope"), "--docker-config", dockerDir}, 0, "allowed " + img},
				{"a wrong Secret, then the right one", []string{"--pull-secret", secret("wrong4", reg.Host()+"/private", creds.Username, "nope"), "--pull-secret", secret("right2", reg.Host(), creds.Username, creds.Password)}, 0, "allowed " + img},
				{"the node's docker config", []string{"--docker-config", dockerDir}, 0, "allowed " + img},
				{"a Secret of another type", []string{"--pull-secret", opaque}, 2, `is of type "Opaque"`},
				{"the node's credential provider plugin", []string{"--image-credential-provider-config", providerConfig("node-credentials"), "--image-credential-provider-bin-dir", plugins}, 0, "allowed " + img},
				{"a plugin that fails", []string{"--image-credential-provider-config", providerConfig("broken"), "--image-credential-provider-bin-dir", plugins}, 1, "credential provider broken for " + reg.Host() + "/private/app"},
				{"a wrong Secret, then the node's plugin", []string{"--pull-secret", secret("wrong5", reg.Host(), creds.Username, "nope"), "--image-credential-provider-config", providerConfig("node-credentials"), "--image-credential-provider-bin-dir", plugins}, 0, "allowed " + img},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					code, out := runCheck(t, append(append([]string{"--policy", policyFile}, tc.args...), img)...)
					if code != tc.code || !strings.Contains(out, tc.want) {
						t.Errorf("exit %d, want %d with %q; output:\n%s", code, tc.code, tc.want, out)
					}
					if strings.Contains(out, creds.Password) {
						t.Errorf("the output holds the password:\n%s", out)
					}
				})
			}
		})
	}
}

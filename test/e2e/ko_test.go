//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// knativeService is the part of a Knative Service the test reads back.
type knativeService struct {
	Metadata struct{ Name string }
	Spec     struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Image string
					Args  []string
				}
			}
		}
	}
}

// TestKoApply deploys config/ the way the README does, `ko apply -f
// config/` with ko.yaml, against the local apiserver with Knative Serving's
// CRDs, images pushed to a loopback registry; then pulls the image back and
// runs the binary inside it with the Service's own arguments.
func TestKoApply(t *testing.T) {
	ko := os.Getenv("KO")
	if ko == "" {
		t.Fatal("KO names no ko binary: run `make e2e`, which builds the pinned one")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := keptDir(t)
	p := newPKI(t, dir)
	cp := startControlPlane(t, dir, p, controlPlaneOptions{})
	deployer := cp.clientFor(t, "deployer", "system:masters")

	if _, _, err := deployer.kubectl(t, "", "apply", "-f", knativeCRDs(t)); err != nil {
		t.Fatalf("applying Knative Serving's CRDs: %v", err)
	}
	deployer.waitEstablished(t, "services.serving.knative.dev")

	// The base image stands in for distroless/static: one small layer, a
	// non-root user, both platforms ko.yaml builds for.
	reg := registrytest.New(t)
	reg.PushIndex("base/static:nonroot", []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, nil)

	cmd := exec.Command(ko, "apply", "-f", "config/")
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"KO_CONFIG_PATH=ko.yaml",
		"KO_DOCKER_REPO="+reg.Host()+"/admitfn",
		"KO_DEFAULTBASEIMAGE="+reg.Ref("base/static", ":nonroot"),
		"KUBECONFIG="+deployer.Kubeconfig,
		"PATH="+filepath.Dir(toolBin("kubectl"))+string(os.PathListSeparator)+os.Getenv("PATH"))
	started := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("$ KO_CONFIG_PATH=ko.yaml KO_DOCKER_REPO=%s/admitfn ko apply -f config/  (%s)\n%s", reg.Host(), time.Since(started).Round(time.Second), out)
	if err != nil {
		t.Fatalf("ko apply: %v", err)
	}

	stdout, _, err := deployer.kubectl(t, "", "get", "services.serving.knative.dev", "-n", "admitfn", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Items []knativeService }
	if err := json.Unmarshal([]byte(stdout), &list); err != nil {
		t.Fatal(err)
	}
	services := map[string]knativeService{}
	for _, s := range list.Items {
		services[s.Metadata.Name] = s
	}
	var image string
	for _, want := range []string{"image-policy", "validating"} {
		s, ok := services[want]
		if !ok || len(s.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("Knative Service admitfn/%s: %+v", want, s)
		}
		img := s.Spec.Template.Spec.Containers[0].Image
		if !strings.HasPrefix(img, reg.Host()+"/admitfn/") || !strings.Contains(img, "@sha256:") {
			t.Errorf("Service %s runs %q, want an image pinned by digest in %s/admitfn", want, img, reg.Host())
		}
		if image == "" {
			image = img
		} else if img != image {
			t.Errorf("Service %s runs %q, image-policy runs %q: want one image", want, img, image)
		}
	}

	t.Run("no webhook is registered by config/ alone", func(t *testing.T) {
		ctx := t.Context()
		v, err := cp.Admin.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := cp.Admin.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Items)+len(m.Items) != 0 {
			t.Errorf("%d validating and %d mutating webhook configurations after ko apply -f config/; want none until the Services answer", len(v.Items), len(m.Items))
		}
	})

	bin := pullBinary(t, dir, image)

	t.Run("the binary carries the version ko stamped", func(t *testing.T) {
		short, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
		if err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatal(err)
		}
		if v := strings.TrimSpace(string(got)); !strings.HasSuffix(v, "-"+strings.TrimSpace(string(short))) {
			t.Errorf("admitfn version = %q, want <tag>-%s", v, bytes.TrimSpace(short))
		}
	})

	// The caller token the Services mount, created as README says.
	token := randomToken(t)
	if _, _, err := deployer.kubectl(t, "", "create", "secret", "generic", "admitfn-callers", "-n", "admitfn", "--from-literal=token="+token); err != nil {
		t.Fatal(err)
	}

	t.Run("the image's binary answers ImageReviews with the Service's arguments", func(t *testing.T) {
		args := mountedArgs(t, deployer, dir, services["image-policy"].Spec.Template.Spec.Containers[0].Args)
		// Process start to first answered review, median of five starts:
		// what a scale-to-zero pod adds to the first admission request
		// once its image is on the node.
		var url string
		var firsts []time.Duration
		for range 5 {
			port := harness.FreePort(t)
			url = fmt.Sprintf("http://127.0.0.1:%d/imagepolicy", port)
			first, proc := startAndReview(t, dir, bin, url, token, append(args, fmt.Sprintf("--listen=127.0.0.1:%d", port)))
			firsts = append(firsts, first)
			if len(firsts) < 5 {
				proc.stop()
			}
		}
		sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
		t.Logf("process start to first answered ImageReview, 5 starts: median %s (min %s, max %s)",
			firsts[2].Round(100*time.Microsecond), firsts[0].Round(100*time.Microsecond), firsts[4].Round(100*time.Microsecond))
		for image, want := range map[string]string{
			"nginx:1.17.1": `"allowed":true`,
			"nginx":        `rule \"no-latest\"`,
		} {
			got, err := imageReview(url, token, image)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(got, want) {
				t.Errorf("ImageReview of %s: status %s, want it to contain %s", image, got, want)
			}
		}
		if got, err := imageReview(url, "", "nginx:1.17.1"); err == nil || !strings.Contains(err.Error(), "status 401") {
			t.Errorf("ImageReview without the caller token: %s, %v; want 401", got, err)
		}
	})

	t.Run("admission-config --service reads status.url", func(t *testing.T) {
		run := func(extra ...string) (string, error) {
			args := append([]string{"admission-config", "--service", "image-policy",
				"--kubeconfig", deployer.Kubeconfig, "--out", filepath.Join(dir, "admission")}, extra...)
			out, err := exec.Command(admitfnBin, args...).CombinedOutput()
			t.Logf("$ admitfn admission-config --service image-policy %s\n%s", strings.Join(extra, " "), out)
			return string(out), err
		}
		setStatus := func(status string) {
			t.Helper()
			if _, _, err := deployer.kubectl(t, "", "patch", "services.serving.knative.dev", "image-policy", "-n", "admitfn",
				"--subresource=status", "--type=merge", "-p", `{"status":`+status+`}`); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := run(); err == nil || !strings.Contains(out, "has no URL yet (no Ready condition yet)") {
			t.Errorf("without status.url: err %v, want an error saying the Service has no URL yet", err)
		}
		setStatus(`{"url":"http://image-policy.admitfn.example.com","conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-11-23T00:00:00Z"}]}`)
		if out, err := run(); err == nil || !strings.Contains(out, "over https only") {
			t.Errorf("with an http status.url: err %v, want an error asking for https", err)
		}
		setStatus(`{"url":"https://image-policy.admitfn.example.com"}`)
		if _, err := run(); err != nil {
			t.Fatal(err)
		}
		kc, err := clientcmd.LoadFromFile(filepath.Join(dir, "admission", "kubeconfig.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var servers []string
		for _, c := range kc.Clusters {
			servers = append(servers, c.Server)
		}
		if diff := cmp.Diff([]string{"https://image-policy.admitfn.example.com/imagepolicy"}, servers); diff != "" {
			t.Errorf("kubeconfig servers (-want +got):\n%s", diff)
		}
	})

	t.Run("webhook-config --service writes registrations the apiserver accepts", func(t *testing.T) {
		if _, _, err := deployer.kubectl(t, "", "patch", "services.serving.knative.dev", "validating", "-n", "admitfn",
			"--subresource=status", "--type=merge", "-p", `{"status":{"url":"https://validating.admitfn.example.org"}}`); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(admitfnBin, "webhook-config", "--service", "validating", "--kubeconfig", deployer.Kubeconfig,
			"--ca-file", p.CAFile, "--mutating").Output()
		if err != nil {
			t.Fatalf("admitfn webhook-config: %v", err)
		}
		for _, want := range []string{"url: https://validating.admitfn.example.org/validate", "url: https://validating.admitfn.example.org/mutate"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q", want)
			}
		}
		// A server-side dry run: the apiserver validates the registrations
		// whole, and nothing is registered (no backend answers here).
		stdout, _, err := deployer.kubectl(t, string(out), "apply", "--dry-run=server", "-f", "-")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"validatingwebhookconfiguration.admissionregistration.k8s.io/admitfn-validating created (server dry run)",
			"mutatingwebhookconfiguration.admissionregistration.k8s.io/admitfn-mutating created (server dry run)"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("kubectl apply --dry-run=server printed %q, want %q", stdout, want)
			}
		}
	})

	t.Run("admission-config --service refuses fail-closed for a Service that can scale to zero", func(t *testing.T) {
		out := filepath.Join(dir, "lockout")
		run := func(extra ...string) (string, error) {
			args := append([]string{"admission-config", "--service", "image-policy",
				"--kubeconfig", deployer.Kubeconfig, "--out", out}, extra...)
			b, err := exec.Command(admitfnBin, args...).CombinedOutput()
			t.Logf("$ admitfn admission-config --service image-policy %s\n%s", strings.Join(extra, " "), b)
			return string(b), err
		}
		annotate := func(patch string) {
			t.Helper()
			if _, _, err := deployer.kubectl(t, "", "patch", "services.serving.knative.dev", "image-policy", "-n", "admitfn",
				"--type=merge", "-p", `{"spec":{"template":{"metadata":{"annotations":`+patch+`}}}}`); err != nil {
				t.Fatal(err)
			}
		}
		written := func() bool {
			_, err := os.Stat(filepath.Join(out, "admission_config.yaml"))
			return err == nil
		}
		// As shipped (min-scale 2): written, with the ingress warning.
		if got, err := run(); err != nil || !strings.Contains(got, "through Knative's ingress") {
			t.Errorf("shipped Service: err %v, want success with a warning about the ingress path", err)
		}
		os.RemoveAll(out)
		annotate(`{"autoscaling.knative.dev/min-scale":"0"}`)
		got, err := run()
		if err == nil || !strings.Contains(got, "can scale to zero") || !strings.Contains(got, "locks the cluster") || !strings.Contains(got, "admitfn static-pod") {
			t.Errorf("min-scale 0, fail closed: err %v, want a refusal that explains the circle and the way out", err)
		}
		if written() {
			t.Error("a refused configuration was written")
		}
		if got, err := run("--accept-lockout"); err != nil || !strings.Contains(got, "warning: --accept-lockout") || !written() {
			t.Errorf("--accept-lockout: err %v, want the files written with a warning", err)
		}
		os.RemoveAll(out)
		if got, err := run("--default-allow"); err != nil || strings.Contains(got, "warning") || !written() {
			t.Errorf("--default-allow at min-scale 0: err %v, want the files written without a warning", err)
		}
		annotate(`{"autoscaling.knative.dev/min-scale":null,"autoscaling.knative.dev/minScale":"3"}`)
		if _, err := run(); err != nil {
			t.Errorf("the older minScale spelling at 3: err %v, want success", err)
		}
		annotate(`{"autoscaling.knative.dev/minScale":"many"}`)
		if got, err := run(); err == nil || !strings.Contains(got, `"many" is not a count of pods`) {
			t.Errorf("minScale=many: err %v, want an error naming the value", err)
		}
	})
}

// startAndReview starts bin and asks url for an ImageReview until one is
// answered; it returns how long that took from the start of the process.
func startAndReview(t *testing.T, dir, bin, url, token string, args []string) (time.Duration, *proc) {
	t.Helper()
	began := time.Now()
	p := startProc(t, dir, "admitfn-from-image", bin, args...)
	deadline := began.Add(10 * time.Second)
	for {
		_, err := imageReview(url, token, "nginx:1.17.1")
		if err == nil {
			return time.Since(began), p
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("no ImageReview answered by admitfn from the image: %v (see %s)", err, p.log)
		}
		time.Sleep(time.Millisecond)
	}
}

// knativeCRDs is config/core/300-resources of the knative.dev/serving
// module that test/knative pins.
func knativeCRDs(t *testing.T) string {
	t.Helper()
	return filepath.Join(moduleDir(t, filepath.Join("..", "knative"), "knative.dev/serving"), "config", "core", "300-resources")
}

// moduleDir is where `go mod download` put module (as required by the
// module in folder from).
func moduleDir(t testing.TB, from, module string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = from
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", module, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s printed %s: %v", module, out, err)
	}
	return mod.Dir
}

// pullBinary pulls ref for this machine's platform, checks how ko laid it
// out, reports its size and writes the admitfn binary from it to dir.
func pullBinary(t *testing.T, dir, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("%s is not an index: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	var mine v1.Hash
	for _, m := range im.Manifests {
		if m.Platform == nil {
			continue
		}
		platforms = append(platforms, m.Platform.OS+"/"+m.Platform.Architecture)
		if m.Platform.OS == runtime.GOOS && m.Platform.Architecture == runtime.GOARCH {
			mine = m.Digest
		}
	}
	sort.Strings(platforms)
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, platforms); diff != "" {
		t.Errorf("platforms of %s (-want +got):\n%s", ref, diff)
	}
	img, err := idx.Image(mine)
	if err != nil {
		t.Fatalf("no %s/%s image in %s: %v", runtime.GOOS, runtime.GOARCH, ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/ko-app/admitfn"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if u := cf.Config.User; u == "" || u == "0" || u == "root" {
		t.Errorf("the image runs as user %q; the Services require a non-root image user", u)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	base := m.Layers[0].Size // the test's base layer; ko's layers follow it
	t.Logf("image %s/%s: %d layers, %.2f MiB compressed in all, %.2f MiB of it admitfn's (base layer %d bytes)",
		runtime.GOOS, runtime.GOARCH, len(m.Layers), mib(total), mib(total-base-m.Config.Size), base)

	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatal("the image has no /ko-app/admitfn")
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "/") != "ko-app/admitfn" {
			continue
		}
		bin := filepath.Join(dir, "admitfn-from-image")
		f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("/ko-app/admitfn: %.2f MiB", mib(n))
		return bin
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// mountedArgs rewrites the Service's arguments to read the ConfigMaps and
// the Secret the Service mounts (as the apiserver holds them after ko
// apply) from files under dir, the way kubelet would project them.
func mountedArgs(t *testing.T, id identity, dir string, args []string) []string {
	t.Helper()
	mounts := map[string]string{"/etc/admitfn/policy": "configmap/admitfn-policy", "/etc/admitfn/logging": "configmap/admitfn-logging", "/etc/admitfn/callers": "secret/admitfn-callers"}
	for mount, object := range mounts {
		stdout, _, err := id.kubectl(t, "", "get", object, "-n", "admitfn", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var obj struct{ Data map[string]string }
		if err := json.Unmarshal([]byte(stdout), &obj); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(object, "secret/") {
			for k, v := range obj.Data {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					t.Fatal(err)
				}
				obj.Data[k] = string(b)
			}
		}
		local := filepath.Join(dir, mount)
		if err := os.MkdirAll(local, 0o755); err != nil {
			t.Fatal(err)
		}
		for k, v := range obj.Data {
			if err := os.WriteFile(filepath.Join(local, k), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "=/etc/admitfn/", "="+filepath.Join(dir, "etc", "admitfn")+"/")
	}
	return out
}

// imageReview posts an ImageReview for image with the caller token (none
// when empty) and returns the status it got.
func imageReview(url, token, image string) (string, error) {
	body := fmt.Sprintf(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":%q}],"namespace":"default"}}`, image)
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, data)
	}
	var review struct{ Status json.RawMessage }
	if err := json.Unmarshal(data, &review); err != nil {
		return "", err
	}
	return string(review.Status), nil
}

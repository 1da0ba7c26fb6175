//go:build e2e

package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/registrytest"
)

// cosign runs the pinned cosign CLI (make tools builds it; COSIGN names
// it) in dir, offline: no transparency log, no password.
func cosign(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return pinnedCLI(t, "cosign", "COSIGN", dir, []string{"COSIGN_PASSWORD=", "COSIGN_YES=true", "HOME=" + dir}, args...)
}

// pinnedCLI runs name, the pinned binary the environment variable
// envVar names (make e2e builds it), in dir with env added, logging the
// command and its output.
func pinnedCLI(t *testing.T, name, envVar, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	bin := os.Getenv(envVar)
	if bin == "" {
		t.Fatalf("%s names no %s binary: run `make e2e`, which builds the pinned one", envVar, name)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("$ %s %s\n%s", name, strings.Join(args, " "), out)
	return string(out), err
}

// cosignKeys makes a key pair (cosign.key, cosign.pub) in each folder.
func cosignKeys(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		os.MkdirAll(d, 0o755)
		if _, err := cosign(t, d, "generate-key-pair"); err != nil {
			t.Fatal(err)
		}
	}
}

// policyKey is dir's cosign.pub indented to sit under `key: |` in the
// policies below.
func policyKey(t *testing.T, dir string) string {
	t.Helper()
	pub, err := os.ReadFile(filepath.Join(dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return indentKey(pub)
}

// indentKey is a PEM key indented to sit under `key: |` in the policies
// below.
func indentKey(pem []byte) string {
	return strings.ReplaceAll(strings.TrimSpace(string(pem)), "\n", "\n          ")
}

// keyPolicy writes to file a policy whose one rule wants every image of
// host signed by the PEM public key pub.
func keyPolicy(t *testing.T, file, host string, pub []byte) string {
	t.Helper()
	if err := os.WriteFile(file, fmt.Appendf(nil, `apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: signed
    signatures:
      authorities:
      - name: k
        key: |
          %s
`, host, indentKey(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// emptyTrustedRoot writes a trusted root that holds nothing: key-based
// verification needs none, and without one cosign fetches the public one.
func emptyTrustedRoot(t *testing.T, dir string) string {
	t.Helper()
	f := filepath.Join(dir, "trusted_root.json")
	if err := os.WriteFile(f, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// admitfnCheck runs admitfn check on image: admitted (exit 0) or denied
// (exit 1), and what it printed; anything else fails the test.
func admitfnCheck(t *testing.T, policyFile, image string) (bool, string) {
	t.Helper()
	out, err := exec.Command(admitfnBin, "check", "--policy", policyFile, image).CombinedOutput()
	t.Logf("$ admitfn check %s\n%s", image, out)
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 1) {
		t.Fatalf("admitfn check: %v", err)
	}
	return err == nil, string(out)
}

// TestCosignSignatures signs images in a loopback registry with the real
// cosign CLI (key-based, no transparency log) and checks, image by image,
// that admitfn's signatures rule and `cosign verify` agree.
func TestCosignSignatures(t *testing.T) {
	dir := t.TempDir()
	reg := registrytest.New(t)
	signed := reg.Push("app:v1", registrytest.Image(t, nil))
	reg.Push("app:v2", registrytest.Image(t, nil)) // never signed
	byOther := reg.Push("app:v3", registrytest.Image(t, nil))
	tamperedDigest := reg.Push("app:v4", registrytest.Image(t, nil))
	moved := reg.Push("app:v5", registrytest.Image(t, nil))
	bundled := reg.Push("app:v6", registrytest.Image(t, nil))
	attestedOnly := reg.Push("app:v7", registrytest.Image(t, nil))
	attestedBundleOnly := reg.Push("app:v8", registrytest.Image(t, nil))
	cosignKeys(t, dir, filepath.Join(dir, "other"))
	sign := func(keyDir, digest string, extra ...string) {
		t.Helper()
		args := append([]string{"sign", "--key", filepath.Join(keyDir, "cosign.key"), "--tlog-upload=false"}, extra...)
		if _, err := cosign(t, dir, append(args, reg.Ref("app", "@"+digest))...); err != nil {
			t.Fatal(err)
		}
	}
	sign(dir, signed)
	sign(filepath.Join(dir, "other"), byOther)
	sign(dir, tamperedDigest)
	sign(dir, moved)
	// Newer cosign's format: a sigstore bundle attached as a referrer
	// (go-containerregistry's registry has no referrers API, so cosign
	// uses the sha256-<hex> tag fallback).
	sign(dir, bundled, "--new-bundle-format")
	// Attested by the same key, never signed: an attestation is not a
	// signature, in the .att tag (a DSSE envelope) or as a bundle.
	pred := filepath.Join(dir, "predicate.json")
	os.WriteFile(pred, []byte(`{"builder":{"id":"https://ci.corp.example/runner-1"},"buildType":"https://ci.corp.example/build@v1"}`), 0o644)
	for digest, extra := range map[string][]string{attestedOnly: nil, attestedBundleOnly: {"--new-bundle-format"}} {
		args := append([]string{"attest", "--key", filepath.Join(dir, "cosign.key"), "--type", "slsaprovenance", "--predicate", pred, "--tlog-upload=false"}, extra...)
		if _, err := cosign(t, dir, append(args, reg.Ref("app", "@"+digest))...); err != nil {
			t.Fatal(err)
		}
	}
	// The moved tag now names an image nobody signed.
	reg.Push("app:v5", registrytest.Image(t, nil))
	// Tamper with the stored signature: flip bytes of its annotation.
	tamperSignature(t, reg.Ref("app", ":"+strings.Replace(tamperedDigest, ":", "-", 1)+".sig"))

	trustedRoot := emptyTrustedRoot(t, dir)
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: signed}
spec:
  registry: {insecure: [%q]}
  rules:
  - name: signed
    images: ["%s/**"]
    signatures:
      authorities:
      - name: release
        key: |
          %s
`, reg.Host(), reg.Host(), policyKey(t, dir))), 0o644)

	t.Run("through kube-apiserver: ImagePolicyWebhook and the validating webhook", func(t *testing.T) {
		env := newWebhookEnv(t, "yaml")
		env.startBackend(t, policyFile)
		registerWebhooks(t, env.cp, fmt.Sprintf("https://127.0.0.1:%d", env.backendPort))
		ctx := t.Context()
		if _, err := env.cp.Admin.CoreV1().Pods(ns).Create(ctx, pod("signed", []string{reg.Ref("app", "@"+signed)}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Errorf("signed image: %v, want created", err)
		}
		_, err := env.cp.Admin.CoreV1().Pods(ns).Create(ctx, pod("unsigned", []string{reg.Ref("app", ":v2")}, nil, nil), metav1.CreateOptions{})
		wantForbidden(t, err, "image policy webhook backend denied one or more images", `violates rule "signed"`, "has no signature")
		_, err = env.cp.Admin.AppsV1().Deployments(ns).Create(ctx, deploymentOf("unsigned", reg.Ref("app", ":v3")), metav1.CreateOptions{})
		wantDenied(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`, `signed, but not by key "release"`)
		if _, err := env.cp.Admin.AppsV1().Deployments(ns).Create(ctx, deploymentOf("signed", reg.Ref("app", ":v1")), metav1.CreateOptions{}); err != nil {
			t.Errorf("Deployment of the signed image: %v, want created", err)
		}
	})

	// cosignLenient marks where cosign verify passes and admitfn,
	// deliberately, does not.
	for _, tc := range []struct {
		name, image   string
		admitted      bool
		reason        string
		cosignLenient bool
	}{
		{"signed, by digest", reg.Ref("app", "@"+signed), true, "", false},
		{"signed, by the tag resolving to it", reg.Ref("app", ":v1"), true, "", false},
		{"unsigned", reg.Ref("app", ":v2"), false, "has no signature", false},
		{"signed by another key", reg.Ref("app", ":v3"), false, `signed, but not by key "release"`, false},
		{"signature tampered with", reg.Ref("app", ":v4"), false, `signed, but not by key "release"`, false},
		{"tag moved after signing", reg.Ref("app", ":v5"), false, "has no signature", false},
		{"signed, as a bundle among its referrers", reg.Ref("app", ":v6"), true, "", false},
		{"attested, never signed (.att)", reg.Ref("app", ":v7"), false, "has no signature", false},
		// cosign v2.6.5 verify --new-bundle-format takes any bundle the
		// key signed about the digest for a signature, an SLSA
		// provenance attestation too; admitfn wants cosign's signing
		// statement (https://sigstore.dev/cosign/sign/v1): whoever
		// attests a build or a scan with a key has not signed the image
		// off for running.
		{"attested as a bundle, never signed", reg.Ref("app", ":v8"), false, "has no signature", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admitted, out := admitfnCheck(t, policyFile, tc.image)
			if admitted != tc.admitted || !strings.Contains(out, tc.reason) {
				t.Errorf("admitfn admitted=%v, want %v with %q", admitted, tc.admitted, tc.reason)
			}
			args := []string{"verify", "--key", filepath.Join(dir, "cosign.pub"), "--insecure-ignore-tlog=true", "--trusted-root", trustedRoot}
			if strings.Contains(tc.name, "bundle") {
				args = append(args, "--new-bundle-format")
			}
			_, verr := cosign(t, dir, append(args, tc.image)...)
			if (verr == nil) != (tc.admitted || tc.cosignLenient) {
				t.Errorf("cosign verify says %v, admitfn admitted=%v, lenient=%v: not as known", verr, admitted, tc.cosignLenient)
			}
		})
	}
}

// TestCosignBundlesThroughReferrersAPI signs with cosign's bundle format
// against a registry that serves the OCI referrers API, so the bundle is
// found through the API rather than the tag fallback.
func TestCosignBundlesThroughReferrersAPI(t *testing.T) {
	dir := t.TempDir()
	reg := registrytest.New(t, registrytest.WithReferrers())
	signed := reg.Push("app:v1", registrytest.Image(t, nil))
	reg.Push("app:v2", registrytest.Image(t, nil)) // never signed
	cosignKeys(t, dir)
	if _, err := cosign(t, dir, "sign", "--key", filepath.Join(dir, "cosign.key"), "--tlog-upload=false", "--new-bundle-format",
		reg.Ref("app", "@"+signed)); err != nil {
		t.Fatal(err)
	}
	// With the API served, cosign writes no fallback tag: what admitfn
	// finds below it found through the API.
	fallback := reg.Ref("app", ":"+strings.Replace(signed, ":", "-", 1))
	if _, err := remote.Head(mustRef(t, fallback)); err == nil {
		t.Fatalf("cosign wrote the fallback tag %s: the referrers API path would go untested", fallback)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: signed
    signatures:
      authorities:
      - name: release
        key: |
          %s
`, reg.Host(), policyKey(t, dir))), 0o644)
	for image, want := range map[string]bool{reg.Ref("app", ":v1"): true, reg.Ref("app", ":v2"): false} {
		if admitted, _ := admitfnCheck(t, policyFile, image); admitted != want {
			t.Errorf("%s admitted=%v, want %v", image, admitted, want)
		}
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tamperSignature rewrites the signature annotation of the first layer of
// a cosign signature manifest in place, keeping the payload.
func tamperSignature(t *testing.T, sigRef string) {
	t.Helper()
	ref := mustRef(t, sigRef)
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	const key = "dev.cosignproject.cosign/signature"
	sig, err := base64.StdEncoding.DecodeString(m.Layers[0].Annotations[key])
	if err != nil || len(sig) < 16 {
		t.Fatalf("signature annotation: %v", err)
	}
	sig[10] ^= 0xff
	m.Layers[0].Annotations[key] = base64.StdEncoding.EncodeToString(sig)
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(ref, rawManifest{raw, desc.MediaType}); err != nil {
		t.Fatal(err)
	}
}

// rawManifest is a manifest written as given.
type rawManifest struct {
	raw       []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

// TestCosignAttestations attests images with the real cosign CLI (SLSA
// provenance, key-based, offline) and checks admitfn's attestations rule
// against `cosign verify-attestation` where they can agree (cosign checks
// no conditions), and the conditions on their own.
func TestCosignAttestations(t *testing.T) {
	dir := t.TempDir()
	reg := registrytest.New(t)
	attested := reg.Push("app:v1", registrytest.Image(t, nil))
	reg.Push("app:v2", registrytest.Image(t, nil)) // never attested
	wrongBuilder := reg.Push("app:v3", registrytest.Image(t, nil))
	byOther := reg.Push("app:v4", registrytest.Image(t, nil))
	cosignKeys(t, dir, filepath.Join(dir, "other"))
	attest := func(keyDir, digest, builder string) {
		t.Helper()
		pred := filepath.Join(dir, "predicate.json")
		os.WriteFile(pred, []byte(fmt.Sprintf(`{"builder":{"id":%q},"buildType":"https://ci.corp.example/build@v1"}`, builder)), 0o644)
		if _, err := cosign(t, dir, "attest", "--key", filepath.Join(keyDir, "cosign.key"), "--type", "slsaprovenance",
			"--predicate", pred, "--tlog-upload=false", reg.Ref("app", "@"+digest)); err != nil {
			t.Fatal(err)
		}
	}
	attest(dir, attested, "https://ci.corp.example/runner-1")
	attest(dir, wrongBuilder, "https://laptop.example/me")
	attest(filepath.Join(dir, "other"), byOther, "https://ci.corp.example/runner-1")

	trustedRoot := emptyTrustedRoot(t, dir)
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: attested}
spec:
  registry: {insecure: [%q]}
  rules:
  - name: provenance
    images: ["%s/**"]
    attestations:
      predicateType: https://slsa.dev/provenance/v0.2
      authorities:
      - name: release
        key: |
          %s
      conditions:
      - {path: predicate.builder.id, matches: "https://ci.corp.example/*"}
`, reg.Host(), reg.Host(), policyKey(t, dir))), 0o644)

	for _, tc := range []struct {
		name, image    string
		admitted       bool
		cosignVerifies bool
		reason         string
	}{
		{"attested by the release key from CI", reg.Ref("app", "@"+attested), true, true, ""},
		{"not attested", reg.Ref("app", ":v2"), false, false, "has no attestation of type"},
		{"attested from a laptop", reg.Ref("app", ":v3"), false, true, `predicate.builder.id is "https://laptop.example/me"`},
		{"attested by another key", reg.Ref("app", ":v4"), false, false, `not signed by key "release"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if admitted, out := admitfnCheck(t, policyFile, tc.image); admitted != tc.admitted || !strings.Contains(out, tc.reason) {
				t.Errorf("admitfn admitted=%v, want %v with %q", admitted, tc.admitted, tc.reason)
			}
			_, verr := cosign(t, dir, "verify-attestation", "--key", filepath.Join(dir, "cosign.pub"), "--type", "slsaprovenance",
				"--insecure-ignore-tlog=true", "--trusted-root", trustedRoot, tc.image)
			if (verr == nil) != tc.cosignVerifies {
				t.Errorf("cosign verify-attestation: %v, want it to verify: %v", verr, tc.cosignVerifies)
			}
		})
	}
}

// TestCosignSignatureEncodings holds admitfn to `cosign verify --key` on
// signature encodings cosign does not write but meets: an ECDSA signature
// as IEEE P1363 (r‖s), what some HSMs and KMSs return, which cosign
// accepts; and RSA-PSS, which `cosign verify --key` refuses. The
// signatures are stored as cosign stores them (registrytest.Sign), by keys
// the test makes; the real cosign CLI is the oracle.
func TestCosignSignatureEncodings(t *testing.T) {
	dir := t.TempDir()
	reg := registrytest.New(t)
	trustedRoot := emptyTrustedRoot(t, dir)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p1363 := func(p []byte) []byte {
		h := sha256.Sum256(p)
		r, s, err := ecdsa.Sign(rand.Reader, ec, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	tests := []struct {
		name   string
		key    crypto.PublicKey
		sign   func([]byte) []byte
		verify bool
	}{
		{"ECDSA, ASN.1 (as cosign signs)", &ec.PublicKey, func(p []byte) []byte {
			h := sha256.Sum256(p)
			s, _ := ecdsa.SignASN1(rand.Reader, ec, h[:])
			return s
		}, true},
		{"ECDSA, IEEE P1363 r‖s", &ec.PublicKey, p1363, true},
		{"ECDSA, r‖s cut short", &ec.PublicKey, func(p []byte) []byte { return p1363(p)[:62] }, false},
		{"RSA, PKCS #1 v1.5", &rk.PublicKey, func(p []byte) []byte {
			h := sha256.Sum256(p)
			s, _ := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, h[:])
			return s
		}, true},
		{"RSA-PSS", &rk.PublicKey, func(p []byte) []byte {
			h := sha256.Sum256(p)
			s, _ := rsa.SignPSS(rand.Reader, rk, crypto.SHA256, h[:], nil)
			return s
		}, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			repo := fmt.Sprintf("enc%d", i)
			digest := reg.Push(repo+":v1", registrytest.Image(t, nil))
			reg.Sign(repo, digest, tc.sign)
			der, err := x509.MarshalPKIXPublicKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			pubFile := filepath.Join(dir, repo+".pub")
			os.WriteFile(pubFile, pub, 0o644)
			policyFile := keyPolicy(t, filepath.Join(dir, repo+".yaml"), reg.Host(), pub)
			image := reg.Ref(repo, "@"+digest)
			_, verr := cosign(t, dir, "verify", "--key", pubFile, "--insecure-ignore-tlog=true", "--trusted-root", trustedRoot, image)
			admitted, _ := admitfnCheck(t, policyFile, image)
			if (verr == nil) != tc.verify {
				t.Errorf("cosign verify = %v, want verified %v: the case is not what it says", verr, tc.verify)
			}
			if admitted != (verr == nil) {
				t.Errorf("admitfn admitted = %v, cosign verify = %v: they disagree", admitted, verr)
			}
		})
	}
}

// TestCosignEd25519: an Ed25519 key imported into cosign signs in
// Ed25519ph (pre-hashed, cosign's default for such keys), which `cosign
// verify --key` (pure Ed25519) does not verify; nor does admitfn. Both
// verify a pure Ed25519 signature stored as cosign stores signatures.
func TestCosignEd25519(t *testing.T) {
	dir := t.TempDir()
	reg := registrytest.New(t)
	trustedRoot := emptyTrustedRoot(t, dir)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ed25519.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if _, err := cosign(t, dir, "import-key-pair", "--key", "ed25519.pem", "--output-key-prefix", "ed"); err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	policyFile := keyPolicy(t, filepath.Join(dir, "policy.yaml"), reg.Host(), pubPEM)

	bySign := reg.Push("by-cosign:v1", registrytest.Image(t, nil))
	if _, err := cosign(t, dir, "sign", "--key", "ed.key", "--tlog-upload=false", reg.Ref("by-cosign", "@"+bySign)); err != nil {
		t.Fatal(err)
	}
	pure := reg.Push("pure:v1", registrytest.Image(t, nil))
	reg.Sign("pure", pure, func(p []byte) []byte { return ed25519.Sign(priv, p) })
	for _, tc := range []struct {
		name, image string
		verifies    bool
	}{
		{"signed by cosign sign (Ed25519ph)", reg.Ref("by-cosign", "@"+bySign), false},
		{"a pure Ed25519 signature", reg.Ref("pure", "@"+pure), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, verr := cosign(t, dir, "verify", "--key", "ed.pub", "--insecure-ignore-tlog=true", "--trusted-root", trustedRoot, tc.image)
			admitted, _ := admitfnCheck(t, policyFile, tc.image)
			if (verr == nil) != tc.verifies {
				t.Errorf("cosign verify = %v, want verified %v: the case is not what it says", verr, tc.verifies)
			}
			if admitted != (verr == nil) {
				t.Errorf("admitfn admitted = %v, cosign verify = %v: they disagree", admitted, verr)
			}
		})
	}
}

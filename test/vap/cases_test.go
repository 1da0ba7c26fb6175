package vap

import (
	"math/rand/v2"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
)

const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// policies are the documents the generated policies are held to the
// engine on: the seeds' rule, and one that uses every field a
// ValidatingAdmissionPolicy can carry.
var policies = map[string]string{
	// Only the reference check denies here: which references the
	// kubelet and admitfn read alike, alone.
	"references-only": `
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: refs}
spec:
  rules:
  - name: nothing-here
    mode: audit
    images: ["never.example/**"]
    requireDigest: true
`,
	"seed-001": `
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: seed}
spec:
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
`,
	"every-field": `
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: every}
spec:
  exemptNamespaces: [kube-system, "tmp-?"]
  breakGlass:
    annotation: break-glass.image-policy.k8s.io/reason
    namespaces: ["team-*"]
  rules:
  - name: tags
    tags: {denyLatest: true, denyUntagged: true, deny: ["*-rc*", "[0-9]*.x"], allow: ["v*", "1.*", "[0-9][0-9]", "latest"]}
    excludeImages: ["registry.corp/tools/**"]
  - name: sources
    registries: {allow: ["registry.corp", "*.gcr.io", "localhost:5000", "[::1]", "index.docker.io"], deny: ["evil.gcr.io"]}
    repositories: {allow: ["registry.corp/**", "*.gcr.io/*/app", "nginx", "library/*", "localhost:5000/**", "**/base"], deny: ["registry.corp/secret/**", "**/debug"]}
  - name: pinned
    namespaces: ["prod-*"]
    exemptNamespaces: ["prod-sandbox"]
    requireDigest: true
  - name: warn-docker-hub
    mode: warn
    images: ["index.docker.io/**"]
    tags: {deny: ["1.*"]}
  - name: audit-pins
    mode: audit
    requireDigest: true
    images: ["registry.corp/**"]
  - name: no-lb
    serviceTypes: {deny: [LoadBalancer, NodePort]}
    exemptNamespaces: [ingress]
  - name: signed
    signatures:
      authorities:
      - name: k
        key: KEY
    namespaces: ["prod-*", "team-*"]
    images: ["registry.corp/**", "nginx"]
`,
}

// references are the corpus: what normalization hides (Docker Hub's
// aliases, library/, ports, case, IPv6, digests with tags) and what the
// kubelet refuses.
var references = []string{
	"nginx", "nginx:latest", "nginx:1.17.1", "nginx:v2", "nginx:1.2-rc1", "nginx:3.x", "nginx:12", "nginx@" + dig, "nginx:1.25@" + dig,
	"nginx:latest@" + dig, "library/nginx:1.0", "docker.io/library/nginx:1.0", "docker.io/nginx:1.0", "index.docker.io/nginx:v1",
	"DOCKER.IO/nginx:1.0", "docker.io:443/nginx:1.0", "registry-1.docker.io/library/nginx:1.0", "registry-1.docker.io/nginx:1.0",
	"registry.hub.docker.com/library/busybox:1.36", "bitnami/redis:7", "bitnami/debug:1", "team/base:v1",
	"registry.corp/team/app:v1", "registry.corp:443/team/app:v1", "REGISTRY.CORP/team/app:v1", "registry.corp:5000/team/app:v1",
	"registry.corp/secret/app:v1", "registry.corp/tools/kit:latest", "registry.corp/tools/kit", "registry.corp/team/debug:v1",
	"evil.io/registry.corp/app:v1", "registry.corp.evil.io/app:v1", "us.gcr.io/proj/app:v3", "evil.gcr.io/proj/app:v3",
	"us.gcr.io/proj/other:v3", "gcr.io/proj/app:v3", "localhost:5000/app:v1", "localhost/app:v1", "localhost:5000/a/b/c/base:v1",
	"[::1]/app:v1", "[::1]:443/app:v1", "[::1]:5000/app:v1", "[FE80::1]:5000/app:v1", "[::ffff:102:304]/app:v1", "[zz]/app:v1", "[1:2:3]/app:v1",
	"Foo/bar:v1", "a", "a:1", "nginx:", "nginx@", "nginx:@" + dig, "nginx@sha256:0123", "nginx@SHA256:" + strings.Repeat("a", 64),
	"nginx@sha512:" + strings.Repeat("a", 128), "nginx@sha384:" + strings.Repeat("b", 96), "nginx@md5:" + strings.Repeat("a", 32),
	strings.Repeat("a", 64), strings.Repeat("a", 64) + ":v1", "nginx:" + strings.Repeat("t", 128), "nginx:" + strings.Repeat("t", 129),
	"nginx:.hidden", "nginx:-x", "x/" + strings.Repeat("a", 246), "x/" + strings.Repeat("a", 247), strings.Repeat("a", 248),
	strings.Repeat("a", 247) + ":v1", strings.Repeat("a", 248) + ":v1", "x/" + strings.Repeat("a", 253) + ":v1", "x/" + strings.Repeat("a", 254) + ":v1",
	"UPPER", "a b", " nginx", "nginx/", "/nginx", "a//b", "ngiñx:1", "a__b/c--d/e.f:v1", "a___b:v1", "a..b:v1",
	"registry.corp/team/app:v1@" + dig, "registry.corp/team/app@" + dig + "@" + dig, "host:5000:6000/app:v1", "my-registry:5000/app:v1",
	"my_registry.io/app:v1", "-bad.io/app:v1", "registry.corp./app:v1", "1.2.3.4/app:v1", "1.2.3.4:80/app:v1",
}

// namespaces cover every scope above.
var namespaces = []string{"default", "kube-system", "tmp-1", "tmp-12", "team-a", "prod-1", "prod-sandbox", "ingress"}

func podRequest(ns string, images []string, annotations map[string]any) request {
	var containers []any
	for i, img := range images {
		containers = append(containers, map[string]any{"name": "c" + string(rune('a'+i)), "image": img})
	}
	meta := map[string]any{"name": "p", "namespace": ns}
	if annotations != nil {
		meta["annotations"] = annotations
	}
	return request{
		gvk: schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, gvr: schema.GroupVersionResource{Version: "v1", Resource: "pods"},
		op: admission.Create, namespace: ns, name: "p",
		object: map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": map[string]any{"containers": containers}},
	}
}

// TestGeneratedPoliciesDecideAsTheEngine runs every reference of the
// corpus, in every namespace, through each policy's generated
// ValidatingAdmissionPolicies (evaluated by the apiserver's own
// libraries) and through the engine, and wants the same verdict and the
// same words from both.
func TestGeneratedPoliciesDecideAsTheEngine(t *testing.T) {
	for name, doc := range policies {
		t.Run(name, func(t *testing.T) {
			p, compiled := generate(t, doc)
			denied, total := 0, 0
			for _, ns := range namespaces {
				for _, ref := range references {
					if compare(t, p, compiled, podRequest(ns, []string{ref}, nil)) {
						denied++
					}
					total++
				}
			}
			// Both outcomes must occur, or the comparison proves little.
			if denied == 0 || denied == total {
				t.Fatalf("%d of %d requests denied: the corpus does not exercise the policy", denied, total)
			}
			t.Logf("%d requests, %d denied, no disagreement", total, denied)
		})
	}
}

// TestGeneratedPoliciesOnWorkloads holds the policies to the engine on
// every kind and place an image can be: templates of the built-in kinds,
// init and ephemeral containers, image volumes, the ephemeralcontainers
// subresource, UPDATEs that keep or change images and annotations,
// break-glass, several violations in one request, Services.
func TestGeneratedPoliciesOnWorkloads(t *testing.T) {
	p, compiled := generate(t, policies["every-field"])
	reqs := workloadRequests()
	denied := 0
	for _, r := range reqs {
		if compare(t, p, compiled, r) {
			denied++
		}
	}
	if denied == 0 || denied == len(reqs) {
		t.Fatalf("%d of %d requests denied: the cases do not exercise the policy", denied, len(reqs))
	}
	t.Logf("%d requests, %d denied, no disagreement", len(reqs), denied)
}

// TestGeneratedPoliciesOnFuzzedReferences assembles references from the
// pieces parsers disagree on and compares them as the corpus is compared.
func TestGeneratedPoliciesOnFuzzedReferences(t *testing.T) {
	hosts := []string{"", "", "docker.io/", "index.docker.io/", "DOCKER.IO/", "registry-1.docker.io/", "registry.corp/", "registry.corp:443/",
		"Registry.Corp/", "localhost/", "localhost:5000/", "[::1]/", "[::1]:443/", "us.gcr.io/", "evil.gcr.io/", "a-b.c/", "a_b.c/", "1.2.3.4:5/", "x:/", "[::1/"}
	paths := []string{"nginx", "library/nginx", "team/app", "team/debug", "a", "A", "a.b", "a..b", "a__b", "a___b", "a-b", "-a", "a/", "tools/kit", "secret/app", "proj/app", "x/base", "a/b/c/d"}
	tags := []string{"", "", ":latest", ":v1", ":1.0", ":1.2-rc1", ":3.x", ":12", ":", ":_x", ":.x", ":V1", ":a:b"}
	digests := []string{"", "", "@" + dig, "@sha256:abc", "@" + strings.ToUpper(dig), "@sha512:" + strings.Repeat("f", 128)}
	rng := rand.New(rand.NewPCG(26, 5793))
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	for name, doc := range policies {
		t.Run(name, func(t *testing.T) {
			p, compiled := generate(t, doc)
			const n = 1500
			denied := 0
			for i := 0; i < n; i++ {
				ref := pick(hosts) + pick(paths) + pick(tags) + pick(digests)
				if compare(t, p, compiled, podRequest(pick(namespaces), []string{ref}, nil)) {
					denied++
				}
			}
			if denied == 0 || denied == n {
				t.Fatalf("%d of %d denied", denied, n)
			}
			t.Logf("%d fuzzed references, %d denied, no disagreement", n, denied)
		})
	}
}

// workloadRequests are the requests of TestGeneratedPoliciesOnWorkloads.
func workloadRequests() []request {
	spec := func(images ...string) map[string]any {
		s := map[string]any{"containers": []any{map[string]any{"name": "a", "image": images[0]}}}
		if len(images) > 1 {
			s["initContainers"] = []any{map[string]any{"name": "i", "image": images[1], "securityContext": map[string]any{"runAsUser": 1000}}}
		}
		if len(images) > 2 {
			s["ephemeralContainers"] = []any{map[string]any{"name": "e", "image": images[2]}}
		}
		if len(images) > 3 {
			s["volumes"] = []any{map[string]any{"name": "cfg", "configMap": map[string]any{"name": "x"}}, map[string]any{"name": "v", "image": map[string]any{"reference": images[3]}}}
		}
		return s
	}
	tmpl := func(ann map[string]any, images ...string) map[string]any {
		m := map[string]any{"labels": map[string]any{"app": "x"}}
		if ann != nil {
			m["annotations"] = ann
		}
		return map[string]any{"metadata": m, "spec": spec(images...)}
	}
	workload := func(group, kind, resource, ns string, object map[string]any) request {
		version := "v1"
		object["apiVersion"] = strings.TrimPrefix(group+"/"+version, "/")
		object["kind"] = kind
		object["metadata"] = map[string]any{"name": "w", "namespace": ns}
		return request{gvk: schema.GroupVersionKind{Group: group, Version: version, Kind: kind}, gvr: schema.GroupVersionResource{Group: group, Version: version, Resource: resource},
			op: admission.Create, namespace: ns, name: "w", object: object}
	}
	bg := map[string]any{"break-glass.image-policy.k8s.io/reason": "INC-123"}
	blank := map[string]any{"break-glass.image-policy.k8s.io/reason": " \t\u00a0\u2003"}
	sets := [][]string{
		{"nginx:1.17.1"}, {"nginx"}, {"registry.corp/team/app:v1", "nginx:latest"},
		{"registry.corp/team/app:v1", "registry.corp/team/app:v1", "evil.io/x:v1", "bitnami/debug:1"},
		{"Foo/bar", "nginx:1.0", "nginx:1.2-rc1", "registry.corp/secret/app:v1"},
		{"registry.corp/team/app@" + dig, "us.gcr.io/proj/app:v3@" + dig, "localhost:5000/app@" + dig, "[::1]/app:v1@" + dig},
	}
	var reqs []request
	for _, ns := range []string{"default", "team-a", "prod-1", "kube-system"} {
		for _, images := range sets {
			for _, ann := range []map[string]any{nil, bg, blank} {
				reqs = append(reqs,
					workload("apps", "Deployment", "deployments", ns, map[string]any{"spec": map[string]any{"template": tmpl(ann, images...)}}),
					workload("batch", "CronJob", "cronjobs", ns, map[string]any{"spec": map[string]any{"jobTemplate": map[string]any{"spec": map[string]any{"template": tmpl(ann, images...)}}}}),
					workload("", "PodTemplate", "podtemplates", ns, map[string]any{"template": tmpl(ann, images...)}),
					workload("serving.knative.dev", "Service", "services", ns, map[string]any{"spec": map[string]any{"template": tmpl(ann, images...)}}),
				)
				pod := workload("", "Pod", "pods", ns, tmpl(ann, images...))
				pod.object["metadata"] = tmpl(ann, images...)["metadata"]
				reqs = append(reqs, pod)
				// UPDATEs: the same pod again (unchanged images are not
				// judged again), with the first image changed, with the
				// annotations changed, and the ephemeralcontainers
				// subresource.
				for _, change := range []string{"same", "image", "annotations", "ephemeral"} {
					old := workload("", "Pod", "pods", ns, tmpl(ann, images...))
					old.object["metadata"] = tmpl(ann, images...)["metadata"]
					upd := workload("", "Pod", "pods", ns, tmpl(ann, images...))
					upd.object["metadata"] = tmpl(ann, images...)["metadata"]
					switch change {
					case "image":
						old.object["spec"].(map[string]any)["containers"] = []any{map[string]any{"name": "a", "image": "registry.corp/team/app:v0"}}
					case "annotations":
						old.object["metadata"] = map[string]any{"annotations": map[string]any{"other": "x"}}
					case "ephemeral":
						upd.subresource = "ephemeralcontainers"
					}
					upd.op, upd.old = admission.Update, old.object
					reqs = append(reqs, upd)
				}
			}
		}
		for _, typ := range []string{"ClusterIP", "NodePort", "LoadBalancer"} {
			reqs = append(reqs, workload("", "Service", "services", ns, map[string]any{"spec": map[string]any{"type": typ}}))
		}
	}
	reqs = append(reqs, workload("", "Service", "services", "ingress", map[string]any{"spec": map[string]any{"type": "LoadBalancer"}}))
	// Many bad images: the reason spells out five and counts the rest.
	many := []string{"nginx", "nginx:latest", "evil.io/a:v1", "evil.io/b:v1", "evil.io/c:v1", "evil.io/d:v1", "evil.io/e:v1", "nginx:2.0"}
	reqs = append(reqs, podRequest("default", many, nil))
	return reqs
}

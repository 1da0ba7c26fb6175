package vap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"

	admitfnadmission "github.com/admitfn/admitfn/functions/admission"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/vap"
)

// compiled is a generated policy as the apiserver's ValidatingAdmissionPolicy
// plugin compiles it (its compilePolicy, which is unexported: the same
// calls on the same exported pieces).
type compiled struct {
	name string
	v    validating.Validator
}

func compile(t testing.TB, p admissionregistrationv1.ValidatingAdmissionPolicy) compiled {
	t.Helper()
	env := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	compiler, err := cel.NewCompositedCompiler(env)
	if err != nil {
		t.Fatal(err)
	}
	optional := cel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: true}
	var vars []cel.NamedExpressionAccessor
	for _, v := range p.Spec.Variables {
		vars = append(vars, &validating.Variable{Name: v.Name, Expression: v.Expression})
	}
	compiler.CompileAndStoreVariables(vars, optional, environment.StoredExpressions)
	var conds, messages []cel.ExpressionAccessor
	for _, v := range p.Spec.Validations {
		conds = append(conds, &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason})
		messages = append(messages, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
	}
	// A compile error of any expression shows as an error decision; the
	// generated policy must have none. Names are checked as the API
	// does: a CEL identifier that is not a reserved word.
	for _, v := range p.Spec.Variables {
		if !celIdentifier.MatchString(v.Name) || celReserved[v.Name] {
			t.Fatalf("%s: variable name %q is not a CEL identifier the API accepts", p.Name, v.Name)
		}
		if res := compiler.CompileCELExpression(&validating.Variable{Name: v.Name, Expression: v.Expression}, optional, environment.StoredExpressions); res.Error != nil {
			t.Fatalf("%s: variable %s does not compile: %v", p.Name, v.Name, res.Error)
		}
	}
	var matcher matchconditions.Matcher
	if len(p.Spec.MatchConditions) > 0 {
		// The API refuses a policy whose match conditions read
		// variables: compile them as its validation does, without.
		plain, err := cel.NewCompositedCompiler(env)
		if err != nil {
			t.Fatal(err)
		}
		for i := range p.Spec.MatchConditions {
			c := (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i])
			if res := plain.CompileCELExpression(c, optional, environment.StoredExpressions); res.Error != nil {
				t.Fatalf("%s: match condition %s does not compile as the API validates it: %v", p.Name, c.Name, res.Error)
			}
		}
		var accessors []cel.ExpressionAccessor
		for i := range p.Spec.MatchConditions {
			accessors = append(accessors, (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i]))
		}
		matcher = matchconditions.NewMatcher(compiler.CompileCondition(accessors, optional, environment.StoredExpressions), p.Spec.FailurePolicy, "policy", "validate", p.Name)
	}
	return compiled{p.Name, validating.NewValidator(
		compiler.CompileCondition(conds, optional, environment.StoredExpressions), matcher,
		compiler.CompileCondition(nil, optional, environment.StoredExpressions),
		compiler.CompileCondition(messages, cel.OptionalVariableDeclarations{}, environment.StoredExpressions),
		p.Spec.FailurePolicy, nil)}
}

// celIdentifier and celReserved are the CEL spec's identifiers and the
// words it reserves, which the API refuses as variable names.
var (
	celIdentifier = regexp.MustCompile(`^[_a-zA-Z][_a-zA-Z0-9]*$`)
	celReserved   = map[string]bool{
		"true": true, "false": true, "null": true, "in": true, "as": true, "break": true, "const": true, "continue": true, "else": true,
		"for": true, "function": true, "if": true, "import": true, "let": true, "loop": true, "package": true, "namespace": true,
		"return": true, "var": true, "void": true, "while": true,
	}
)

// request is one admission request, as both sides see it.
type request struct {
	gvk         schema.GroupVersionKind
	gvr         schema.GroupVersionResource
	subresource string
	op          admission.Operation
	namespace   string
	name        string
	object, old map[string]any
	// user and groups are who asks (alice, no groups, when empty).
	user   string
	groups []string
}

// attributes are r as the admission plugins see it: an absent object or
// old object stays a nil interface, not a typed nil.
func (r request) attributes() *admission.VersionedAttributes {
	var obj, old runtime.Object
	if r.object != nil {
		obj = &unstructured.Unstructured{Object: r.object}
	}
	if r.old != nil {
		old = &unstructured.Unstructured{Object: r.old}
	}
	va := &admission.VersionedAttributes{
		Attributes:    admission.NewAttributesRecord(obj, old, r.gvk, r.namespace, r.name, r.gvr, r.subresource, r.op, nil, false, r.userInfo()),
		VersionedKind: r.gvk,
	}
	if obj != nil {
		va.VersionedObject = admission.NewLazyObject(obj)
	}
	if old != nil {
		va.VersionedOldObject = admission.NewLazyObject(old)
	}
	return va
}

func (r request) userInfo() *user.DefaultInfo {
	if r.user == "" {
		return &user.DefaultInfo{Name: "alice"}
	}
	return &user.DefaultInfo{Name: r.user, Groups: r.groups}
}

// verdict is what one generated policy says: whether it fails, and its
// message.
func (c compiled) verdict(t testing.TB, r request) (bool, string) {
	t.Helper()
	va := r.attributes()
	res := c.v.Validate(context.Background(), r.gvr, va, nil, nil, celconfig.RuntimeCELCostBudget, nil)
	for _, d := range res.Decisions {
		if d.Evaluation == validating.EvalError {
			t.Fatalf("%s: evaluation error: %s", c.name, d.Message)
		}
		if d.Action == validating.ActionDeny {
			return true, d.Message
		}
	}
	return false, ""
}

// engine is what admitfn's webhook decides for r: the request read by
// admission.Read, judged by the engine without registry facts.
func engine(t testing.TB, p *policy.Policy, r request) policy.Decision {
	t.Helper()
	raw, err := json.Marshal(r.object)
	if err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{
		Kind:        metav1.GroupVersionKind{Group: r.gvk.Group, Version: r.gvk.Version, Kind: r.gvk.Kind},
		Resource:    metav1.GroupVersionResource{Group: r.gvr.Group, Version: r.gvr.Version, Resource: r.gvr.Resource},
		SubResource: r.subresource,
		Operation:   admissionv1.Operation(r.op),
		Namespace:   r.namespace,
		Name:        r.name,
	}
	u := r.userInfo()
	req.UserInfo.Username, req.UserInfo.Groups = u.Name, u.Groups
	if r.object != nil {
		req.Object.Raw = raw
	}
	if r.old != nil {
		if req.OldObject.Raw, err = json.Marshal(r.old); err != nil {
			t.Fatal(err)
		}
	}
	facts, err := admitfnadmission.Read(req, p.Workloads)
	if err != nil {
		t.Fatalf("admission.Read: %v", err)
	}
	return p.Evaluate(facts.Request, nil, time.Unix(0, 0))
}

// compare holds every generated policy to the engine on r; it returns
// whether the engine denied, for the caller's count.
func compare(t testing.TB, p *policy.Policy, policies map[policy.Mode]compiled, r request) bool {
	t.Helper()
	d := engine(t, p, r)
	// The image-reference problem is the parser's own error, which CEL
	// words once for all; the rest must be word for word.
	badRef := false
	for _, v := range d.Violations {
		badRef = badRef || v.Rule == "image-reference"
	}
	for _, mode := range []policy.Mode{policy.Enforce, policy.Warn, policy.Audit} {
		c, ok := policies[mode]
		var want []string
		for _, v := range d.Violations {
			if v.Mode != mode {
				continue
			}
			if mode == policy.Enforce {
				want = append(want, v.String())
				continue
			}
			subject := v.Image
			if subject == "" {
				subject = v.Field
			}
			want = append(want, fmt.Sprintf("admitfn rule %q: %s: %s", v.Rule, subject, v.Problem))
		}
		wantFail := len(want) > 0
		wantMsg := strings.Join(want, "; ")
		if mode == policy.Enforce {
			wantFail, wantMsg = !d.Allowed, d.Reason()
		}
		if !ok {
			if wantFail {
				t.Errorf("%s: the engine finds %s violations (%s), but no %s policy was generated", describe(r), mode, wantMsg, mode)
			}
			continue
		}
		gotFail, gotMsg := c.verdict(t, r)
		if gotFail != wantFail {
			t.Errorf("%s: %s policy fails=%t, engine %t (%s | %s)", describe(r), mode, gotFail, wantFail, gotMsg, wantMsg)
			continue
		}
		if gotFail && !badRef && len(wantMsg) <= 5*1024 && gotMsg != wantMsg {
			t.Errorf("%s: %s message differs:\n got: %s\nwant: %s", describe(r), mode, gotMsg, wantMsg)
		}
	}
	return !d.Allowed
}

func describe(r request) string {
	b, _ := json.Marshal(r.object)
	return fmt.Sprintf("%s %s %s/%s in %q: %s", r.op, r.gvk.Kind, r.gvr.Resource, r.subresource, r.namespace, b)
}

func generate(t testing.TB, doc string) (*policy.Policy, map[policy.Mode]compiled) {
	t.Helper()
	d := loadDocument(t, doc)
	if _, err := policy.Compile(d); err != nil {
		t.Fatal(err)
	}
	out, err := vap.Generate(d, vap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The generated policies answer for the rules they took; the engine
	// is asked with those rules alone.
	moved := d
	moved.Spec.Rules = nil
	for i, pl := range out.Placements {
		if pl.Policy != "" {
			moved.Spec.Rules = append(moved.Spec.Rules, d.Spec.Rules[i])
		}
	}
	p, err := policy.Compile(moved)
	if err != nil {
		t.Fatal(err)
	}
	policies := map[policy.Mode]compiled{}
	for i, vp := range out.Policies {
		mode := map[admissionregistrationv1.ValidationAction]policy.Mode{
			admissionregistrationv1.Deny: policy.Enforce, admissionregistrationv1.Warn: policy.Warn, admissionregistrationv1.Audit: policy.Audit,
		}[out.Bindings[i].Spec.ValidationActions[0]]
		policies[mode] = compile(t, vp)
	}
	return p, policies
}

// loadDocument reads doc, with a key made here for its signed-images
// rule (a rule that stays with the webhook; the policy must compile).
func loadDocument(t testing.TB, doc string) policy.Document {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, _ := json.Marshal(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	doc = strings.Replace(doc, "KEY", string(pemKey), 1)
	d, err := policy.ReadDocument([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

package vap

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/cel/environment"

	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/vap"
)

// TestWebhookConditionsPassWhatTheWebhookDecides: with the generated
// policies in place, the webhook's match condition may skip a request
// only when the rules that stay with the webhook have nothing to say on
// it. Those rules are asked through the engine without registry facts,
// where a rule in scope records "image facts were not fetched" (or fails
// open): any such word, in any mode, means the webhook must be called.
func TestWebhookConditionsPassWhatTheWebhookDecides(t *testing.T) {
	d := loadDocument(t, policies["every-field"])
	out, err := vap.Generate(d, vap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stays := d
	stays.Spec.Rules = nil
	for i, pl := range out.Placements {
		if pl.Policy == "" {
			stays.Spec.Rules = append(stays.Spec.Rules, d.Spec.Rules[i])
		}
	}
	p, err := policy.Compile(stays)
	if err != nil {
		t.Fatal(err)
	}
	conds, err := vap.WebhookConditions(d)
	if err != nil {
		t.Fatal(err)
	}
	matcher := compileMatcher(t, conds)

	reqs := workloadRequests()
	for _, ns := range namespaces {
		for _, ref := range references {
			reqs = append(reqs, podRequest(ns, []string{ref}, nil))
		}
	}
	called, skipped := 0, 0
	for _, r := range reqs {
		dec := engine(t, p, r)
		// A reference the kubelet would read otherwise is refused by the
		// generated enforce policy already.
		needed := len(dec.FailedOpen) > 0
		for _, v := range dec.Violations {
			needed = needed || v.Rule != "image-reference"
		}
		matches := matcher(t, r)
		if needed && !matches {
			t.Errorf("%s: the match condition skips the webhook, which would say %q", describe(r), dec.Reason())
		}
		if matches {
			called++
		} else {
			skipped++
		}
	}
	// The condition must save calls, or it proves nothing here.
	if skipped == 0 {
		t.Fatalf("the match condition skipped none of %d requests", len(reqs))
	}
	t.Logf("%d requests: the webhook is called for %d, skipped for %d, never where it had something to say", len(reqs), called, skipped)
}

// compileMatcher compiles match conditions as the webhook plugin does.
func compileMatcher(t testing.TB, conds []admissionregistrationv1.MatchCondition) func(testing.TB, request) bool {
	t.Helper()
	compiler, err := cel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		t.Fatal(err)
	}
	var accessors []cel.ExpressionAccessor
	for i := range conds {
		accessors = append(accessors, (*matchconditions.MatchCondition)(&conds[i]))
	}
	fail := admissionregistrationv1.Fail
	m := matchconditions.NewMatcher(compiler.CompileCondition(accessors, cel.OptionalVariableDeclarations{HasAuthorizer: true}, environment.StoredExpressions), &fail, "webhook", "validating", "admitfn")
	return func(t testing.TB, r request) bool {
		t.Helper()
		va := r.attributes()
		res := m.Match(context.Background(), va, nil, nil)
		if res.Error != nil {
			t.Fatalf("%s: match condition error: %v", describe(r), res.Error)
		}
		return res.Matches
	}
}

// Package attestcel compiles and evaluates CEL expressions over in-toto
// statements: the attestation conditions a policy writes as
// `cel: '!predicate.scanner.result.Results.exists(...)'`. CEL is what
// Kubernetes users already write in ValidatingAdmissionPolicy; the
// expressions see the statement's predicateType, subject and predicate,
// and now (the review's clock), with cel-go's string, list, set and math
// extensions, and run under a cost limit as the apiserver's do.
package attestcel

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
)

// CostLimit bounds one evaluation, in CEL's cost units: the limit the
// apiserver sets per ValidatingAdmissionPolicy expression. An attestation
// is attacker-supplied data (whoever may push beside the image): a
// predicate built to make an expression loop long is stopped, and the
// condition is unmet.
const CostLimit = 1_000_000

// maxExpression bounds an expression's length, as the apiserver bounds
// a validation's.
const maxExpression = 5 << 10

// Condition is a compiled expression.
type Condition struct {
	expr    string
	program cel.Program
}

// String is the expression as written.
func (c *Condition) String() string { return c.expr }

// env is built per Compile: a cel.Env is cheap to extend but not to share
// across goroutines while being extended, and compiling happens only when
// a policy loads.
func env() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("predicateType", cel.StringType),
		cel.Variable("subject", cel.ListType(cel.DynType)),
		cel.Variable("predicate", cel.DynType),
		cel.Variable("now", cel.TimestampType),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		ext.Strings(),
		ext.Lists(),
		ext.Sets(),
		ext.Math(),
	)
}

// Compile parses and type-checks expr, which must yield a bool.
func Compile(expr string) (*Condition, error) {
	if expr == "" {
		return nil, errors.New("the expression is empty")
	}
	if len(expr) > maxExpression {
		return nil, fmt.Errorf("the expression is %d bytes long; at most %d", len(expr), maxExpression)
	}
	e, err := env()
	if err != nil {
		return nil, err
	}
	ast, iss := e.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if !ast.OutputType().IsExactType(types.BoolType) && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("the expression yields %s; a condition must yield a bool", ast.OutputType())
	}
	prg, err := e.Program(ast, cel.CostLimit(CostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, err
	}
	return &Condition{expr: expr, program: prg}, nil
}

// Holds evaluates the condition on an in-toto statement (as decoded from
// JSON) at now. An error says why it could not be decided — a field the
// predicate lacks, a value of another type, the cost limit — and counts
// as not holding.
func (c *Condition) Holds(statement map[string]any, now time.Time) (bool, error) {
	subject, _ := statement["subject"].([]any)
	if subject == nil {
		subject = []any{}
	}
	predicateType, _ := statement["predicateType"].(string)
	predicate := statement["predicate"]
	if predicate == nil {
		predicate = map[string]any{}
	}
	out, _, err := c.program.Eval(map[string]any{
		"predicateType": predicateType,
		"subject":       subject,
		"predicate":     predicate,
		"now":           now,
	})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("yielded %v, not a bool", out.Value())
	}
	return b, nil
}

package pullsecrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/admitfn/admitfn/functions/internal/testclock"
	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/registrytest"
)

// objects is a Getter over objects kept in maps, counting the reads. The
// real apiserver answers the same questions in test/e2e
// (TestPullSecrets); here the Reader's order, notes and keeping are
// checked on their own.
type objects struct {
	mu       sync.Mutex
	secrets  map[string]secret // "ns/name"
	accounts map[string][]string
	failWith error // every read fails with it, when set
	reads    int
}

type secret struct {
	typ  string
	data map[string][]byte
}

func (o *objects) Secret(_ context.Context, ns, name string) (string, map[string][]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reads++
	if o.failWith != nil {
		return "", nil, o.failWith
	}
	s, ok := o.secrets[ns+"/"+name]
	if !ok {
		return "", nil, ErrNotFound
	}
	return s.typ, s.data, nil
}

func (o *objects) ServiceAccountPullSecrets(_ context.Context, ns, name string) ([]string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reads++
	if o.failWith != nil {
		return nil, o.failWith
	}
	names, ok := o.accounts[ns+"/"+name]
	if !ok {
		return nil, ErrNotFound
	}
	return names, nil
}

func dockerConfigJSON(host, user, pass string) secret {
	return secret{typ: pullcreds.SecretTypeDockerConfigJSON, data: map[string][]byte{
		pullcreds.DockerConfigJSONKey: registrytest.Credentials{Username: user, Password: pass}.DockerConfigJSON(host),
	}}
}

func cluster() *objects {
	return &objects{
		secrets: map[string]secret{
			"team-a/regcred":   dockerConfigJSON("registry.corp", "a", "a-password"),
			"team-a/second":    dockerConfigJSON("registry.corp/team", "a2", "a2-password"),
			"team-a/tls":       {typ: "kubernetes.io/tls", data: map[string][]byte{"tls.crt": []byte("x")}},
			"team-a/broken":    {typ: pullcreds.SecretTypeDockerConfigJSON, data: map[string][]byte{pullcreds.DockerConfigJSONKey: []byte("{not json")}},
			"team-a/bad-auth":  {typ: pullcreds.SecretTypeDockerConfigJSON, data: map[string][]byte{pullcreds.DockerConfigJSONKey: []byte(`{"auths":{"registry.corp":{"auth":"%%%"}}}`)}},
			"team-a/sa-secret": dockerConfigJSON("registry.corp", "sa", "sa-password"),
			"team-b/regcred":   dockerConfigJSON("registry.corp", "b", "b-password"),
		},
		accounts: map[string][]string{
			"team-a/default": {"sa-secret"},
			"team-a/builder": {"regcred", "missing"},
			"team-b/default": nil,
		},
	}
}

// users are who the credentials for repo would log in as, in order.
func users(c *Credentials, repo string) []string {
	var out []string
	for _, a := range c.Lookup(repo) {
		out = append(out, a.Username)
	}
	return out
}

func TestCredentialsInTheKubeletsOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		pod       Pod
		wantUsers []string // for registry.corp/team/app
		wantUsed  []string
		wantNotes []string
	}{
		{
			name:      "the pod's secrets, the more specific key first",
			pod:       Pod{Namespace: "team-a", Secrets: []string{"regcred", "second"}},
			wantUsers: []string{"a2", "a"},
			wantUsed:  []string{"team-a/regcred", "team-a/second"},
		},
		{
			name:      "no secrets: the default serviceaccount's",
			pod:       Pod{Namespace: "team-a"},
			wantUsers: []string{"sa"},
			wantUsed:  []string{"team-a/sa-secret"},
		},
		{
			name:      "a named serviceaccount's, a missing one noted",
			pod:       Pod{Namespace: "team-a", ServiceAccount: "builder"},
			wantUsers: []string{"a"},
			wantUsed:  []string{"team-a/regcred"},
			wantNotes: []string{"secret team-a/missing was not found"},
		},
		{
			name:      "the pod's secrets win over its serviceaccount's",
			pod:       Pod{Namespace: "team-a", ServiceAccount: "builder", Secrets: []string{"second"}},
			wantUsers: []string{"a2"},
			wantUsed:  []string{"team-a/second"},
		},
		{
			name:      "a secret of another type is passed over",
			pod:       Pod{Namespace: "team-a", Secrets: []string{"tls", "regcred"}},
			wantUsers: []string{"a"},
			wantUsed:  []string{"team-a/regcred"},
			wantNotes: []string{"secret team-a/tls is not of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"},
		},
		{
			name:      "only the pod's own namespace: team-b naming team-a's secret gets its own",
			pod:       Pod{Namespace: "team-b", Secrets: []string{"regcred", "second"}},
			wantUsers: []string{"b"},
			wantUsed:  []string{"team-b/regcred"},
			wantNotes: []string{"secret team-b/second was not found"},
		},
		{
			name:      "a serviceaccount that does not exist",
			pod:       Pod{Namespace: "team-b", ServiceAccount: "ghost"},
			wantNotes: []string{"serviceaccount team-b/ghost was not found"},
		},
	}
	r := New(cluster())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := r.Credentials(context.Background(), tt.pod)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantUsers, users(c, "registry.corp/team/app")); diff != "" {
				t.Errorf("users (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantUsed, c.Used); diff != "" {
				t.Errorf("used (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantNotes, c.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
			if d := c.Describe(); strings.Contains(d, "password") {
				t.Errorf("Describe() = %q holds a password", d)
			}
		})
	}
}

func TestMalformedSecretSpoilsThePod(t *testing.T) {
	t.Parallel()
	r := New(cluster())
	for _, name := range []string{"broken", "bad-auth"} {
		t.Run(name, func(t *testing.T) {
			_, err := r.Credentials(context.Background(), Pod{Namespace: "team-a", Secrets: []string{"regcred", name}})
			var bad *MalformedError
			if !errors.As(err, &bad) || bad.Secret != "team-a/"+name {
				t.Fatalf("err = %v, want a *MalformedError naming team-a/%s", err, name)
			}
			if strings.Contains(err.Error(), "%%%") {
				t.Errorf("the error echoes the secret's content: %v", err)
			}
		})
	}
}

func TestWhatWasReadIsKeptForTheTTL(t *testing.T) {
	t.Parallel()
	o := cluster()
	c := testclock.New(time.Unix(1_700_000_000, 0))
	r := New(o, WithTTL(30*time.Second), WithClock(c.Now))
	pod := Pod{Namespace: "team-a", ServiceAccount: "builder"} // a serviceaccount, a secret, a missing secret
	read := func() int {
		t.Helper()
		before := o.reads
		if _, err := r.Credentials(context.Background(), pod); err != nil {
			t.Fatal(err)
		}
		return o.reads - before
	}
	if n := read(); n != 3 {
		t.Fatalf("first review read %d objects, want 3", n)
	}
	c.Advance(29 * time.Second)
	if n := read(); n != 0 {
		t.Errorf("within the TTL, a review read %d objects, want 0 (missing ones kept too)", n)
	}
	// A rotated secret is in force once the TTL is past.
	o.secrets["team-a/regcred"] = dockerConfigJSON("registry.corp", "a-rotated", "x")
	c.Advance(2 * time.Second)
	if n := read(); n != 3 {
		t.Errorf("past the TTL, a review read %d objects, want 3", n)
	}
	got, _ := r.Credentials(context.Background(), pod)
	if diff := cmp.Diff([]string{"a-rotated"}, users(got, "registry.corp/x")); diff != "" {
		t.Errorf("after rotation (-want +got):\n%s", diff)
	}

	// A failure to reach the apiserver is not kept; a refusal is.
	c.Advance(time.Minute)
	o.failWith = errors.New("connection refused")
	if n := read(); n != 1 {
		t.Errorf("with the apiserver down, read %d, want 1 (the serviceaccount)", n)
	}
	if n := read(); n != 1 {
		t.Errorf("again with the apiserver down, read %d, want 1: a failure is not kept", n)
	}
	o.failWith = fmt.Errorf("%w: secrets is forbidden", ErrForbidden)
	if n := read(); n != 1 {
		t.Errorf("forbidden, read %d, want 1", n)
	}
	if n := read(); n != 0 {
		t.Errorf("forbidden again, read %d, want 0: a refusal is kept for the TTL", n)
	}
}

func TestNotesSayWhyNothingWasUsed(t *testing.T) {
	t.Parallel()
	o := cluster()
	o.failWith = errors.New("connection refused")
	c, err := New(o).Credentials(context.Background(), Pod{Namespace: "team-a", Secrets: []string{"regcred"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "no pull secret of the pod's (nor of its serviceaccount's) holds registry credentials; cannot read secret team-a/regcred: connection refused"
	if got := c.Describe(); got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
}

//go:build e2e && cluster

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/test/internal/harness"
)

// restart restarts the apiserver as controlPlane.restart does, then waits
// until the cluster works again as it did before: pods reach the
// apiserver through the kubernetes Service, and every watch the node,
// the controllers and Knative had open is open again.
//
// Both take a while after the apiserver is up, and a wake-up in that
// while fails. The stopping apiserver takes its address out of the
// kubernetes Service, and kube-proxy rejects connections to it until it
// has seen the new one: Knative's autoscaler could not scale validating
// from zero ("connection refused" on its scale patches). And every
// client's watches back off while the apiserver is away (client-go's
// reflector: 0.8 s doubling to a 30 s cap, jittered up to twice that,
// reset only after two quiet minutes; the restarted apiserver also
// answers "forbidden" until its RBAC caches fill, which is one more
// failure). Until they resume, each component acts on what it saw before
// the restart: kube-proxy sent validating's request, through Traefik, to
// the address of the pod Knative had just scaled away (the create hung
// its whole 20 s); the kubelet started a pod 24 s after it was bound; the
// activator did not see validating's new pod. Three fresh-clone CI runs
// out of three hit one of these on the first wake-up after a restart.
func (c *cluster) restart(t testing.TB, plugins []string, config string) {
	t.Helper()
	c.controlPlane.restart(t, plugins, config)
	up := time.Now()
	var since time.Time
	harness.WaitFor(t, 90*time.Second, "the kubernetes Service to reach the apiserver again", func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(kubernetesServiceIP, "443"), time.Second)
		if err != nil {
			since = time.Time{}
			return err
		}
		conn.Close()
		if since.IsZero() {
			since = time.Now()
		}
		// Two seconds running, so a rule kube-proxy writes late is seen too.
		if time.Since(since) < 2*time.Second {
			return fmt.Errorf("reached for %s so far", time.Since(since).Round(time.Millisecond))
		}
		return nil
	})
	t.Logf("the kubernetes Service reaches the restarted apiserver %s after it was up", time.Since(up).Round(time.Millisecond))
	c.waitWatchesResumed(t, up)
}

// waitWatchesResumed waits until every watch a watchedBy user had
// open when the last restart began has been opened again on the new
// apiserver, as the audit log records them (the control plane audits
// every watch at Metadata level). A watch is named by its user, resource,
// namespace and selectors: a reflector's re-watch carries the same ones.
// The log is read once, on from where each poll left off: by the circle
// it holds every storm's creates, and a wait can last a minute.
func (c *cluster) waitWatchesResumed(t testing.TB, up time.Time) {
	t.Helper()
	f, err := os.Open(c.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	watches := &watchLog{r: bufio.NewReader(f), stopping: c.stoppingAt, stopped: c.stoppedAt,
		started: map[string]string{}, ended: map[string]bool{}, resumed: map[string]time.Time{}}
	// Everything written before the old apiserver stopped is in the log
	// by now: the first read names every watch the restart cut.
	if err := watches.readOn(); err != nil {
		t.Fatal(err)
	}
	cut := watches.cut()
	harness.WaitFor(t, 150*time.Second, "the watches the restart cut to be open again", func() error {
		if err := watches.readOn(); err != nil {
			return err
		}
		var missing []string
		for _, w := range cut {
			if _, ok := watches.resumed[w]; !ok {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d not open again, among them %s", len(missing), len(cut), missing[0])
		}
		return nil
	})
	sort.Slice(cut, func(i, j int) bool { return watches.resumed[cut[i]].After(watches.resumed[cut[j]]) })
	var slowest []string
	for _, w := range cut[:min(3, len(cut))] {
		slowest = append(slowest, fmt.Sprintf("%s (%s)", w, watches.resumed[w].Sub(up).Round(time.Millisecond)))
	}
	t.Logf("the %d watches the restart cut are open again %s after the apiserver was up; the last: %s",
		len(cut), time.Since(up).Round(time.Millisecond), strings.Join(slowest, "; "))
}

// auditEvent is the part of an audit.k8s.io/v1 Event a watch is told by.
type auditEvent struct {
	AuditID        string    `json:"auditID"`
	Stage          string    `json:"stage"`
	Verb           string    `json:"verb"`
	RequestURI     string    `json:"requestURI"`
	StageTimestamp time.Time `json:"stageTimestamp"`
	User           struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		APIGroup  string `json:"apiGroup"`
	} `json:"objectRef"`
}

// watchLog is the watchedBy users' watches in the audit log around one
// restart, read as the apiserver appends to it.
type watchLog struct {
	r       *bufio.Reader
	partial []byte // a line the apiserver has not finished writing
	// stopping and stopped bound the old apiserver's stop.
	stopping, stopped time.Time
	started           map[string]string    // auditID → watch, started before stopping
	ended             map[string]bool      // auditIDs that ended before stopping
	resumed           map[string]time.Time // watch → first started after stopped
}

// readOn reads the lines appended since the last read.
func (l *watchLog) readOn() error {
	for {
		line, err := l.r.ReadBytes('\n')
		l.partial = append(l.partial, line...)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		l.add(l.partial)
		l.partial = l.partial[:0]
	}
}

func (l *watchLog) add(line []byte) {
	var e auditEvent
	if json.Unmarshal(line, &e) != nil || e.Verb != "watch" || e.ObjectRef == nil || !watchedBy(e.User.Username) {
		return
	}
	w := watchName(e)
	if strings.Contains(w, "fieldSelector=metadata.name=") {
		// One object, for a consumer that may be gone: the kubelet
		// watches each ConfigMap and Secret a pod of its mounts, and
		// stops when the last such pod is.
		return
	}
	switch {
	case e.Stage == "ResponseStarted" && e.StageTimestamp.Before(l.stopping):
		l.started[e.AuditID] = w
	case e.Stage == "ResponseComplete" && e.StageTimestamp.Before(l.stopping):
		l.ended[e.AuditID] = true
	case e.Stage == "ResponseStarted" && e.StageTimestamp.After(l.stopped):
		if _, ok := l.resumed[w]; !ok {
			l.resumed[w] = e.StageTimestamp
		}
	}
}

// cut are the watches started before stopping that had not ended when
// it began, each once, sorted.
func (l *watchLog) cut() []string {
	seen := map[string]bool{}
	var open []string
	for id, w := range l.started {
		if !l.ended[id] && !seen[w] {
			seen[w] = true
			open = append(open, w)
		}
	}
	sort.Strings(open)
	return open
}

// watchedBy tells the users whose watches a restart waits for: the node,
// the control plane's controllers, and the pods of the data path (Knative's
// components all run as knative-serving's controller account).
func watchedBy(user string) bool {
	for _, prefix := range []string{
		"system:node:", "system:kube-proxy", "system:kube-controller-manager", "system:kube-scheduler",
		"system:serviceaccount:knative-serving:", "system:serviceaccount:traefik:", "system:serviceaccount:kube-system:coredns",
	} {
		if strings.HasPrefix(user, prefix) {
			return true
		}
	}
	return false
}

// watchName is who watches what: user, group/resource, namespace, and
// the selectors, which a re-watch repeats (its resourceVersion differs).
func watchName(e auditEvent) string {
	name := fmt.Sprintf("%s %s/%s", e.User.Username, e.ObjectRef.APIGroup, e.ObjectRef.Resource)
	if e.ObjectRef.Namespace != "" {
		name += " in " + e.ObjectRef.Namespace
	}
	if u, err := url.Parse(e.RequestURI); err == nil {
		for _, key := range []string{"fieldSelector", "labelSelector"} {
			if v := u.Query().Get(key); v != "" {
				name += " " + key + "=" + v
			}
		}
	}
	return name
}

// Package events publishes each admission decision as a CloudEvent to the
// sink Knative injects in K_SINK (SinkBinding, ContainerSource). Sending is
// asynchronous through a bounded queue: admission never waits for the
// sink, and when the queue is full events are dropped and counted.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
)

// Event types.
const (
	TypePrefix         = "dev.admitfn."
	TypePolicyRejected = "dev.admitfn.policy.reload-failed"
)

// Config says where and how to send.
type Config struct {
	// Sink is the URL events are sent to (K_SINK).
	Sink string
	// Overrides is K_CE_OVERRIDES: {"extensions": {"name": "value"}},
	// added to every event.
	Overrides string
	// Source names the sender, e.g. /apis/admitfn.dev/services/image-policy.
	Source string
	// QueueSize bounds the events waiting to be sent (default 1024).
	QueueSize int
	// SendTimeout bounds one delivery (default 5s).
	SendTimeout time.Duration
	// OnOutcome is told "sent", "failed" or "dropped" for each event.
	OnOutcome func(outcome string)
}

// Sender sends events from a queue with two workers.
type Sender struct {
	cfg        Config
	client     cloudevents.Client
	extensions map[string]any

	mu     sync.RWMutex
	closed bool
	queue  chan cloudevents.Event
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

// New checks cfg and starts the workers. It makes no network call.
func New(cfg Config) (*Sender, error) {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 5 * time.Second
	}
	if cfg.OnOutcome == nil {
		cfg.OnOutcome = func(string) {}
	}
	s := &Sender{cfg: cfg, queue: make(chan cloudevents.Event, cfg.QueueSize), done: make(chan struct{})}
	if cfg.Overrides != "" {
		var o struct {
			Extensions map[string]any `json:"extensions"`
		}
		if err := json.Unmarshal([]byte(cfg.Overrides), &o); err != nil {
			return nil, fmt.Errorf("K_CE_OVERRIDES is not valid JSON: %w", err)
		}
		for k := range o.Extensions {
			if !event.IsExtensionNameValid(k) {
				return nil, fmt.Errorf("K_CE_OVERRIDES extension name %q is not valid: use lower-case letters and digits", k)
			}
		}
		s.extensions = o.Extensions
	}
	client, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(cfg.Sink))
	if err != nil {
		return nil, fmt.Errorf("K_SINK %q: %w", cfg.Sink, err)
	}
	s.client = client
	s.ctx, s.cancel = context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range s.queue {
				s.send(e)
			}
		}()
	}
	go func() { wg.Wait(); close(s.done) }()
	return s, nil
}

func (s *Sender) send(e cloudevents.Event) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.SendTimeout)
	defer cancel()
	if res := s.client.Send(ctx, e); !cloudevents.IsACK(res) {
		s.cfg.OnOutcome("failed")
		return
	}
	s.cfg.OnOutcome("sent")
}

// enqueue queues e without waiting; a full queue or a closed sender drops
// it.
func (s *Sender) enqueue(e cloudevents.Event) {
	for k, v := range s.extensions {
		e.SetExtension(k, v)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		s.cfg.OnOutcome("dropped")
		return
	}
	select {
	case s.queue <- e:
	default:
		s.cfg.OnOutcome("dropped")
	}
}

// Close stops taking events and delivers the queued ones for at most
// grace; what is left then is dropped and counted.
func (s *Sender) Close(grace time.Duration) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.queue)
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(grace):
		s.cancel() // in-flight sends fail; the workers then drain the rest
		for range s.queue {
			s.cfg.OnOutcome("dropped")
		}
		<-s.done
	}
	s.cancel()
}

// Data is the payload of a decision event.
type Data struct {
	Handler    string      `json:"handler"`
	UID        string      `json:"uid,omitempty"`
	Kind       string      `json:"kind,omitempty"`
	Namespace  string      `json:"namespace,omitempty"`
	Name       string      `json:"name,omitempty"`
	Operation  string      `json:"operation,omitempty"`
	DryRun     bool        `json:"dryRun"`
	Allowed    bool        `json:"allowed"`
	Result     string      `json:"result"`
	Policy     string      `json:"policy"`
	Rule       string      `json:"rule"`
	Mode       string      `json:"mode,omitempty"`
	Reason     string      `json:"reason"`
	Images     []ImageData `json:"images,omitempty"`
	Violations []Violation `json:"violations,omitempty"`
	FailedOpen []string    `json:"failedOpen,omitempty"`
	BreakGlass string      `json:"breakGlass,omitempty"`
}

// ImageData is an image as written and the digest it resolved to.
type ImageData struct {
	Image  string `json:"image"`
	Digest string `json:"digest,omitempty"`
}

// Violation is a rule an image or the request failed.
type Violation struct {
	Rule    string `json:"rule"`
	Mode    string `json:"mode"`
	Image   string `json:"image,omitempty"`
	Field   string `json:"field,omitempty"`
	Problem string `json:"problem"`
}

// Decided implements observe.Observer: it queues one event.
func (s *Sender) Decided(_ context.Context, r observe.Record) {
	d := r.Decision
	data := Data{
		Handler: r.Handler, UID: r.UID, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Operation: r.Operation,
		DryRun: r.DryRun, Allowed: d.Allowed, Result: r.Result(), Policy: d.Policy, Rule: r.Rule(),
		Reason: d.Reason(), FailedOpen: d.FailedOpen, BreakGlass: d.BreakGlass,
	}
	for _, v := range d.Violations {
		if v.Rule == data.Rule && data.Mode == "" {
			data.Mode = string(v.Mode)
		}
		data.Violations = append(data.Violations, Violation{Rule: v.Rule, Mode: string(v.Mode), Image: v.Image, Field: v.Field, Problem: v.Problem})
	}
	for _, img := range r.Images {
		data.Images = append(data.Images, ImageData{Image: img, Digest: d.Digests[img]})
	}
	subject := "image"
	if len(r.Images) == 0 {
		subject = "request"
	}
	e := cloudevents.NewEvent()
	e.SetID(eventID(r))
	e.SetType(TypePrefix + subject + "." + r.Result())
	e.SetSource(s.cfg.Source + "/handlers/" + r.Handler)
	switch {
	case r.Name != "":
		e.SetSubject(strings.TrimPrefix(r.Namespace+"/"+r.Name, "/"))
	case r.Namespace != "":
		e.SetSubject(r.Namespace)
	}
	e.SetTime(time.Now())
	_ = e.SetData(cloudevents.ApplicationJSON, data)
	s.enqueue(e)
}

// PolicyRejected queues a reload-failed event naming the file and error.
func (s *Sender) PolicyRejected(file string, err error, kept *policy.Policy) {
	e := cloudevents.NewEvent()
	e.SetID(fmt.Sprintf("policy-%d", time.Now().UnixNano()))
	e.SetType(TypePolicyRejected)
	e.SetSource(s.cfg.Source)
	e.SetSubject(file)
	e.SetTime(time.Now())
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]string{"file": file, "error": err.Error(), "policyInForce": kept.Name})
	s.enqueue(e)
}

// eventID is unique per decision: the review's uid when there is one.
func eventID(r observe.Record) string {
	if r.UID != "" {
		return r.UID
	}
	return fmt.Sprintf("%s-%d", r.Handler, time.Now().UnixNano())
}

package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/logging"

	"github.com/admitfn/admitfn/functions/admissionconfig"
	"github.com/admitfn/admitfn/functions/app"
	"github.com/admitfn/admitfn/functions/devcert"
	"github.com/admitfn/admitfn/functions/gctune"
	"github.com/admitfn/admitfn/functions/metrics"
	"github.com/admitfn/admitfn/functions/reload"
	"github.com/admitfn/admitfn/functions/server"
)

// loggerName is the component name in logs and in the logging ConfigMap's
// loglevel.<name> key.
const loggerName = "admitfn"

func defaultListen() string {
	if port := os.Getenv("PORT"); port != "" {
		return ":" + port
	}
	return ":8080"
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("admitfn serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := server.Config{}
	fs.StringVar(&cfg.Listen, "listen", defaultListen(), "address to listen on (default :$PORT, else :8080)")
	policyFile := fs.String("policy", "", "policy file (default: the embedded policy); reloaded when it changes")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serving certificate (PEM); with --tls-key, serve HTTPS")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "serving key (PEM)")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "CA bundle (PEM) that must have signed every client's certificate")
	handlers := fs.String("handlers", strings.Join(app.HandlerNames(), ","), "comma-separated endpoints to mount")
	devCerts := fs.String("dev-certs", "", "make a throwaway CA and a localhost serving certificate in this folder and serve HTTPS with them (for trying admitfn out)")
	loggingDir := fs.String("logging-config", "", "mounted logging ConfigMap folder (zap-logger-config, loglevel."+loggerName+"); reloaded when it changes")
	tokenDir := fs.String("token-dir", "", "folder of caller tokens (a mounted Secret, one token per file): every endpoint but the health probes then requires one as a bearer token; re-read while running")
	metricsListen := fs.String("metrics-listen", "", "serve /metrics on this address instead (plain HTTP, no token): a port Knative's ingress does not route")
	drain := fs.Duration("drain", 5*time.Second, "on SIGTERM, how long to answer readiness probes with 503 while still serving, so traffic moves away before the listeners close (an interrupt stops at once)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the apiserver whose pods' pull secrets and serviceaccounts admitfn reads (default: in a pod, its serviceaccount's; elsewhere none are read)")
	credConfig := fs.String("image-credential-provider-config", "", "the kubelet's CredentialProviderConfig (a file or folder): its plugins give the node's registry credentials to admitfn as to the kubelet")
	credBinDir := fs.String("image-credential-provider-bin-dir", "", "the folder of the plugins --image-credential-provider-config names")
	poll := fs.Duration("reload-interval", 2*time.Second, "how often mounted configuration (policy, logging, TLS certificate, key and client CA) is checked for changes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "admitfn serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "admitfn serve: "+format+"\n", a...)
		return 2
	}

	logger, level, loggingRead, err := newLogger(*loggingDir)
	if err != nil {
		return fail("--logging-config: %v", err)
	}
	defer logger.Sync()
	gc := gctune.Choose(os.Getenv, os.ReadFile)
	gc.Apply()
	logger.Infow("garbage collector tuned for a server", "gc", gc.Why)
	secrets, err := pullSecretsClient(*kubeconfig)
	switch {
	case err != nil && *kubeconfig != "":
		return fail("--kubeconfig: %v", err)
	case err != nil:
		// A pod without a token (automountServiceAccountToken: false)
		// still serves, judging with the node's credentials.
		logger.Warnw("in a pod, but cannot reach the apiserver as its serviceaccount: pods' pull secrets are not read", zap.Error(err))
	case secrets == nil:
		logger.Infow("no --kubeconfig and not in a pod: pods' pull secrets are not read, private images are read with this process's docker config only")
	}
	a, err := app.New(app.Config{
		PullSecrets:              secrets,
		CredentialProviderConfig: *credConfig,
		CredentialProviderBinDir: *credBinDir,
		PolicyFile:               *policyFile,
		Handlers:                 strings.Split(*handlers, ","),
		Logger:                   logger,
		UserAgent:                "admitfn/" + version,
		TokenDir:                 *tokenDir,
		MetricsApart:             *metricsListen != "",
	})
	if err != nil {
		return fail("%v", err)
	}
	cfg.Handler = a.Handler()
	if *tokenDir == "" && cfg.ClientCA == "" {
		logger.Warnw("no --token-dir and no --client-ca: anyone who can reach this address may ask for reviews, registry lookups included")
	}
	caFile := ""
	if *devCerts != "" {
		if cfg.TLSCert != "" {
			return fail("--dev-certs and --tls-cert exclude each other")
		}
		if caFile, cfg.TLSCert, cfg.TLSKey, err = makeDevCerts(*devCerts); err != nil {
			return fail("--dev-certs: %v", err)
		}
	}
	cfg.BaseContext = logging.WithLogger(context.Background(), logger)
	cfg.ErrorLog = zap.NewStdLog(logger.Desugar().Named("http"))
	cfg.CertReloadInterval = *poll
	cfg.CertEvents = server.ReloadEvents{
		Reloaded: func(leaf *x509.Certificate) {
			logger.Infow("serving a renewed TLS certificate", "subject", leaf.Subject.String(), "notAfter", leaf.NotAfter)
		},
		Failed: func(err error) {
			logger.Warnw("cannot load the changed TLS files; the previous certificate stays in service", zap.Error(err))
		},
	}
	var metricsSrv *server.Server
	if *metricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle(metrics.Path, a.Metrics.Handler())
		metricsSrv, err = server.Start(server.Config{Listen: *metricsListen, Handler: mux, ErrorLog: cfg.ErrorLog})
		if err != nil {
			return fail("--metrics-listen: %v", err)
		}
		defer metricsSrv.Shutdown()
	}
	srv, err := server.Start(cfg)
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(stdout, "admitfn %s serving %s on %s with policy %q\n", version, strings.Join(a.Paths, ", "), srv.URL(), a.Reviewer.Policy().Name)
	if caFile != "" {
		printApiserverHints(stdout, srv.URL(), caFile)
	}

	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	go a.Watch(watchCtx, *poll)
	if *loggingDir != "" {
		// From what the logger was built with: a change made before this
		// goroutine's first read (a slow start) is not taken as the baseline.
		go reload.PollFrom(watchCtx, *poll, loggingRead, reload.DirString(*loggingDir),
			func(string) { updateLogLevel(logger, level, *loggingDir) },
			func(err error) {
				logger.Warnw("cannot read the logging configuration", "dir", *loggingDir, zap.Error(err))
			})
	}

	code := 0
	drainFor := func(ctx context.Context) time.Duration {
		if terminated(ctx) {
			logger.Infow("SIGTERM: draining before the listeners close", "drain", *drain)
			return *drain
		}
		return 0
	}
	if err := srv.Wait(ctx, drainFor); err != nil {
		fmt.Fprintf(stderr, "admitfn serve: %v\n", err)
		code = 1
	}
	a.Close(5 * time.Second)
	fmt.Fprintln(stdout, "admitfn stopped")
	return code
}

// newLogger builds the logger from the logging ConfigMap in dir (the
// production default without one) and returns what it read of dir, the
// baseline its watcher compares with.
func newLogger(dir string) (*zap.SugaredLogger, zap.AtomicLevel, string, error) {
	if dir == "" {
		logger, level := logging.NewLogger("", "info")
		return logger.Named(loggerName), level, "", nil
	}
	data, err := reload.Dir(dir)
	if err != nil {
		return nil, zap.AtomicLevel{}, "", err
	}
	lc, err := logging.NewConfigFromMap(data)
	if err != nil {
		return nil, zap.AtomicLevel{}, "", err
	}
	logger, level := logging.NewLoggerFromConfig(lc, loggerName)
	return logger, level, reload.Render(data), nil
}

func updateLogLevel(logger *zap.SugaredLogger, level zap.AtomicLevel, dir string) {
	data, err := reload.Dir(dir)
	if err != nil {
		logger.Warnw("cannot read the logging configuration", "dir", dir, zap.Error(err))
		return
	}
	logging.UpdateLevelFromConfigMap(logger, level, loggerName)(&corev1.ConfigMap{Data: data})
}

func makeDevCerts(dir string) (caFile, certFile, keyFile string, err error) {
	ca, err := devcert.NewCA("admitfn-dev-ca")
	if err != nil {
		return "", "", "", err
	}
	pair, err := ca.Server("localhost", "127.0.0.1", "::1")
	if err != nil {
		return "", "", "", err
	}
	if certFile, keyFile, err = pair.Write(dir, "tls"); err != nil {
		return "", "", "", err
	}
	caFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		return "", "", "", err
	}
	abs, err := filepath.Abs(caFile)
	if err != nil {
		return "", "", "", err
	}
	return abs, certFile, keyFile, nil
}

// printApiserverHints shows how to point kube-apiserver here, rendered by
// the same code as `admitfn admission-config`.
func printApiserverHints(w io.Writer, url, caFile string) {
	o := admissionconfig.Options{
		URL: url + admissionconfig.ImageReviewPath, CAFile: caFile,
		KubeconfigPath: "/etc/kubernetes/admitfn/kubeconfig.yaml",
		AllowTTL:       50, DenyTTL: 50, RetryBackoff: 500,
	}
	ac, err := o.AdmissionConfiguration(false)
	if err != nil {
		return
	}
	kc, err := o.Kubeconfig()
	if err != nil {
		return
	}
	indent := func(b []byte) string {
		return "  " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n  ")
	}
	fmt.Fprintf(w, `
To let kube-apiserver ask it, enable the plugin and point its admission kubeconfig here:
  kube-apiserver --enable-admission-plugins=NodeRestriction,ImagePolicyWebhook \
                 --admission-control-config-file=admission_config.yaml

  # admission_config.yaml (defaultAllow: false: no answer, no pod)
%s

  # %s
%s

Or write both files with:
  admitfn admission-config --url %[4]s --ca-file %[5]s --out DIR

For ValidatingWebhookConfiguration / MutatingWebhookConfiguration:
  admitfn webhook-config --url %[6]s --ca-file %[5]s [--mutating] | kubectl apply -f -

Or ask it yourself:
  curl --cacert %[5]s -H 'Content-Type: application/json' %[4]s \
    -d '{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx"}],"namespace":"default"}}'
`, indent(ac), o.KubeconfigPath, indent(kc), o.URL, caFile, url)
}

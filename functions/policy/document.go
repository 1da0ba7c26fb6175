package policy

// Document is a policy as written in YAML.
type Document struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Metadata   *Metadata `json:"metadata,omitempty"`
	Spec       Spec      `json:"spec"`
}

// Metadata names a policy; the name shows up in audit annotations.
type Metadata struct {
	Name string `json:"name,omitempty"`
}

// Spec is the body of a policy.
type Spec struct {
	// ExemptNamespaces are namespace globs no rule applies to.
	ExemptNamespaces []string `json:"exemptNamespaces,omitempty"`
	// BreakGlass lets a pod annotation override enforce rules, where allowed.
	BreakGlass *BreakGlass `json:"breakGlass,omitempty"`
	// Registry tunes how image facts are fetched.
	Registry RegistrySettings `json:"registry,omitempty"`
	// Mutation configures the mutating handler; it is off unless set.
	Mutation *Mutation `json:"mutation,omitempty"`
	// Workloads declares further kinds that carry a pod template (Argo
	// Rollouts, OpenKruise, in-house CRDs), judged and pinned like a
	// Deployment once their resources are in the webhook registrations.
	Workloads []WorkloadKind `json:"workloads,omitempty"`
	// Rules are evaluated for every request; all of them apply.
	Rules []Rule `json:"rules"`
}

// WorkloadKind says where a kind keeps its pod template.
type WorkloadKind struct {
	// APIGroup of the kind, e.g. argoproj.io.
	APIGroup string `json:"apiGroup"`
	// Kind, e.g. Rollout.
	Kind string `json:"kind"`
	// PodTemplate is the dotted path of the pod template (an object with
	// metadata and spec) in the object, e.g. spec.template; "." when the
	// object's own spec is the pod spec.
	PodTemplate string `json:"podTemplate"`
}

// Mutation is what the mutating handler changes, in the namespaces that opt
// in: mutation fights GitOps tools that see the change as drift.
type Mutation struct {
	// Namespaces (globs) where objects are mutated.
	Namespaces []string `json:"namespaces"`
	// PinDigests rewrites each image to the digest the policy resolved.
	PinDigests bool `json:"pinDigests,omitempty"`
	// PinForm is "tagAndDigest" (repo:tag@sha256:..., the default) or
	// "digest" (repo@sha256:...).
	PinForm PinForm `json:"pinForm,omitempty"`
	// AlwaysPullImages sets imagePullPolicy: Always, like the admission
	// plugin of that name.
	AlwaysPullImages bool `json:"alwaysPullImages,omitempty"`
}

// PinForm is how a pinned image reference is written.
type PinForm string

const (
	// PinTagAndDigest keeps the tag for readers: nginx:1.25@sha256:...
	PinTagAndDigest PinForm = "tagAndDigest"
	// PinDigest drops the tag: nginx@sha256:...
	PinDigest PinForm = "digest"
)

// BreakGlass configures the emergency override annotation.
type BreakGlass struct {
	// Annotation is the pod annotation key. It must contain
	// ".image-policy.k8s.io/": the apiserver forwards no other annotations.
	Annotation string `json:"annotation"`
	// Namespaces are the namespace globs where the override is honoured.
	Namespaces []string `json:"namespaces"`
}

// RegistrySettings tunes the resolver.
type RegistrySettings struct {
	// Insecure lists registry host globs reached over plain HTTP.
	Insecure []string `json:"insecure,omitempty"`
	// Internal lists registry host globs that may be reached at loopback,
	// link-local or private addresses. No other registry is: a review
	// naming one cannot make admitfn connect inward. Insecure hosts are
	// internal too.
	Internal []string `json:"internal,omitempty"`
	// Timeout caps every registry lookup (default 10s).
	Timeout string `json:"timeout,omitempty"`
	// CacheTTL is how long a resolved tag is trusted (default 5m).
	CacheTTL string `json:"cacheTTL,omitempty"`
	// NegativeCacheTTL is how long "not found" is trusted (default 30s).
	NegativeCacheTTL string `json:"negativeCacheTTL,omitempty"`
	// StaleWindow is how long past its TTL an entry may still be served when
	// the registry fails (default 1h; "0s" disables).
	StaleWindow string `json:"staleWindow,omitempty"`
	// CacheSize bounds the number of cached lookups (default 4096).
	CacheSize *int `json:"cacheSize,omitempty"`
	// Platforms are the platforms of a multi-arch index whose configs are
	// inspected (default linux/amd64 and linux/arm64).
	Platforms []string `json:"platforms,omitempty"`
	// PullSecrets says whose pull Secrets admitfn reads (default: every
	// namespace's, when it can reach the apiserver).
	PullSecrets *PullSecretSettings `json:"pullSecrets,omitempty"`
}

// PullSecretSettings limits the namespaces whose pull Secrets (and
// ServiceAccounts) admitfn reads to judge a pod as its kubelet would pull
// it. Elsewhere a private image is judged with the node's credentials
// only: unauthorized, unless they reach it.
type PullSecretSettings struct {
	// Namespaces are namespace globs (default: all).
	Namespaces []string `json:"namespaces,omitempty"`
	// ExemptNamespaces are namespace globs whose Secrets admitfn never
	// reads.
	ExemptNamespaces []string `json:"exemptNamespaces,omitempty"`
}

// Rule is one named check (or a few) over the images in its scope.
type Rule struct {
	Name string `json:"name"`
	// Mode is enforce (default), warn or audit.
	Mode Mode `json:"mode,omitempty"`
	// OnRegistryError is deny (default) or allow.
	OnRegistryError OnError `json:"onRegistryError,omitempty"`
	// OnRegistryUnauthorized is what a 401 or 403 from the registry means
	// (admitfn may not read the repository, though the pod's pull secret
	// may): deny (default) or allow. It is not onRegistryError, so that a
	// pod's author cannot choose a private repository to fail open.
	OnRegistryUnauthorized OnError `json:"onRegistryUnauthorized,omitempty"`
	// Namespaces limits the rule to these namespace globs (default: all).
	Namespaces []string `json:"namespaces,omitempty"`
	// ExemptNamespaces are namespace globs the rule skips.
	ExemptNamespaces []string `json:"exemptNamespaces,omitempty"`
	// Images limits the rule to these repository patterns (default: all).
	Images []string `json:"images,omitempty"`
	// ExcludeImages are repository patterns the rule skips.
	ExcludeImages []string `json:"excludeImages,omitempty"`

	Tags           *TagRule  `json:"tags,omitempty"`
	Registries     *ListRule `json:"registries,omitempty"`
	Repositories   *ListRule `json:"repositories,omitempty"`
	RequireDigest  bool      `json:"requireDigest,omitempty"`
	Digests        []string  `json:"digests,omitempty"`
	Resolvable     bool      `json:"resolvable,omitempty"`
	NonRoot        bool      `json:"nonRoot,omitempty"`
	MaxAge         string    `json:"maxAge,omitempty"`
	RequiredLabels []string  `json:"requiredLabels,omitempty"`
	Platforms      []string  `json:"platforms,omitempty"`
	// Signatures requires the image to be signed (cosign's key-based
	// signatures).
	Signatures *SignatureRule `json:"signatures,omitempty"`
	// Attestations requires a signed in-toto attestation of a predicate
	// type (cosign attest), optionally with conditions on its fields.
	Attestations *AttestationRule `json:"attestations,omitempty"`

	// NodeRestriction applies the NodeRestriction plugin's label rules to
	// kubelets (user system:node:<name> in group system:nodes): a kubelet
	// may modify only its own Node, and no label under
	// node-restriction.kubernetes.io/ on it.
	NodeRestriction bool `json:"nodeRestriction,omitempty"`
	// ServiceTypes denies Services of the listed types, e.g. LoadBalancer.
	ServiceTypes *ServiceTypeRule `json:"serviceTypes,omitempty"`
}

// ServiceTypeRule lists Service types that are refused.
type ServiceTypeRule struct {
	Deny []string `json:"deny"`
}

// TagRule checks the tag as written.
type TagRule struct {
	// DenyLatest denies ":latest" unless a digest pins the image.
	DenyLatest bool `json:"denyLatest,omitempty"`
	// DenyUntagged denies references with neither tag nor digest.
	DenyUntagged bool `json:"denyUntagged,omitempty"`
	// Deny lists tag globs that are refused.
	Deny []string `json:"deny,omitempty"`
	// Allow, when set, lists the only tag globs accepted.
	Allow []string `json:"allow,omitempty"`
}

// SignatureRule names who must have signed an image.
type SignatureRule struct {
	// Require is any (default: one authority suffices) or all.
	Require string `json:"require,omitempty"`
	// Authorities are the signers accepted.
	Authorities []SignatureAuthority `json:"authorities"`
}

// SignatureAuthority is one signer: a public key (PEM: ECDSA, RSA or
// Ed25519), or keyless: certificates for given identities.
type SignatureAuthority struct {
	Name string `json:"name"`
	Key  string `json:"key,omitempty"`
	// KeyFile is a file holding Key (a mounted Secret, say), read when the
	// policy is loaded and again when it changes.
	KeyFile string            `json:"keyFile,omitempty"`
	Keyless *KeylessAuthority `json:"keyless,omitempty"`
	// Notation accepts Notary Project signatures (notation sign) instead
	// of cosign's.
	Notation *NotationAuthority `json:"notation,omitempty"`
}

// NotationAuthority accepts Notary Project signatures attached to the
// image as referrers, verified as notation verify does at verification
// level strict against a trust store of TrustStore's certificates and a
// trust policy of TrustedIdentities.
type NotationAuthority struct {
	// TrustStore is PEM certificates (notation's trust store of type
	// ca), inline; or TrustStoreFile, a file holding them.
	TrustStore     string `json:"trustStore,omitempty"`
	TrustStoreFile string `json:"trustStoreFile,omitempty"`
	// TrustedIdentities are a notation trust policy's: "x509.subject:
	// <DN>" (the signing certificate's subject must hold every attribute
	// of DN) or "*".
	TrustedIdentities []string `json:"trustedIdentities"`
}

// KeylessAuthority accepts sigstore bundles signed with a short-lived
// certificate (cosign's keyless signing) for one of Identities, chained
// to a certificate authority of TrustedRoot.
type KeylessAuthority struct {
	// TrustedRoot is a sigstore trusted_root.json, inline; or
	// TrustedRootFile, a file holding it.
	TrustedRoot     string `json:"trustedRoot,omitempty"`
	TrustedRootFile string `json:"trustedRootFile,omitempty"`
	// Identities are the accepted signers (any one).
	Identities []KeylessIdentity `json:"identities"`
	// TransparencyLog is required (a log entry of TrustedRoot's logs must
	// prove when the certificate signed) or notRequired (the certificate
	// must be valid now: Fulcio's last ten minutes). Never implied.
	TransparencyLog string `json:"transparencyLog"`
	// CTLog is required (the certificate must carry a signed certificate
	// timestamp of one of TrustedRoot's certificate-transparency logs, as
	// Fulcio's do and cosign verify checks by default) or notRequired
	// (cosign's --insecure-ignore-sct). Never implied.
	CTLog string `json:"ctLog"`
}

// KeylessIdentity is an OIDC issuer and a certificate subject (the SAN:
// an email, a workflow URI), each exact or a regular expression matched in
// full.
type KeylessIdentity struct {
	Issuer        string `json:"issuer,omitempty"`
	IssuerRegExp  string `json:"issuerRegExp,omitempty"`
	Subject       string `json:"subject,omitempty"`
	SubjectRegExp string `json:"subjectRegExp,omitempty"`
}

// AttestationRule names the attestation an image must carry.
type AttestationRule struct {
	// PredicateType is the in-toto predicate type, e.g.
	// https://slsa.dev/provenance/v0.2.
	PredicateType string `json:"predicateType"`
	// Authorities are the signers accepted (any one suffices).
	Authorities []SignatureAuthority `json:"authorities"`
	// Conditions must all hold on the attested statement.
	Conditions []AttestationCondition `json:"conditions,omitempty"`
	// Every, when true, wants every attestation of the type that an
	// authority signed to meet the conditions, as cosign
	// verify-attestation --policy does; by default one is enough (a new
	// scan attached beside an old failing one lets the image in).
	Every bool `json:"every,omitempty"`
}

// AttestationCondition is a field of the in-toto statement, by dotted path
// (e.g. predicate.builder.id), that must equal a string or match a glob;
// or a CEL expression over the statement that must yield true.
type AttestationCondition struct {
	Path    string `json:"path,omitempty"`
	Equals  string `json:"equals,omitempty"`
	Matches string `json:"matches,omitempty"`
	// CEL is an expression over predicateType, subject, predicate and now
	// (package attestcel), e.g. "predicate.runDetails.builder.id ==
	// 'https://github.com/actions/runner'". It is type-checked when the
	// policy loads; one that cannot be evaluated on a statement (a
	// missing field, the cost limit) is not met.
	CEL string `json:"cel,omitempty"`
}

// ListRule is an allow list and a deny list of patterns.
type ListRule struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

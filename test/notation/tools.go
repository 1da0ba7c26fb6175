//go:build tools

// Package notation pins the Notary Project's notation CLI, the oracle the
// e2e suite holds admitfn's Notation verdicts to. A module of its own so
// its dependencies move nothing in admitfn's or test/tools' builds; `go
// install pkg@version` cannot build it here, since the module proxy
// refuses to list the module's versions.
package notation

import _ "github.com/notaryproject/notation/cmd/notation"

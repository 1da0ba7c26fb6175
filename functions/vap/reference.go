package vap

import "strings"

// The kubelet's reference grammar (github.com/distribution/reference),
// restricted to what go-containerregistry reads the same way and
// imageref.Parse accepts: the pieces CEL checks a reference against.
const (
	domainComponent = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	// ipv6 is an address net/netip parses, in the hex-and-colons form the
	// grammar allows (no embedded IPv4, no zone): go-containerregistry
	// refuses a registry url.Parse cannot read.
	ipv6 = `(?i:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,7}:|(?:[0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}|` +
		`(?:[0-9a-f]{1,4}:){1,5}(?::[0-9a-f]{1,4}){1,2}|(?:[0-9a-f]{1,4}:){1,4}(?::[0-9a-f]{1,4}){1,3}|` +
		`(?:[0-9a-f]{1,4}:){1,3}(?::[0-9a-f]{1,4}){1,4}|(?:[0-9a-f]{1,4}:){1,2}(?::[0-9a-f]{1,4}){1,5}|` +
		`[0-9a-f]{1,4}:(?::[0-9a-f]{1,4}){1,6}|:(?:(?::[0-9a-f]{1,4}){1,7}|:))`
	domainRE     = `^(?:` + domainComponent + `(?:\.` + domainComponent + `)*|\[` + ipv6 + `\])(?::[0-9]+)?$`
	pathRE       = `^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$`
	tagRE        = `^[\w][\w.-]{0,127}$`
	digestRE     = `^(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$`
	identifierRE = `^[a-f0-9]{64}$`
)

// dockerHubAliases are the spellings of Docker Hub's host that
// imageref.CanonicalHost writes as index.docker.io.
var dockerHubAliases = []string{"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

// A stage is one variable of the reference parse: a list, one map per
// judged image, each map holding the previous stage's keys and more. CEL
// in the apiserver has no let-binding, so each step that needs the one
// before is a variable of its own. Every value is a string, so the maps
// type-check as map(string, string).
type stage struct {
	name string
	// keys are the new keys and their expressions over "p", the previous
	// stage's map.
	keys [][2]string
}

// referenceStages parse variables.judged's references as imageref.Parse
// does. The last stage, "refs", holds for each image: ref, field, valid
// ("y" or ""), registry (canonical host), repository, repo
// (registry/repository), segs (repo + "/", for repository patterns), tag,
// at ("y" when a digest is written), digest, jtag (the tag the runtime
// pulls: "latest" when none is written and no digest pins) and implied.
func referenceStages() []stage {
	return []stage{
		{"ref1", [][2]string{
			{"ref", `p.ref`}, {"field", `p.field`},
			{"base", `p.ref.split('@')[0]`},
			{"at", `p.ref.indexOf('@') >= 0 ? 'y' : ''`},
			{"digest", `p.ref.indexOf('@') >= 0 ? p.ref.substring(p.ref.indexOf('@') + 1) : ''`},
		}},
		{"ref2", [][2]string{
			// A colon after the last slash starts the tag; before it, a port.
			{"tagged", `p.base.lastIndexOf(':') > p.base.lastIndexOf('/') ? 'y' : ''`},
			{"tag", `p.base.lastIndexOf(':') > p.base.lastIndexOf('/') ? p.base.substring(p.base.lastIndexOf(':') + 1) : ''`},
			{"name", `p.base.lastIndexOf(':') > p.base.lastIndexOf('/') ? p.base.substring(0, p.base.lastIndexOf(':')) : p.base`},
		}},
		{"ref3", [][2]string{
			// Both parsers read the first segment as a host when it is
			// localhost or holds a '.' or ':'.
			{"first", `p.name.split('/')[0]`},
			{"domained", `p.name.indexOf('/') >= 0 && (p.name.split('/')[0] == 'localhost' || p.name.split('/')[0].contains('.') || p.name.split('/')[0].contains(':')) ? 'y' : ''`},
		}},
		{"ref4", [][2]string{
			{"host", `p.domained == 'y' ? p.first : 'docker.io'`},
			{"path", `p.domained == 'y' ? p.name.substring(size(p.first) + 1) : p.name`},
			{"lhost", `p.domained == 'y' ? p.first.lowerAscii() : 'docker.io'`},
		}},
		{"ref5", [][2]string{
			{"repository", `(p.host == 'docker.io' || p.host == 'index.docker.io') && !p.path.contains('/') ? 'library/' + p.path : p.path`},
			// Host and port apart, as net.SplitHostPort has them.
			{"hostonly", `p.lhost.startsWith('[') ? p.lhost.substring(0, p.lhost.indexOf(']') + 1) : p.lhost.split(':')[0]`},
			{"port", `p.lhost.startsWith('[') ? p.lhost.substring(p.lhost.indexOf(']') + 1) : (p.lhost.contains(':') ? ':' + p.lhost.split(':')[1] : '')`},
		}},
		{"ref6", [][2]string{
			{"registry", `p.hostonly in ` + celList(dockerHubAliases) + ` && (p.port == '' || p.port == ':443') ? 'index.docker.io' : p.hostonly + (p.port == ':443' ? '' : p.port)`},
		}},
		{"refs", [][2]string{
			{"repo", `p.registry + '/' + p.repository`},
			{"segs", `p.registry + '/' + p.repository + '/'`},
			{"jtag", `p.tag != '' ? p.tag : (p.at == '' ? 'latest' : '')`},
			{"implied", `p.tag == '' && p.at == '' ? ' (implied: the reference names no tag)' : ''`},
			{"valid", strings.Join([]string{
				`!p.ref.matches(` + celString(identifierRE) + `)`,
				`(p.domained == '' || p.host.matches(` + celString(domainRE) + `))`,
				`p.path.matches(` + celString(pathRE) + `)`,
				`(p.tagged == '' || p.tag.matches(` + celString(tagRE) + `))`,
				`(p.at == '' || p.digest.matches(` + celString(digestRE) + `))`,
				`size(p.repository) <= 255`,
				// Another spelling of Docker Hub's host with a one-segment
				// repository names no image the runtime pulls as library/.
				`!(p.registry == 'index.docker.io' && !p.repository.contains('/'))`,
			}, " && ") + ` ? 'y' : ''`},
		}},
	}
}

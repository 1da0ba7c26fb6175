package policy

import "github.com/admitfn/admitfn/functions/imagefacts"

// The facts the resolver produces and the engine reads live in package
// imagefacts; these names keep the engine's vocabulary.
type (
	// Level is imagefacts.Level.
	Level = imagefacts.Level
	// Facts is imagefacts.Facts.
	Facts = imagefacts.Facts
	// Signature is imagefacts.Signature.
	Signature = imagefacts.Signature
	// NotationSignature is imagefacts.NotationSignature.
	NotationSignature = imagefacts.NotationSignature
	// ImageConfig is imagefacts.ImageConfig.
	ImageConfig = imagefacts.ImageConfig
	// Platform is imagefacts.Platform.
	Platform = imagefacts.Platform
	// Registry is imagefacts.Registry.
	Registry = imagefacts.Registry
)

// Levels, as imagefacts names them.
const (
	LevelName         = imagefacts.LevelName
	LevelDigest       = imagefacts.LevelDigest
	LevelConfig       = imagefacts.LevelConfig
	LevelSignatures   = imagefacts.LevelSignatures
	LevelAttestations = imagefacts.LevelAttestations
)

// ParsePlatform is imagefacts.ParsePlatform.
func ParsePlatform(s string) (Platform, error) { return imagefacts.ParsePlatform(s) }

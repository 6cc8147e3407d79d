package nodeproto

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
)

// ProofPath is where an edge answers for its identity at its public URL:
// GET ProofPath?challenge=<c> answers a Proof, the node's id and its
// signature of c with the node key. The origin asks with every audit, so
// that a node cannot give another server's URL (an honest edge's, the
// origin's) as its own and be credited with what that server serves.
const ProofPath = "/.well-known/shoal-node"

// Proof is the answer at ProofPath.
type Proof struct {
	NodeID    string `json:"node_id"`
	Signature string `json:"signature"` // base64 ed25519 signature of proofMessage(challenge)
}

var challengeRe = regexp.MustCompile(`^[A-Za-z0-9_-]{22,64}$`)

// proofMessage is what a proof signs: never a request body (those are
// JSON), so a proof cannot be replayed as one, nor one as a proof.
func proofMessage(challenge string) []byte {
	return []byte("shoal node proof\n" + challenge + "\n")
}

// NewChallenge returns a fresh random challenge.
func NewChallenge() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Prove answers challenge as the node whose key is priv.
func Prove(priv ed25519.PrivateKey, challenge string) (Proof, error) {
	if !challengeRe.MatchString(challenge) {
		return Proof{}, errors.New("challenge must be 22 to 64 base64url characters")
	}
	return Proof{NodeID: NodeID(priv.Public().(ed25519.PublicKey)), Signature: Sign(priv, proofMessage(challenge))}, nil
}

// CheckProof checks that p answers challenge as the node whose public key
// is pub.
func CheckProof(pub ed25519.PublicKey, challenge string, p Proof) error {
	if id := NodeID(pub); p.NodeID != id {
		return fmt.Errorf("it answers as node %q, not %s", p.NodeID, id)
	}
	if err := Verify(pub, proofMessage(challenge), p.Signature); err != nil {
		return errors.New("its signature does not verify")
	}
	return nil
}

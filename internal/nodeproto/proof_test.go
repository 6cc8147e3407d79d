package nodeproto

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

// A proof verifies for its node and its challenge only.
func TestProof(t *testing.T) {
	t.Parallel()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	other, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	c := NewChallenge()
	p, err := Prove(priv, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckProof(pub, c, p); err != nil {
		t.Fatalf("a good proof: %v", err)
	}
	if err := CheckProof(pub, NewChallenge(), p); err == nil {
		t.Error("a proof for another challenge verified")
	}
	if err := CheckProof(other, c, p); err == nil {
		t.Error("a proof verified for another node")
	}
	q, _ := Prove(otherPriv, c)
	q.NodeID = p.NodeID // another node's signature under this node's id
	if err := CheckProof(pub, c, q); err == nil {
		t.Error("another node's signature verified")
	}
	for _, bad := range []string{"", "short", "has space in it 0123456789", string(make([]byte, 65))} {
		if _, err := Prove(priv, bad); err == nil {
			t.Errorf("Prove(%q) answered", bad)
		}
	}
}

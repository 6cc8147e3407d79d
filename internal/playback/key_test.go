package playback

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadOrCreateKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys", "playback.pem")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != KeyFileMode {
		t.Errorf("key file mode %v, want %v", st.Mode().Perm(), os.FileMode(KeyFileMode))
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("key file is not PEM PKCS #8:\n%s", data)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("the second start made a new key")
	}
	// Nothing else is left in the directory (no temporary files).
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key", len(entries))
	}
	// A token signed with it verifies with its public half, also after the
	// public key went through its string form.
	pub, err := ParsePublicKey(PublicKeyString(k1.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Sign(k2, Claims{ID: "abc", Expires: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(pub, tok, "abc", time.Now(), ""); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "playback.pem")
	keys := make([]ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !k.Equal(keys[0]) {
			t.Fatal("concurrent starts ended with different keys")
		}
	}
}

func TestLoadKeyForms(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed := bytes.Repeat([]byte{9}, ed25519.SeedSize)
	want := ed25519.NewKeyFromSeed(seed)
	for name, content := range map[string]string{
		"seed-std": base64.StdEncoding.EncodeToString(seed) + "\n",
		"seed-url": base64.RawURLEncoding.EncodeToString(seed),
		"full":     base64.StdEncoding.EncodeToString(want),
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := LoadOrCreateKey(p)
		if err != nil || !k.Equal(want) {
			t.Errorf("%s: key %x, %v", name, k, err)
		}
	}
	bad := append(bytes.Clone(want[:32]), bytes.Repeat([]byte{1}, 32)...)
	for name, content := range map[string]string{
		"empty":      "",
		"garbage":    "not a key at all!",
		"short":      base64.StdEncoding.EncodeToString(seed[:16]),
		"mismatched": base64.StdEncoding.EncodeToString(bad),
		"pem-other":  "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateKey(p); err == nil {
			t.Errorf("%s: loaded a key", name)
		}
	}
	if _, err := LoadOrCreateKey(""); err == nil {
		t.Error("LoadOrCreateKey(\"\") succeeded")
	}
}

func TestParsePublicKey(t *testing.T) {
	t.Parallel()
	pub := testPub
	s := PublicKeyString(pub)
	if len(s) != 43 || strings.ContainsAny(s, "+/=") {
		t.Errorf("PublicKeyString = %q", s)
	}
	std := base64.StdEncoding.EncodeToString(pub)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, in := range []string{s, std, pemKey, strings.TrimRight(std, "="), " " + s + "\n", base64.URLEncoding.EncodeToString(pub)} {
		got, err := ParsePublicKey(in)
		if err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicKey(%q) = %x, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "AAAA", "!!!", s + "AA", "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
	}
}

// A key file others may read is refused with the command that fixes it.
func TestLooseKeyFileRefused(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "node.key")
	if _, err := LoadOrCreateKey(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreateKey(p)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("a 0644 key file: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(p); err != nil {
		t.Fatalf("after chmod 600: %v", err)
	}
}

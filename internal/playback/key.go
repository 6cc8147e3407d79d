package playback

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeyFileMode is the permission of a key file LoadOrCreateKey creates.
const KeyFileMode = 0o600

// pemPrivateKey is the PEM block type of a PKCS #8 private key.
const pemPrivateKey = "PRIVATE KEY"

// LoadOrCreateKey returns the ed25519 signing key kept at path, creating it
// (and its directory, 0700) on first use.
//
// The file is PEM, a "PRIVATE KEY" block holding the key in PKCS #8, the
// form `openssl genpkey -algorithm ed25519` writes and reads; it is created
// with mode 0600, atomically (a concurrent start either creates it or reads
// the one the other created, never a partial file). A file an operator
// provides may instead hold the key as one line of base64 (standard or URL
// alphabet, padded or not) of the 32-byte seed or the 64-byte private key.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	if path == "" {
		return nil, errors.New("playback: no key path")
	}
	data, err := os.ReadFile(path)
	if err == nil {
		if err := checkPrivate(path); err != nil {
			return nil, err
		}
		k, err := ParsePrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("playback: key file %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("playback: reading the key: %w", err)
	}
	return createKey(path)
}

// checkPrivate refuses a key file that others than its owner may read or
// write: whoever reads it can sign as this node.
func checkPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("playback: key file %s: %w", path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("playback: key file %s is readable or writable by others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	return nil
}

// encodeKey is priv as a PEM PKCS #8 file.
func encodeKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("playback: encoding the key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ReplaceKey writes priv to the key file at path in place of the one
// there (mode 0600, atomically: a temporary file renamed over it).
func ReplaceKey(path string, priv ed25519.PrivateKey) error {
	data, err := encodeKey(priv)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("playback: creating the key's directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".playback-key-*")
	if err != nil {
		return fmt.Errorf("playback: replacing the key: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(KeyFileMode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("playback: replacing the key: %w", err)
	}
	return nil
}

func createKey(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("playback: generating a key: %w", err)
	}
	data, err := encodeKey(priv)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("playback: creating the key's directory: %w", err)
	}
	// Write a temporary file, then link it into place: the link fails if
	// another process created the key meanwhile, and the key file is never
	// seen half written.
	tmp, err := os.CreateTemp(dir, ".playback-key-*")
	if err != nil {
		return nil, fmt.Errorf("playback: creating the key: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := tmp.Chmod(KeyFileMode); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("playback: creating the key: %w", err)
	}
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("playback: writing the key: %w", werr)
	}
	err = os.Link(tmpName, path)
	switch {
	case err == nil:
		return priv, nil
	case errors.Is(err, fs.ErrExist):
		// Another process won the race: use its key.
		return LoadOrCreateKey(path)
	}
	// No hard links here (some file systems): create the file exclusively.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, KeyFileMode)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("playback: creating the key: %w", err)
	}
	_, werr = f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("playback: writing the key: %w", werr)
	}
	return priv, nil
}

// ParsePrivateKey reads an ed25519 private key in one of the forms
// LoadOrCreateKey accepts: PEM PKCS #8, or base64 of the 32-byte seed or
// the 64-byte key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, _ := pem.Decode(trimmed)
		if block == nil || block.Type != pemPrivateKey {
			return nil, errors.New(`not a PEM "PRIVATE KEY" block`)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a PKCS #8 private key: %w", err)
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %T, want an ed25519 key", k)
		}
		return priv, nil
	}
	raw, err := decodeBase64(string(trimmed))
	if err != nil {
		return nil, errors.New("neither PEM nor base64")
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize:
		priv := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
		if !bytes.Equal(priv, raw) {
			return nil, errors.New("the 64-byte key's public half does not match its seed")
		}
		return priv, nil
	}
	return nil, fmt.Errorf("%d bytes of base64, want a %d-byte seed or a %d-byte key", len(raw), ed25519.SeedSize, ed25519.PrivateKeySize)
}

// PublicKeyString returns pub as unpadded base64url (43 characters), the
// form to hand to edges (configuration, environment, JSON).
func PublicKeyString(pub ed25519.PublicKey) string {
	return base64.RawURLEncoding.EncodeToString(pub)
}

// ParsePublicKey reads a public key given as base64 (standard or URL
// alphabet, padded or not, surrounding white space ignored) of its 32
// bytes, or as a PEM "PUBLIC KEY" block (PKIX, as openssl writes it).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		block, _ := pem.Decode([]byte(s))
		if block == nil || block.Type != "PUBLIC KEY" {
			return nil, errors.New(`playback: not a PEM "PUBLIC KEY" block`)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("playback: public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("playback: public key is a %T, want ed25519", k)
		}
		return pub, nil
	}
	raw, err := decodeBase64(s)
	if err != nil {
		return nil, errors.New("playback: public key is not base64")
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("playback: public key is %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// decodeBase64 decodes standard or URL-alphabet base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

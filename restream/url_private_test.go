package restream

import (
	"errors"
	"testing"
)

func TestPublicOnly(t *testing.T) {
	for addr, private := range map[string]bool{
		"127.0.0.1:1935": true, "10.1.2.3:1935": true, "192.168.1.1:1935": true, "172.16.0.1:1935": true,
		"169.254.169.254:80": true, "[::1]:1935": true, "[fe80::1]:1935": true, "[::ffff:127.0.0.1]:1935": true,
		"100.64.0.1:1935": true, "0.0.0.0:1935": true,
		"142.250.74.46:1935": false, "[2001:4860:4860::8888]:1935": false, "100.128.0.1:1935": false,
	} {
		err := publicOnly("tcp4", addr, nil)
		if got := errors.Is(err, errPrivateAddress); got != private {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

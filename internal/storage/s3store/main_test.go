package s3store_test

import (
	"os"
	"testing"

	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

func TestMain(m *testing.M) {
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}

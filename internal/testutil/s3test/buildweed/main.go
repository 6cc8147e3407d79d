// Command buildweed builds the SeaweedFS weed binary the storage tests run
// as their S3 server, once, into the cache (see s3test.WeedPath), and
// prints its path. scripts/install-deps.sh (make deps, make test, .ci/run)
// runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	bin, err := s3test.EnsureWeed(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(bin)
}

// Package s3test runs a real S3 server for tests: SeaweedFS's `weed
// server` (master, volume server, filer and S3 gateway in one process) on
// free loopback ports, with its data in t.TempDir(). The weed binary is
// built once into a cache outside the repository (EnsureWeed;
// scripts/install-deps.sh builds it for make test and .ci/run).
//
// Start configures no identities, so the S3 gateway accepts anonymous
// (unsigned) requests; StartWithCredentials configures one identity and
// refuses anything else.
package s3test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/shoal-video/shoal/internal/testutil"
)

// startTimeout bounds how long Start and Restart wait for S3 to store an
// object (weed starts four services; a loaded CI machine is slow).
const startTimeout = 90 * time.Second

// readyBucket is the bucket the readiness probe writes to.
const readyBucket = "s3test-ready"

// Server is a weed server process owned by one test.
type Server struct {
	// Endpoint is the S3 URL, for example "http://127.0.0.1:40123".
	Endpoint string
	// AccessKey and SecretKey are the one identity of a server from
	// StartWithCredentials; empty for Start (anonymous access).
	AccessKey, SecretKey string

	bin   string
	dir   string
	ports ports

	mu   sync.Mutex
	proc *testutil.Process // nil while stopped
}

type ports struct{ master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3, s3Grpc int }

// Start builds weed when missing (see EnsureWeed), runs `weed server` on
// free ports and waits until its S3 gateway stores an object. The server
// is stopped when the test ends. Start calls t.Fatal when weed cannot be
// built or does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, "", "")
}

// StartWithCredentials is Start with one S3 identity (an admin with these
// keys): unsigned requests and other keys are refused.
func StartWithCredentials(t testing.TB, accessKey, secretKey string) *Server {
	t.Helper()
	return start(t, accessKey, secretKey)
}

func start(t testing.TB, accessKey, secretKey string) *Server {
	t.Helper()
	bin, err := EnsureWeed(context.Background(), testWriter{t})
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	s := &Server{bin: bin, dir: t.TempDir(), AccessKey: accessKey, SecretKey: secretKey}
	if accessKey != "" {
		if err := s.writeIdentities(); err != nil {
			t.Fatalf("s3test: %v", err)
		}
	}
	t.Cleanup(s.Stop)
	// A port found free can be taken before weed binds it: try again.
	var lastErr error
	for range 3 {
		if s.ports, err = freePorts(); err != nil {
			t.Fatalf("s3test: free ports: %v", err)
		}
		s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(s.ports.s3)
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("s3test: weed server did not start: %v", lastErr)
	return nil
}

// configFile is the S3 identities file of a server with credentials.
func (s *Server) configFile() string { return filepath.Join(s.dir, "s3.json") }

func (s *Server) writeIdentities() error {
	type cred struct {
		AccessKey string `json:"accessKey"`
		SecretKey string `json:"secretKey"`
	}
	type identity struct {
		Name        string   `json:"name"`
		Credentials []cred   `json:"credentials"`
		Actions     []string `json:"actions"`
	}
	b, err := json.Marshal(map[string][]identity{"identities": {{
		Name:        "shoal",
		Credentials: []cred{{s.AccessKey, s.SecretKey}},
		Actions:     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}})
	if err != nil {
		return err
	}
	return os.WriteFile(s.configFile(), b, 0o600)
}

// Stop kills weed (SIGKILL: S3 going away as in a crash; what it had
// stored stays on disk for Restart) and waits for it to exit. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	s.proc.Kill()
	s.proc = nil
	// weed puts its local gRPC sockets in /tmp, whatever the flags; a kill
	// leaves them behind.
	p := s.ports
	for name, port := range map[string]int{"master": p.masterGrpc, "volume": p.volumeGrpc, "filer": p.filerGrpc, "s3": p.s3Grpc} {
		_ = os.Remove(fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", name, port))
	}
}

// Restart starts weed again on the same ports with the same data and
// waits until S3 stores an object. A running server is stopped first.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	// The ports were just released; retry in case one is not yet bindable.
	if err := testutil.Retry(startTimeout, 200*time.Millisecond, s.start); err != nil {
		t.Fatalf("s3test: restart weed on %s: %v", s.Endpoint, err)
	}
}

// Output is what weed printed so far (for a failing test's message).
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return ""
	}
	return s.proc.Out.String()
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return fmt.Errorf("already running")
	}
	p := s.ports
	args := []string{"server",
		"-dir=" + s.dir,
		"-ip=127.0.0.1",
		"-ip.bind=127.0.0.1",
		"-master.port=" + strconv.Itoa(p.master),
		"-master.port.grpc=" + strconv.Itoa(p.masterGrpc),
		"-master.volumeSizeLimitMB=64",
		"-volume.port=" + strconv.Itoa(p.volume),
		"-volume.port.grpc=" + strconv.Itoa(p.volumeGrpc),
		"-volume.max=200", // 64 MB each, grown as written: no preallocation
		"-filer",
		"-filer.port=" + strconv.Itoa(p.filer),
		"-filer.port.grpc=" + strconv.Itoa(p.filerGrpc),
		"-s3",
		"-s3.port=" + strconv.Itoa(p.s3),
		"-s3.port.grpc=" + strconv.Itoa(p.s3Grpc),
		"-s3.port.iceberg=0",
		"-s3.port.lance=0",
	}
	if s.AccessKey != "" {
		args = append(args, "-s3.config="+s.configFile())
	}
	// Unix sockets in the test's directory rather than /tmp (when the path
	// fits a socket address).
	if sock := filepath.Join(s.dir, "filer.sock"); len(sock) < 100 {
		args = append(args, "-filer.localSocket="+sock, "-s3.localSocket="+filepath.Join(s.dir, "s3.sock"))
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	// Each bucket is a collection with its own volumes: grow one volume
	// at a time (not 7) so that many buckets fit in the volume slots.
	cmd.Env = append(os.Environ(), "WEED_MASTER_VOLUME_GROWTH_COPY_1=1")
	proc, err := testutil.StartProcess(cmd)
	if err != nil {
		return err
	}
	err = proc.WaitReady(startTimeout, 100*time.Millisecond, s.probe)
	var exited *testutil.ExitedError
	switch {
	case errors.As(err, &exited):
		return fmt.Errorf("weed exited (%v): %s", exited.State, tail(proc.Out.Bytes()))
	case err != nil:
		return fmt.Errorf("S3 at %s did not store an object within %v (last: %v): %s", s.Endpoint, startTimeout, err, tail(proc.Out.Bytes()))
	}
	s.proc = proc
	return nil
}

// probe creates the readiness bucket (an existing one is fine) and puts
// an object in it, with the server's credentials: S3 answers only once the
// filer and a volume are up.
func (s *Server) probe() error {
	creds := credentials.NewStatic("", "", "", credentials.SignatureAnonymous)
	if s.AccessKey != "" {
		creds = credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")
	}
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: creds, Region: "us-east-1", BucketLookup: minio.BucketLookupPath, MaxRetries: 1,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = c.MakeBucket(ctx, readyBucket, minio.MakeBucketOptions{})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	if _, err := c.PutObject(ctx, readyBucket, "probe", strings.NewReader("ok"), 2, minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("put object: %w", err)
	}
	return nil
}

func tail(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return b
}

// freePorts finds eight distinct free TCP ports on 127.0.0.1 (held open
// together so they differ).
func freePorts() (ports, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	n := make([]int, 8)
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ports{}, err
		}
		ls = append(ls, l)
		n[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]}, nil
}

// testWriter logs the weed build's output through t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

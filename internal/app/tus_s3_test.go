package app

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// With the media store on S3, a tus upload whose connection drops at
// origin A is resumed at origin B, which has its own data dir: its data is
// in the bucket (uploads/<upload id>/), and the video becomes ready. Once
// the video is queued, nothing of the upload is left, in the bucket or in
// either data dir.
func TestTusOnS3ResumesAtAnotherOrigin(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	rs := redistest.Start(t)
	const bucket = "shoal-tus"
	a := startNodeOn(t, rs, append(s3Env(srv, bucket), "SHOAL_VOD_WORKERS=0")...)
	b := startNodeOn(t, rs, s3Env(srv, bucket)...)

	data, err := os.ReadFile(testutil.MakeMP4(t, 640, 360, 6))
	if err != nil {
		t.Fatal(err)
	}
	v := a.createVideo("tus on s3")
	tusAcrossOrigins(t, srv, bucket, a, b, v, data)
	v = a.waitVideo(v.ID, 90*time.Second)
	if v.Status != "ready" {
		t.Fatalf("video: %+v", v)
	}
	if d := probeDuration(t, a.http+"/hls/"+v.ID+"/master.m3u8"); d < 5.5 || d > 6.5 {
		t.Fatalf("ffprobe measures %.3f s, want 6", d)
	}
	if keys := bucketKeys(t, srv, bucket, "uploads/"); len(keys) != 0 {
		t.Fatalf("the bucket still holds %q after the upload", keys)
	}
	for _, n := range []*node{a, b} {
		entries, _ := os.ReadDir(filepath.Join(n.dataDir, "uploads"))
		for _, e := range entries {
			if !e.IsDir() {
				t.Errorf("%s is left in an upload directory", e.Name())
			}
		}
	}
}

// tusAcrossOrigins sends data as video v's source with tus: created at A,
// the connection to A dropping after 40% of it, resumed at B from the
// offset B tells (the partial upload is in the bucket). It returns the
// upload id.
func tusAcrossOrigins(t *testing.T, srv *s3test.Server, bucket string, a, b *node, v video, data []byte) string {
	t.Helper()
	c := tusClient{t: t, key: testAdminKey}
	resp, err := c.do(http.MethodPost, v.Upload.TusURL, map[string]string{
		"Upload-Length":   strconv.Itoa(len(data)),
		"Upload-Metadata": "video_id " + base64.StdEncoding.EncodeToString([]byte(v.ID)),
	}, nil, 0)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("tus create at A: %v %v", resp, err)
	}
	path := strings.TrimPrefix(resp.Header.Get("Location"), a.http)
	id := strings.TrimPrefix(path, "/v1/uploads/")
	// The connection to A drops after 40% of the file.
	cut := len(data) * 2 / 5
	if _, err := c.do(http.MethodPatch, a.http+path, map[string]string{
		"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
	}, &failingReader{r: bytes.NewReader(data), n: cut}, int64(len(data))); err == nil {
		t.Fatal("the interrupted PATCH succeeded")
	}
	// The client resumes at B from the offset B tells.
	var offset int
	b.waitFor("B to tell the partial upload's offset", 10*time.Second, func() bool {
		resp, err := c.do(http.MethodHead, b.http+path, nil, nil, 0)
		if err != nil || resp.StatusCode != http.StatusOK {
			return false
		}
		offset, _ = strconv.Atoi(resp.Header.Get("Upload-Offset"))
		return offset > 0
	})
	if offset > cut {
		t.Fatalf("offset %d beyond the %d bytes sent", offset, cut)
	}
	if keys := bucketKeys(t, srv, bucket, "uploads/"+id+"/"); len(keys) < 2 || keys[0] != "uploads/"+id+"/info" {
		t.Fatalf("the bucket holds %q for the partial upload", keys)
	}
	t.Logf("interrupted at A after %d of %d bytes; the bucket kept %d", cut, len(data), offset)
	resp, err = c.do(http.MethodPatch, b.http+path, map[string]string{
		"Upload-Offset": strconv.Itoa(offset), "Content-Type": "application/offset+octet-stream",
	}, bytes.NewReader(data[offset:]), int64(len(data)-offset))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resumed PATCH at B: %v %v", resp, err)
	}
	return id
}

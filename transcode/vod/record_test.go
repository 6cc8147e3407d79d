package vod

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestSaveRecordKeepsTheNewest: record copies written out of order, or at
// once by several writers, end as the newest state; a dropped copy leaves
// nothing behind.
func TestSaveRecordKeepsTheNewest(t *testing.T) {
	t.Parallel()
	f := Files{RecordDir: t.TempDir()}
	const id = "abcdefghij0123456789"
	at := func(s int) map[string]string {
		return map[string]string{"status": fmt.Sprint("s", s), "updated_at": time.Unix(1_800_000_000+int64(s), 0).UTC().Format(time.RFC3339Nano)}
	}
	read := func() map[string]string {
		t.Helper()
		var got map[string]string
		err := f.Records(func(rid string, fields map[string]string) error {
			if rid == id {
				got = fields
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if err := f.SaveRecord(id, at(2)); err != nil {
		t.Fatal(err)
	}
	if err := f.SaveRecord(id, at(1)); err != nil { // older, written late
		t.Fatal(err)
	}
	if got := read(); got["status"] != "s2" {
		t.Fatalf("after an older copy: %v, want s2", got)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.SaveRecord(id, at(10+(i*37)%50)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := read(); got["status"] != "s59" {
		t.Fatalf("after concurrent writers: %v, want the newest (s59)", got)
	}
	entries, _ := os.ReadDir(filepath.Join(f.RecordDir, id))
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".tmp" {
			t.Fatalf("temporary file %s left", e.Name())
		}
	}
	b, _ := os.ReadFile(filepath.Join(f.RecordDir, id, recordFile))
	if !json.Valid(b) {
		t.Fatalf("the copy is not JSON: %q", b)
	}
	if err := f.DropRecord(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.RecordDir, id)); !os.IsNotExist(err) {
		t.Fatalf("the video's directory is left after DropRecord: %v", err)
	}
	if err := f.SaveRecord("../x", at(1)); err == nil {
		t.Fatal("a bad id was accepted")
	}
}

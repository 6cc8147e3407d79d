package storage

import "golang.org/x/sys/unix"

// FreeBytes is the space left to unprivileged users on the file system of
// dir.
func FreeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

module github.com/shoal-video/shoal

go 1.26.8

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/image"
	"github.com/bulkhead-os/bulkhead/builder/resolve"
)

func main() {
	name, version, out := os.Args[1], os.Args[2], os.Args[3]
	src := "/work/main"
	b, err := board.Load(filepath.Join(src, "boards"), name)
	if err != nil {
		panic(err)
	}
	c, _ := cache.Open(cache.DefaultRoot())
	s, _ := debian.SourcesFor("/", resolve.Release, os.Getenv(debian.MirrorEnv))
	start := time.Now()
	res, err := image.Run(context.Background(), image.Config{
		SrcDir: src, Board: b, LockFile: filepath.Join(src, "boards", name+".lock"),
		Name: "bulkhead", Version: version, Epoch: time.Unix(1764000000, 0).UTC(),
		WorkDir: filepath.Join(out, "work"), OutDir: filepath.Join(out, "deploy"),
		Cache: c, Sources: s, Compress: false,
		SigningKey: filepath.Join(src, "supervisor/bundle/testdata/dev-key.pem"),
		Overlay: overlay(),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(time.Since(start), res.Image, res.Bundle, res.Slot)
}

func overlay() []image.OverlayFile {
	if os.Getenv("VERBOSE") == "" {
		return nil
	}
	return []image.OverlayFile{{Path: "/etc/bulkhead/services.json", Data: []byte(`[{"name":"supervisor","path":"/usr/bin/supervisor","args":["-v"]}]`)}}
}

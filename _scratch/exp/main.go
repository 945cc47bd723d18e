package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/supervisor/update"
)

func main() {
	name, img, bundle, port := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	src := "/work/main"
	b, _ := board.Load(filepath.Join(src, "boards"), name)
	c, _ := cache.Open(cache.DefaultRoot())
	con, _ := os.Create("/tmp/ota/" + name + "-console.log")
	ctx := context.Background()
	m, err := qemu.Prepare(ctx, qemu.Config{Board: b, Image: img, Cache: c, LockFile: filepath.Join(src, "boards", name+".lock"),
		WorkDir: "/tmp/ota/" + name + "-vm", HostForward: []string{"tcp:127.0.0.1:" + port + "-:7070"}, Console: con, Bootargs: "panic=1", ExtraArgs: strings.Fields(os.Getenv("EXTRA"))})
	if err != nil {
		panic(err)
	}
	yaml := "api:\n  listen: \":7070\"\n  token: \"0123456789abcdef0123\"\nupdate:\n  health_deadline: 40s\n"
	if err := m.WriteBootFile(ctx, "bulkhead/device.yaml", []byte(yaml)); err != nil {
		panic(err)
	}
	if strings.HasPrefix(bundle, "inbox:") {
		t := time.Now()
		if err := m.WriteDataFile(ctx, "supervisor/inbox/new.bundle", strings.TrimPrefix(bundle, "inbox:")); err != nil {
			panic(err)
		}
		fmt.Println("wrote inbox", time.Since(t))
		bundle = "-"
	}
	start := time.Now()
	if err := m.Start(ctx); err != nil {
		panic(err)
	}
	defer m.PowerCut()
	re := regexp.MustCompile(`(?m)^bulkhead: ready .*trial=\d`)
	l, _, err := m.Wait(ctx, re, 0, 5*time.Minute)
	fmt.Println(time.Since(start), l, err)
	if bundle == "" || bundle == "-" {
		time.Sleep(time.Hour)
	}
	t0 := time.Now()
	o, err := update.Push(ctx, update.Options{Device: "127.0.0.1:" + port, Token: "0123456789abcdef0123", Bundle: bundle, Out: os.Stdout, Force: true})
	fmt.Println(time.Since(t0), o, err)
}

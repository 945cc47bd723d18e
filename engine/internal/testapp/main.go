// Command testapp is the one program inside the engine's test images: a
// static binary with a verb per behaviour the tests need (print, exit with
// a code, serve TCP, read and write files, dial out). It must stay free of
// cgo and of any dependency outside the standard library so the tests can
// cross-compile it for every board in seconds.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Println("usage: testapp echo|exit|sleep|serve|cat|write|ticker|dial|env|id|stderr ...")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "stderr":
		fmt.Fprintln(os.Stderr, strings.Join(args, " "))
	case "exit":
		n, _ := strconv.Atoi(args[0])
		fmt.Printf("exiting %d\n", n)
		os.Exit(n)
	case "sleep":
		fmt.Println("started")
		waitSignal()
	case "serve":
		serve(args[0])
	case "cat":
		for _, f := range args {
			b, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			os.Stdout.Write(b)
		}
	case "write":
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("wrote", args[0])
		if len(args) > 2 && args[2] == "sleep" {
			waitSignal()
		}
	case "ticker":
		n, _ := strconv.Atoi(args[0])
		for i := 1; n == 0 || i <= n; i++ {
			fmt.Printf("tick %d\n", i)
			time.Sleep(100 * time.Millisecond)
		}
	case "dial":
		c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Print(line)
	case "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
	case "id":
		h, _ := os.Hostname()
		wd, _ := os.Getwd()
		fmt.Printf("uid=%d gid=%d hostname=%s cwd=%s\n", os.Getuid(), os.Getgid(), h, wd)
	case "stdin":
		io.Copy(os.Stdout, os.Stdin)
	default:
		fmt.Fprintln(os.Stderr, "unknown verb", os.Args[1])
		os.Exit(2)
	}
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	s := <-ch
	fmt.Println("got", s)
}

func serve(port string) {
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on", port)
	go func() {
		waitSignal()
		os.Exit(0)
	}()
	h, _ := os.Hostname()
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		fmt.Fprintf(c, "hello from %s\n", h)
		fmt.Println("served", c.RemoteAddr())
		c.Close()
	}
}

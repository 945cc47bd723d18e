package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func init() { subcommands["publish"] = publishCmd }

// publishCmd pushes a board's bundle to an OCI registry tag as that board's
// entry of the tag's index (docs/update-protocol.md, section 2), keeping
// the other boards' entries, so every board can be published to one tag:
//
//	builder publish -board raspberrypi3 -ref registry.example.com/fleet/os:stable [-version v | -bundle f]
//
// Devices then update with `bulkheadctl update registry.example.com/fleet/os:stable`.
// Credentials come from the Docker configuration (docker login, credential
// helpers), as for crane and docker push.
func publishCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	board := fs.String("board", os.Getenv("BOARD"), "board whose deploy/<board>/ bundle to publish")
	version := fs.String("version", "", "version of the bundle in deploy/<board>/ (default: the newest there)")
	path := fs.String("bundle", "", "bundle file to publish instead of deploy/<board>/")
	src := fs.String("src", ".", "root of the Bulkhead source tree")
	ref := fs.String("ref", os.Getenv("REF"), "registry reference, e.g. registry.example.com/fleet/os:stable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ref == "" {
		return errors.New("publish: no registry reference: pass -ref registry.example.com/fleet/os:<tag>")
	}
	p, err := deployedBundle(*src, *board, *version, *path)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	m, _, err := bundle.Inspect(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("publish %s: %w", p, err)
	}
	h, err := bundle.Publish(ctx, *ref, p, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return err
	}
	fmt.Printf("published %s %s for %s to %s (index %s)\n", m.Name, m.Version, m.Board, *ref, h)
	return nil
}

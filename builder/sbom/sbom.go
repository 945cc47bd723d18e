// Package sbom writes the image's software bill of materials as an SPDX 2.3
// JSON document: one package for the image, which the document DESCRIBES and
// which CONTAINS every Debian package and Go module built into it.
//
// It owns the SPDX encoding (identifiers, namespace, package URLs, license
// expressions) and reads Go build information from compiled binaries. It
// must not decide what is in the image (the image package passes that in)
// and must not read clocks or the network: the same Document always gives
// the same bytes.
package sbom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Kind is the ecosystem of a package.
type Kind string

// The kinds of package an image contains.
const (
	Deb      Kind = "deb"
	GoModule Kind = "go-module"
)

// NoAssertion is SPDX's "the writer does not know / did not look".
const NoAssertion = "NOASSERTION"

// Document is the input of Write.
type Document struct {
	// Name identifies the image, e.g. "bulkhead-raspberrypi3-1.2.0"; it
	// names both the document and the image package.
	Name    string
	Version string
	Board   string
	// Namespace is the document's unique URI; empty derives it from Name,
	// Version, Board and the packages (see Write).
	Namespace string
	// Created is the build time, SOURCE_DATE_EPOCH, never the clock.
	Created time.Time
	// Creator is "Tool: ...", "Organization: ..." or "Person: ...";
	// empty means "Tool: bulkhead-builder".
	Creator  string
	Packages []Package
}

// Package is one component of the image.
type Package struct {
	Kind    Kind
	Name    string
	Version string
	// Arch is a Debian package's architecture (deb only).
	Arch string
	// Supplier is "Organization: ..." or "Person: ..."; empty means
	// NOASSERTION.
	Supplier string
	// License is an SPDX license expression (see LicenseExpression);
	// empty means NOASSERTION.
	License string
	// DownloadLocation is a URL, "NONE" or NOASSERTION (also when empty).
	DownloadLocation string
	// SHA256 is the hex digest of the artifact downloaded (the .deb).
	SHA256 string
	// PURL is the package URL; empty derives pkg:deb/debian/<name>@<version>?arch=<arch>
	// or pkg:golang/<module>@<version>.
	PURL string
}

// The SPDX 2.3 JSON shapes (https://spdx.github.io/spdx-spec/v2.3/), only
// the fields Bulkhead writes, in the order the specification lists them.
type spdxDoc struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
	ExtractedLicenses []spdxExtracted    `json:"hasExtractedLicensingInfos,omitempty"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID                string         `json:"SPDXID"`
	Name                  string         `json:"name"`
	VersionInfo           string         `json:"versionInfo,omitempty"`
	Supplier              string         `json:"supplier,omitempty"`
	DownloadLocation      string         `json:"downloadLocation"`
	FilesAnalyzed         bool           `json:"filesAnalyzed"`
	Checksums             []spdxChecksum `json:"checksums,omitempty"`
	LicenseConcluded      string         `json:"licenseConcluded"`
	LicenseDeclared       string         `json:"licenseDeclared"`
	CopyrightText         string         `json:"copyrightText"`
	ExternalRefs          []spdxRef      `json:"externalRefs,omitempty"`
	PrimaryPackagePurpose string         `json:"primaryPackagePurpose,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	SPDXElementID      string `json:"spdxElementId"`
	RelationshipType   string `json:"relationshipType"`
	RelatedSPDXElement string `json:"relatedSpdxElement"`
}

type spdxExtracted struct {
	LicenseID     string `json:"licenseId"`
	Name          string `json:"name"`
	ExtractedText string `json:"extractedText"`
}

const (
	docID   = "SPDXRef-DOCUMENT"
	imageID = "SPDXRef-Image"
	// namespaceBase prefixes every generated document namespace.
	namespaceBase = "https://github.com/bulkhead-os/bulkhead/spdx/"
)

var (
	// bulkheadNamespace roots the UUIDs of document namespaces, so that
	// they never collide with another tool's.
	bulkheadNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte(namespaceBase))
	sha256Hex         = regexp.MustCompile(`^[0-9a-f]{64}$`)
	idUnsafe          = regexp.MustCompile(`[^A-Za-z0-9.-]+`)
)

// Write encodes doc as an SPDX 2.3 JSON document. Packages are sorted (by
// kind, name, version, architecture) and identical duplicates dropped, so
// the order of doc.Packages does not matter. An empty Namespace becomes
// https://github.com/bulkhead-os/bulkhead/spdx/<name>-<uuid>, the UUID
// (version 5) hashing Name, Version, Board and every package's identity and
// digest: stable across rebuilds of the same inputs, different whenever the
// content differs, as SPDX requires of a namespace.
func Write(w io.Writer, doc Document) error {
	if doc.Name == "" {
		return fmt.Errorf("sbom: the document has no name: set Document.Name to the image name")
	}
	if doc.Created.IsZero() {
		return fmt.Errorf("sbom %s: no creation time: set Document.Created from SOURCE_DATE_EPOCH", doc.Name)
	}
	creator := doc.Creator
	if creator == "" {
		creator = "Tool: bulkhead-builder"
	}
	if !hasAnyPrefix(creator, "Tool: ", "Organization: ", "Person: ") {
		return fmt.Errorf("sbom %s: creator %q must start with \"Tool: \", \"Organization: \" or \"Person: \"", doc.Name, creator)
	}
	pkgs, err := normalizePackages(doc.Packages)
	if err != nil {
		return fmt.Errorf("sbom %s: %w", doc.Name, err)
	}

	ns := doc.Namespace
	if ns == "" {
		h := sha256.New()
		for _, s := range []string{doc.Name, doc.Version, doc.Board} {
			fmt.Fprintf(h, "%q\n", s)
		}
		for _, p := range pkgs {
			fmt.Fprintf(h, "%q %q %q %q %q %q\n", p.Kind, p.Name, p.Version, p.Arch, p.SHA256, p.PURL)
		}
		ns = namespaceBase + idUnsafe.ReplaceAllString(doc.Name, "-") + "-" + uuid.NewSHA1(bulkheadNamespace, h.Sum(nil)).String()
	}
	if u, err := url.Parse(ns); err != nil || u.Scheme == "" || strings.Contains(ns, "#") {
		return fmt.Errorf("sbom %s: namespace %q is not an absolute URI without a fragment", doc.Name, ns)
	}

	out := spdxDoc{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXID:            docID,
		Name:              doc.Name,
		DocumentNamespace: ns,
		CreationInfo: spdxCreationInfo{
			Created:  doc.Created.UTC().Format(time.RFC3339),
			Creators: []string{creator},
		},
	}
	out.Packages = append(out.Packages, spdxPackage{
		SPDXID:           imageID,
		Name:             doc.Name,
		VersionInfo:      doc.Version,
		Supplier:         NoAssertion,
		DownloadLocation: NoAssertion,
		LicenseConcluded: NoAssertion,
		LicenseDeclared:  NoAssertion,
		CopyrightText:    NoAssertion,
		// The JSON schema spells the purpose with "_", the tag-value
		// format with "-".
		PrimaryPackagePurpose: "OPERATING_SYSTEM",
	})
	out.Relationships = append(out.Relationships, spdxRelationship{docID, "DESCRIBES", imageID})
	refs := map[string]bool{}
	ids := map[string]bool{}
	for _, p := range pkgs {
		id := packageID(p)
		if ids[id] {
			return fmt.Errorf("sbom %s: two packages map to SPDX ID %s", doc.Name, id)
		}
		ids[id] = true
		sp := spdxPackage{
			SPDXID:           id,
			Name:             p.Name,
			VersionInfo:      p.Version,
			Supplier:         p.Supplier,
			DownloadLocation: p.DownloadLocation,
			LicenseConcluded: NoAssertion,
			LicenseDeclared:  p.License,
			CopyrightText:    NoAssertion,
			ExternalRefs:     []spdxRef{{"PACKAGE-MANAGER", "purl", p.PURL}},
		}
		if p.SHA256 != "" {
			sp.Checksums = []spdxChecksum{{"SHA256", p.SHA256}}
		}
		for _, r := range licenseRefs.FindAllString(p.License, -1) {
			refs[r] = true
		}
		out.Packages = append(out.Packages, sp)
		out.Relationships = append(out.Relationships, spdxRelationship{imageID, "CONTAINS", id})
	}
	refList := make([]string, 0, len(refs))
	for r := range refs {
		refList = append(refList, r)
	}
	sort.Strings(refList)
	// SPDX requires every LicenseRef used in the document to be defined in
	// it; the names come from Debian copyright files without an SPDX id.
	for _, r := range refList {
		name := strings.TrimPrefix(r, "LicenseRef-")
		out.ExtractedLicenses = append(out.ExtractedLicenses, spdxExtracted{
			LicenseID:     r,
			Name:          name,
			ExtractedText: fmt.Sprintf("The license a Debian machine-readable copyright file (usr/share/doc/<package>/copyright) names %q; it has no SPDX identifier. See that file in the package for the text.", name),
		})
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("sbom %s: %w", doc.Name, err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("sbom %s: %w", doc.Name, err)
	}
	return nil
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// normalizePackages fills defaults, validates every field and returns the
// packages sorted and without identical duplicates.
func normalizePackages(in []Package) ([]Package, error) {
	var out []Package
	for _, p := range in {
		if p.Name == "" {
			return nil, fmt.Errorf("a %s package has no name", p.Kind)
		}
		what := fmt.Sprintf("package %s %s", p.Name, p.Version)
		switch p.Kind {
		case Deb:
			if p.Arch == "" {
				return nil, fmt.Errorf("%s: a deb needs its architecture (Package.Arch)", what)
			}
		case GoModule:
			if p.Arch != "" {
				return nil, fmt.Errorf("%s: a Go module has no architecture", what)
			}
		default:
			return nil, fmt.Errorf("%s: kind %q is neither %q nor %q", what, p.Kind, Deb, GoModule)
		}
		if p.Supplier == "" {
			p.Supplier = NoAssertion
		} else if p.Supplier != NoAssertion && !hasAnyPrefix(p.Supplier, "Organization: ", "Person: ") {
			return nil, fmt.Errorf("%s: supplier %q must start with \"Organization: \" or \"Person: \"", what, p.Supplier)
		}
		if p.License == "" {
			p.License = NoAssertion
		} else if err := checkLicenseExpression(p.License); err != nil {
			return nil, fmt.Errorf("%s: license %q: %w: build it with LicenseExpression", what, p.License, err)
		}
		if p.DownloadLocation == "" {
			p.DownloadLocation = NoAssertion
		} else if err := checkDownloadLocation(p.DownloadLocation); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if p.SHA256 != "" && !sha256Hex.MatchString(p.SHA256) {
			return nil, fmt.Errorf("%s: SHA256 %q is not 64 lowercase hex digits", what, p.SHA256)
		}
		if p.PURL == "" {
			p.PURL = purl(p)
		} else if !strings.HasPrefix(p.PURL, "pkg:") {
			return nil, fmt.Errorf("%s: PURL %q does not start with \"pkg:\"", what, p.PURL)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i], out[j]) })
	dedup := out[:0]
	for i, p := range out {
		if i > 0 && !less(out[i-1], p) {
			if out[i-1] != p {
				return nil, fmt.Errorf("package %s %s %s listed twice with different details", p.Name, p.Version, p.Arch)
			}
			continue
		}
		dedup = append(dedup, p)
	}
	return dedup, nil
}

func less(a, b Package) bool {
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	if a.Version != b.Version {
		return a.Version < b.Version
	}
	return a.Arch < b.Arch
}

// packageID makes an SPDX identifier ([A-Za-z0-9.-]) that reads as the
// package and stays unique: sanitizing alone could merge "a+b" and "a.b",
// so a short digest of the exact identity follows.
func packageID(p Package) string {
	sum := sha256.Sum256([]byte(string(p.Kind) + "\x00" + p.Name + "\x00" + p.Version + "\x00" + p.Arch))
	readable := idUnsafe.ReplaceAllString(p.Name+"-"+p.Version, "-")
	return "SPDXRef-" + string(p.Kind) + "-" + strings.Trim(readable, "-") + "-" + hex.EncodeToString(sum[:4])
}

// checkDownloadLocation accepts what SPDX 2.3 section 7.7 allows: NONE,
// NOASSERTION or a URL (optionally a VCS one such as git+https://).
func checkDownloadLocation(loc string) error {
	if loc == "NONE" || loc == NoAssertion {
		return nil
	}
	u, err := url.Parse(loc)
	scheme := ""
	if err == nil {
		scheme = u.Scheme
		if i := strings.IndexByte(scheme, '+'); i >= 0 {
			scheme = scheme[i+1:]
		}
	}
	switch {
	case err != nil, u.Host == "":
	case scheme == "http", scheme == "https", scheme == "ftp", scheme == "sftp", scheme == "ssh":
		return nil
	}
	return fmt.Errorf("download location %q is not a URL, NONE or NOASSERTION: give the full URL the file was fetched from", loc)
}

package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Options describe the volume.
type Options struct {
	// Label is the volume label, at most 11 characters from the 8.3 set
	// plus space; it is upper-cased. Empty means no label ("NO NAME").
	Label string
	// VolumeID is the volume serial number (what Linux shows as the UUID,
	// e.g. "1A2B-3C4D"). Derive it from the image identity.
	VolumeID uint32
	// Time stamps every file, directory and the label. FAT stores local
	// wall-clock time without a zone; Build uses Time's UTC wall clock,
	// clamped to FAT's range 1980-2107.
	Time time.Time
	// HiddenSectors is the LBA the partition starts at, recorded in the
	// boot sector for firmware that wants it; 0 when unknown.
	HiddenSectors uint32
}

// File is one file to store. Directories are created implicitly from the
// paths.
type File struct {
	// Path is slash-separated and relative: "EFI/BOOT/BOOTX64.EFI".
	Path string
	// Data is the contents of a small file.
	Data []byte
	// Open streams the contents of a large file instead of Data; it is
	// called once, while Build writes that file, and must yield exactly
	// Size bytes. Size is needed up front because clusters are allocated
	// before any data is written.
	Open func() (io.ReadCloser, error)
	Size int64
}

func (f *File) size() int64 {
	if f.Open != nil {
		return f.Size
	}
	return int64(len(f.Data))
}

// Extent is where a file's bytes live, relative to the start of the
// filesystem. Files are contiguous, so one extent describes a whole file;
// an empty file has no data and a zero Extent.
type Extent struct {
	Offset, Length int64
}

const (
	attrVolumeID = 0x08
	attrDir      = 0x10
	attrArchive  = 0x20
	attrLongName = 0x0f
	mediaFixed   = 0xf8
	fatEOC       = 0x0fffffff
	maxFileSize  = 1<<32 - 1
	// maxDirEntries is the FAT limit on entries in one directory.
	maxDirEntries = 65536
)

// node is a file or directory of the tree being written.
type node struct {
	name     string
	dir      bool
	parent   *node
	children map[string]*node
	sorted   []*node // children in name order, once the tree is complete
	file     int     // index into files, for files
	size     int64
	short    [11]byte
	long     bool // needs long name entries
	first    uint32
	clusters uint32
}

// Build writes a FAT32 filesystem of size bytes holding files to w and
// returns the extent of every file, keyed by File.Path.
//
// Cluster allocation is fixed: the root directory gets cluster 2, then every
// other directory in depth-first name order, then the files in the order
// given, each contiguous. Files listed first get the lowest clusters, so the
// caller controls which sectors hold, say, the GRUB boot-state files; a
// 1024-byte file always occupies one contiguous run of sectors that GRUB's
// save_env can rewrite in place.
//
// Build writes every byte the filesystem depends on (boot sectors, FSInfo,
// both FATs in full, whole directory clusters, file data) and nothing else:
// free clusters, cluster slack and unused reserved sectors are not written.
// On a fresh sparse file those stay holes, and a bmap-based flash that skips
// them leaves whatever the medium held there, which no reader looks at. w
// must read as zeros only where Build does not write, which nothing reads.
func Build(w io.WriterAt, size int64, opt Options, files []File) (map[string]Extent, error) {
	g, err := chooseGeometry(size)
	if err != nil {
		return nil, fmt.Errorf("fat: %w", err)
	}
	label, err := volumeLabel(opt.Label)
	if err != nil {
		return nil, fmt.Errorf("fat: %w", err)
	}
	root, err := buildTree(files)
	if err != nil {
		return nil, fmt.Errorf("fat: %w", err)
	}
	b := &builder{w: w, g: g, files: files, label: label, opt: opt, ts: dosTime(opt.Time)}
	if err := b.layout(root); err != nil {
		return nil, fmt.Errorf("fat: %w", err)
	}
	if err := b.write(root); err != nil {
		return nil, fmt.Errorf("fat: %w", err)
	}
	return b.extents, nil
}

// volumeLabel returns the 11-byte label field, or nil for no label.
func volumeLabel(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	up := strings.ToUpper(s)
	if len(up) > 11 {
		return nil, fmt.Errorf("volume label %q is longer than 11 characters", s)
	}
	for i := 0; i < len(up); i++ {
		if up[i] != ' ' && !validShortChar(up[i]) {
			return nil, fmt.Errorf("volume label %q contains %q: use A-Z, 0-9, space and %s", s, up[i], shortSpecial)
		}
	}
	l := []byte("           ")
	copy(l, up)
	return l, nil
}

// buildTree turns the file list into a directory tree and checks names.
func buildTree(files []File) (*node, error) {
	root := &node{dir: true, children: map[string]*node{}}
	for i := range files {
		f := &files[i]
		if f.Open != nil && f.Data != nil {
			return nil, fmt.Errorf("file %q: set Data or Open, not both", f.Path)
		}
		if f.Size < 0 || f.size() > maxFileSize {
			return nil, fmt.Errorf("file %q: size %d is outside FAT's 0-4 GiB range", f.Path, f.size())
		}
		if strings.HasPrefix(f.Path, "/") || f.Path == "" {
			return nil, fmt.Errorf("file %q: path must be relative and non-empty, like EFI/BOOT/BOOTX64.EFI", f.Path)
		}
		parts := strings.Split(f.Path, "/")
		dir := root
		for j, name := range parts {
			if err := checkLongName(name); err != nil {
				return nil, fmt.Errorf("file %q: %w", f.Path, err)
			}
			child, ok := dir.children[name]
			last := j == len(parts)-1
			switch {
			case !ok && last:
				child = &node{name: name, parent: dir, file: i, size: f.size()}
			case !ok:
				child = &node{name: name, parent: dir, dir: true, children: map[string]*node{}}
			case last && child.dir, !last && !child.dir:
				return nil, fmt.Errorf("file %q: %q is both a file and a directory", f.Path, strings.Join(parts[:j+1], "/"))
			case last:
				return nil, fmt.Errorf("file %q is listed twice", f.Path)
			}
			dir.children[name] = child
			dir = child
		}
	}
	return root, sortTree(root, "")
}

// sortTree orders every directory's entries by name and refuses names that
// differ only in case, which FAT cannot tell apart.
func sortTree(d *node, path string) error {
	d.sorted = make([]*node, 0, len(d.children))
	for _, c := range d.children {
		d.sorted = append(d.sorted, c)
	}
	sort.Slice(d.sorted, func(i, j int) bool { return d.sorted[i].name < d.sorted[j].name })
	folded := map[string]string{}
	for _, c := range d.sorted {
		k := strings.ToUpper(c.name)
		if other, dup := folded[k]; dup {
			return fmt.Errorf("%q and %q differ only in letter case, which FAT treats as the same name", path+other, path+c.name)
		}
		folded[k] = c.name
		if c.dir {
			if err := sortTree(c, path+c.name+"/"); err != nil {
				return err
			}
		}
	}
	return assignShortNames(d.sorted)
}

type builder struct {
	w       io.WriterAt
	g       geometry
	files   []File
	label   []byte
	opt     Options
	ts      timestamp
	next    uint32 // next free cluster
	fat     []byte
	extents map[string]Extent
}

// dirEntries counts the 32-byte entries directory d needs.
func (b *builder) dirEntries(d *node) int {
	n := 2 // "." and ".."
	if d.parent == nil {
		n = 0
		if b.label != nil {
			n = 1
		}
	}
	for _, c := range d.sorted {
		n++
		if c.long {
			n += lfnEntryCount(c.name)
		}
	}
	return n
}

func (b *builder) clustersFor(bytes int64) uint32 {
	cs := b.g.clusterSize()
	return uint32((bytes + cs - 1) / cs)
}

// alloc gives n the next run of clusters; layout has checked that they exist.
func (b *builder) alloc(n *node, bytes int64) {
	n.clusters = b.clustersFor(bytes)
	if n.clusters > 0 {
		n.first = b.next
		b.next += n.clusters
	}
}

// layout assigns clusters: root, other directories depth-first, files in
// the caller's order.
func (b *builder) layout(root *node) error {
	b.next = 2
	var dirs []*node
	var walk func(d *node)
	walk = func(d *node) {
		dirs = append(dirs, d)
		for _, c := range d.sorted {
			if c.dir {
				walk(c)
			}
		}
	}
	walk(root)
	byFile := make([]*node, len(b.files))
	for _, d := range dirs {
		for _, c := range d.sorted {
			if !c.dir {
				byFile[c.file] = c
			}
		}
	}
	dirBytes := make([]int64, len(dirs))
	var need uint64
	for i, d := range dirs {
		n := b.dirEntries(d)
		if n > maxDirEntries {
			return fmt.Errorf("directory %q needs %d entries, FAT allows %d", pathOf(d), n, maxDirEntries)
		}
		dirBytes[i] = int64(max(n, 1)) * 32
		need += uint64(b.clustersFor(dirBytes[i]))
	}
	for _, f := range byFile {
		need += uint64(b.clustersFor(f.size))
	}
	if need > uint64(b.g.clusters) {
		cs := uint64(b.g.clusterSize())
		return fmt.Errorf("the files need %d bytes (%d MiB) in %d-byte clusters, a %d-byte FAT32 holds %d (%d MiB): raise the boot partition size in the board file",
			need*cs, (need*cs+1<<20-1)>>20, cs, int64(b.g.totalSectors)*sectorSize, uint64(b.g.clusters)*cs, uint64(b.g.clusters)*cs>>20)
	}
	for i, d := range dirs {
		b.alloc(d, dirBytes[i])
	}
	for _, f := range byFile {
		b.alloc(f, f.size)
	}
	b.extents = map[string]Extent{}
	for i, f := range byFile {
		e := Extent{}
		if f.size > 0 {
			e = Extent{Offset: b.g.clusterOffset(f.first), Length: f.size}
		}
		b.extents[b.files[i].Path] = e
	}
	b.buildFAT(dirs, byFile)
	return nil
}

func pathOf(n *node) string {
	if n.parent == nil {
		return "/"
	}
	p := n.name
	for d := n.parent; d.parent != nil; d = d.parent {
		p = d.name + "/" + p
	}
	return p
}

// buildFAT fills in the allocation table: one chain per allocation.
func (b *builder) buildFAT(dirs, files []*node) {
	b.fat = make([]byte, int64(b.g.fatSectors)*sectorSize)
	put := func(c, v uint32) { binary.LittleEndian.PutUint32(b.fat[4*c:], v) }
	// Entry 0 carries the media byte, entry 1 the end-of-chain marker with
	// the "clean unmount" and "no I/O error" bits set.
	put(0, 0x0fffff00|mediaFixed)
	put(1, fatEOC)
	for _, n := range append(append([]*node(nil), dirs...), files...) {
		for i := uint32(0); i < n.clusters; i++ {
			c := n.first + i
			if i == n.clusters-1 {
				put(c, fatEOC)
			} else {
				put(c, c+1)
			}
		}
	}
}

func (b *builder) writeAt(p []byte, off int64, what string) error {
	if _, err := b.w.WriteAt(p, off); err != nil {
		return fmt.Errorf("write %s at byte %d: %w", what, off, err)
	}
	return nil
}

// write emits everything in ascending offset order.
func (b *builder) write(root *node) error {
	boot := b.bootSector()
	info := b.fsInfo()
	for _, s := range []struct {
		sector int64
		data   []byte
		what   string
	}{{0, boot, "boot sector"}, {1, info, "FSInfo"}, {6, boot, "backup boot sector"}, {7, info, "backup FSInfo"}} {
		if err := b.writeAt(s.data, s.sector*sectorSize, s.what); err != nil {
			return err
		}
	}
	for i := 0; i < 2; i++ {
		if err := b.writeAt(b.fat, b.g.fatOffset(i), fmt.Sprintf("FAT %d", i+1)); err != nil {
			return err
		}
	}
	var dirErr error
	var walk func(d *node)
	walk = func(d *node) {
		if dirErr != nil {
			return
		}
		if dirErr = b.writeDir(d); dirErr != nil {
			return
		}
		for _, c := range d.sorted {
			if c.dir {
				walk(c)
			}
		}
	}
	walk(root)
	if dirErr != nil {
		return dirErr
	}
	for i := range b.files {
		if err := b.writeFile(&b.files[i]); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) bootSector() []byte {
	s := make([]byte, sectorSize)
	le := binary.LittleEndian
	copy(s[0:], []byte{0xeb, 0x58, 0x90}) // jump over the BPB, as DOS expects
	copy(s[3:11], "MSWIN4.1")             // the OEM name Microsoft recommends for compatibility
	le.PutUint16(s[11:], sectorSize)
	s[13] = byte(b.g.spc)
	le.PutUint16(s[14:], uint16(b.g.reserved))
	s[16] = 2 // FATs
	s[21] = mediaFixed
	le.PutUint16(s[24:], 63)  // sectors per track, only for CHS-era BIOSes
	le.PutUint16(s[26:], 255) // heads
	le.PutUint32(s[28:], b.opt.HiddenSectors)
	le.PutUint32(s[32:], b.g.totalSectors)
	le.PutUint32(s[36:], b.g.fatSectors)
	le.PutUint32(s[44:], 2) // root directory cluster
	le.PutUint16(s[48:], 1) // FSInfo sector
	le.PutUint16(s[50:], 6) // backup boot sector
	s[64] = 0x80            // drive number of a hard disk
	s[66] = 0x29            // extended boot signature: the next three fields are valid
	le.PutUint32(s[67:], b.opt.VolumeID)
	if b.label != nil {
		copy(s[71:82], b.label)
	} else {
		copy(s[71:82], "NO NAME    ")
	}
	copy(s[82:90], "FAT32   ")
	s[510], s[511] = 0x55, 0xaa
	return s
}

func (b *builder) fsInfo() []byte {
	s := make([]byte, sectorSize)
	le := binary.LittleEndian
	le.PutUint32(s[0:], 0x41615252)
	le.PutUint32(s[484:], 0x61417272)
	used := b.next - 2
	le.PutUint32(s[488:], b.g.clusters-used)
	next := b.next
	if used == b.g.clusters {
		next = 0xffffffff
	}
	le.PutUint32(s[492:], next)
	le.PutUint32(s[508:], 0xaa550000)
	return s
}

// writeDir writes all clusters of a directory, unused entries as zeros so
// that readers find the end-of-directory marker wherever the listing ends.
func (b *builder) writeDir(d *node) error {
	buf := make([]byte, int64(d.clusters)*b.g.clusterSize())
	i := 0
	entry := func() []byte { e := buf[i*32 : i*32+32]; i++; return e }
	if d.parent == nil {
		if b.label != nil {
			var l [11]byte
			copy(l[:], b.label)
			b.putShort(entry(), l, attrVolumeID, 0, 0)
		}
	} else {
		parent := d.parent.first
		if d.parent.parent == nil {
			// ".." of a first-level directory points at cluster 0,
			// meaning the root, whatever cluster the root is in.
			parent = 0
		}
		b.putShort(entry(), packShort(".", ""), attrDir, d.first, 0)
		b.putShort(entry(), packShort("..", ""), attrDir, parent, 0)
	}
	for _, c := range d.sorted {
		if c.long {
			n := lfnEntryCount(c.name)
			putLFN(buf[i*32:], c.name, c.short)
			i += n
		}
		if c.dir {
			b.putShort(entry(), c.short, attrDir, c.first, 0)
		} else {
			b.putShort(entry(), c.short, attrArchive, c.first, uint32(c.size))
		}
	}
	return b.writeAt(buf, b.g.clusterOffset(d.first), "directory "+pathOf(d))
}

func (b *builder) putShort(e []byte, name [11]byte, attr byte, cluster, size uint32) {
	le := binary.LittleEndian
	copy(e[0:11], name[:])
	e[11] = attr
	e[13] = b.ts.tenths
	le.PutUint16(e[14:], b.ts.time)
	le.PutUint16(e[16:], b.ts.date)
	le.PutUint16(e[18:], b.ts.date)
	le.PutUint16(e[20:], uint16(cluster>>16))
	le.PutUint16(e[22:], b.ts.time)
	le.PutUint16(e[24:], b.ts.date)
	le.PutUint16(e[26:], uint16(cluster))
	le.PutUint32(e[28:], size)
}

// writeFile copies one file's data to its clusters.
func (b *builder) writeFile(f *File) error {
	ext := b.extents[f.Path]
	if f.Open == nil {
		if len(f.Data) == 0 {
			return nil
		}
		return b.writeAt(f.Data, ext.Offset, "file "+f.Path)
	}
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("file %q: open: %w", f.Path, err)
	}
	done, err := b.copyFile(rc, f, ext.Offset)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("file %q: close: %w", f.Path, cerr)
	}
	if err == nil && done != f.Size {
		err = fmt.Errorf("file %q: the source held %d bytes, Size promised %d", f.Path, done, f.Size)
	}
	return err
}

func (b *builder) copyFile(r io.Reader, f *File, off int64) (int64, error) {
	buf := make([]byte, 1<<20)
	var done int64
	for {
		n, err := io.ReadFull(r, buf)
		if int64(n) > f.Size-done {
			return done, fmt.Errorf("file %q: the source holds more than the %d bytes Size promised", f.Path, f.Size)
		}
		if n > 0 {
			if err := b.writeAt(buf[:n], off+done, "file "+f.Path); err != nil {
				return done, err
			}
			done += int64(n)
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return done, nil
		default:
			return done, fmt.Errorf("file %q: read: %w", f.Path, err)
		}
	}
}

// timestamp is a time in FAT's directory entry encoding.
type timestamp struct {
	date, time uint16
	tenths     byte
}

func dosTime(t time.Time) timestamp {
	t = t.UTC()
	switch {
	case t.Year() < 1980:
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	case t.Year() > 2107:
		t = time.Date(2107, 12, 31, 23, 59, 59, 0, time.UTC)
	}
	return timestamp{
		date:   uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day()),
		time:   uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2),
		tenths: byte(t.Second()%2*100 + t.Nanosecond()/10_000_000),
	}
}

// Package watchdog drives a Linux hardware watchdog through /dev/watchdog*:
// arming, setting the timeout, pinging and handing the running timer from the
// initramfs to PID 1.
//
// The package owns the ioctl numbers and the close semantics; it does not
// decide when the system is healthy (see Feeder.Healthy).
//
// Close semantics, verified in drivers/watchdog/watchdog_dev.c
// (watchdog_release, Linux 4.x to 6.x): on close the core stops the timer only
// if the magic character 'V' was written just before, or if the driver does
// not set WDIOF_MAGICCLOSE in its watchdog_info; otherwise it pings once and
// leaves the timer running, and with nowayout=1 watchdog_stop fails and the
// timer runs regardless. Debian builds with CONFIG_WATCHDOG_NOWAYOUT unset
// (nowayout=0), and the drivers Bulkhead arms, i6300esb and bcm2835_wdt, both
// set WDIOF_MAGICCLOSE, so closing without 'V' keeps the countdown going and
// the board resets unless the next program reopens and pings the device
// within the timeout. For a driver without WDIOF_MAGICCLOSE a close would
// stop the timer; MagicClose reports this so the caller can keep the file
// descriptor open across exec instead (see Device.Inherit and FromEnv).
package watchdog

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ioctl numbers from include/uapi/linux/watchdog.h, spelled out with the
// generic _IOC encoding used by arm, arm64 and x86 (dir<<30 | size<<16 |
// type<<8 | nr, dir 1 = write, 2 = read) so the values can be checked against
// the header by eye:
//
//	WDIOC_GETSUPPORT  _IOR('W', 0, struct watchdog_info) = 0x80285700 (40-byte struct)
//	WDIOC_KEEPALIVE   _IOR('W', 5, int)                  = 0x80045705
//	WDIOC_SETTIMEOUT  _IOWR('W', 6, int)                 = 0xc0045706
//	WDIOC_GETTIMEOUT  _IOR('W', 7, int)                  = 0x80045707
const (
	ioctlGetSupport = 0x80285700
	ioctlKeepAlive  = 0x80045705
	ioctlSetTimeout = 0xc0045706
	ioctlGetTimeout = 0x80045707

	// optMagicClose is WDIOF_MAGICCLOSE: the driver honours the 'V' before close.
	optMagicClose = 0x0100
)

// Environment variables through which the initramfs tells PID 1 that it
// armed a watchdog, and, when the descriptor had to stay open, which one.
const (
	EnvDevice = "BULKHEAD_WATCHDOG"
	EnvFD     = "BULKHEAD_WATCHDOG_FD"
)

// info mirrors struct watchdog_info.
type info struct {
	Options         uint32
	FirmwareVersion uint32
	Identity        [32]byte
}

// Device is an open watchdog device. Opening one starts its timer.
type Device struct {
	fd   int
	path string
}

// Open opens and thereby arms the watchdog at path, e.g. /dev/watchdog.
// The descriptor is raw (no *os.File) so that no finalizer can close it
// behind our back before it is handed across exec.
func Open(path string) (*Device, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog %s: open: %w", path, err)
	}
	return &Device{fd: fd, path: path}, nil
}

// FromFD adopts a descriptor inherited from the initramfs.
func FromFD(fd int, path string) *Device {
	unix.CloseOnExec(fd)
	return &Device{fd: fd, path: path}
}

// FromEnv takes over the watchdog the initramfs armed, as described by the
// environment (see Handover). It returns nil, nil when no watchdog was armed.
// The variables are removed so that services do not inherit them.
func FromEnv() (*Device, error) {
	path := os.Getenv(EnvDevice)
	fdText := os.Getenv(EnvFD)
	os.Unsetenv(EnvDevice)
	os.Unsetenv(EnvFD)
	if path == "" {
		return nil, nil
	}
	if fdText != "" {
		fd, err := strconv.Atoi(fdText)
		if err != nil || fd < 0 {
			return nil, fmt.Errorf("watchdog %s: bad %s=%q", path, EnvFD, fdText)
		}
		return FromFD(fd, path), nil
	}
	return Open(path)
}

// Path is the device path the watchdog was opened from.
func (d *Device) Path() string { return d.path }

// SetTimeout asks the driver for a timeout in seconds and returns the one it
// chose (drivers round to what their hardware can count).
func (d *Device) SetTimeout(seconds int) (int, error) {
	v := int32(seconds)
	if err := d.ioctl(ioctlSetTimeout, unsafe.Pointer(&v)); err != nil {
		return 0, fmt.Errorf("watchdog %s: set timeout %ds: %w", d.path, seconds, err)
	}
	return int(v), nil
}

// Timeout returns the current timeout in seconds.
func (d *Device) Timeout() (int, error) {
	var v int32
	if err := d.ioctl(ioctlGetTimeout, unsafe.Pointer(&v)); err != nil {
		return 0, fmt.Errorf("watchdog %s: get timeout: %w", d.path, err)
	}
	return int(v), nil
}

// Ping restarts the countdown.
func (d *Device) Ping() error {
	var dummy int32
	if err := d.ioctl(ioctlKeepAlive, unsafe.Pointer(&dummy)); err != nil {
		// Some drivers lack WDIOF_KEEPALIVEPING; a write is the universal ping.
		if _, werr := unix.Write(d.fd, []byte{0}); werr != nil {
			return fmt.Errorf("watchdog %s: ping: %w", d.path, err)
		}
	}
	return nil
}

// Identity returns the driver's name and whether it honours magic close,
// i.e. whether Close leaves the timer running.
func (d *Device) Identity() (name string, magicClose bool, err error) {
	var wi info
	if err := d.ioctl(ioctlGetSupport, unsafe.Pointer(&wi)); err != nil {
		return "", false, fmt.Errorf("watchdog %s: get support: %w", d.path, err)
	}
	n := 0
	for n < len(wi.Identity) && wi.Identity[n] != 0 {
		n++
	}
	return string(wi.Identity[:n]), wi.Options&optMagicClose != 0, nil
}

// Close closes the device without the magic character, so a driver with
// WDIOF_MAGICCLOSE keeps counting down (see the package comment).
func (d *Device) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return fmt.Errorf("watchdog %s: close: %w", d.path, err)
	}
	return nil
}

// Disarm writes the magic 'V' and closes, stopping the timer where the
// driver and nowayout allow it. PID 1 uses this before halt and power-off,
// where a reset would undo what the user asked for.
func (d *Device) Disarm() error {
	if d.fd < 0 {
		return nil
	}
	_, werr := unix.Write(d.fd, []byte("V"))
	cerr := d.Close()
	if werr != nil {
		return fmt.Errorf("watchdog %s: magic close: %w", d.path, werr)
	}
	return cerr
}

// Handover prepares the running watchdog for the next program started with
// exec and returns the environment entries that describe it to FromEnv.
// With magic close the device is pinged and closed, leaving the timer
// running; without it the descriptor is kept open across exec, since a
// close would stop the timer.
func (d *Device) Handover() ([]string, error) {
	if err := d.Ping(); err != nil {
		return nil, err
	}
	_, magic, err := d.Identity()
	if err != nil || magic {
		// Drivers answer GETSUPPORT universally; if one does not, closing is
		// still the safe default for the two drivers Bulkhead arms.
		if cerr := d.Close(); cerr != nil {
			return nil, cerr
		}
		return []string{EnvDevice + "=" + d.path}, nil
	}
	if err := d.inherit(); err != nil {
		return nil, err
	}
	return []string{EnvDevice + "=" + d.path, EnvFD + "=" + strconv.Itoa(d.fd)}, nil
}

func (d *Device) inherit() error {
	if _, err := unix.FcntlInt(uintptr(d.fd), unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("watchdog %s: keep open across exec: %w", d.path, err)
	}
	return nil
}

func (d *Device) ioctl(req uintptr, arg unsafe.Pointer) error {
	if d.fd < 0 {
		return errors.New("device is closed")
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

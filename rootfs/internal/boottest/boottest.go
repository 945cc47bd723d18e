// Package boottest holds the boot test of the two device mains: the
// initramfs /init and PID 1 run for real, each as PID 1 of a PID namespace,
// on a loop device laid out like a Bulkhead disk. Only the kernel, its
// modules and the hardware watchdog are missing; the QEMU tests in tests/
// cover those.
//
// The package has no non-test code.
package boottest

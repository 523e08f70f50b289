# cairn — see README.md. `make demo` and `make test` install what they need.
SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)

# Debian packages: to build, to run the tests, to run the demo.
BUILD_PACKAGES := pkg-config libostree-dev libarchive-dev libssl-dev libgpgme-dev
TEST_PACKAGES := $(BUILD_PACKAGES) ostree fsverity erofs-utils attr e2fsprogs util-linux tar gzip xz-utils zstd \
	gnupg python3 python3-cryptography busybox-static strace nginx-light curl iproute2 \
	buildah podman umoci skopeo libcap2-bin
DEMO_PACKAGES := $(BUILD_PACKAGES) busybox-static ostree python3 nginx-light
# QEMU comes from bookworm-backports (scripts/install-backports.sh says why).
VM_BACKPORTS := qemu-system-x86
VM_PACKAGES := $(BUILD_PACKAGES) e2fsprogs xz-utils busybox-static gzip debootstrap \
	ovmf systemd-boot-efi mtools dosfstools fdisk nginx-light socat python3 buildah
BENCH_PACKAGES := $(TEST_PACKAGES) debootstrap time openssl

.PHONY: all build release install demo demo-boot test test-vm test-vm-full prepare-root bench-commit bench-composefs bench-deploy bench-pull bench-oci bench-storage bench-image-store bench-startup clean

PREFIX ?= /usr/local

all: build

build:
	@scripts/install-packages.sh $(BUILD_PACKAGES)
	swift build

release:
	@scripts/install-packages.sh $(BUILD_PACKAGES)
	swift build -c release

# cairn (the front end, which answers status, image digest and --version
# itself; one static executable) and cairn-full (every other command, with
# the Swift runtime linked in; the front end runs it from
# $(PREFIX)/libexec/cairn); the static
# cairn-prepare-root, its default configuration, and the dracut and
# initramfs-tools integrations.
install: prepare-root
	scripts/build-static.sh cairn .build/static/cairn
	swift build -c release --static-swift-stdlib --product cairn-full
	install -D -m 0755 .build/static/cairn $(DESTDIR)$(PREFIX)/bin/cairn
	install -D -m 0755 .build/release/cairn-full $(DESTDIR)$(PREFIX)/libexec/cairn/cairn-full
	install -D -m 0755 .build/initramfs/cairn-prepare-root $(DESTDIR)/usr/lib/cairn/cairn-prepare-root
	install -D -m 0644 Config/prepare-root.conf $(DESTDIR)/usr/share/cairn/prepare-root.conf
	install -D -m 0755 initramfs/dracut/50cairn/module-setup.sh $(DESTDIR)/usr/lib/dracut/modules.d/50cairn/module-setup.sh
	install -D -m 0644 initramfs/dracut/50cairn/cairn-prepare-root.service $(DESTDIR)/usr/lib/dracut/modules.d/50cairn/cairn-prepare-root.service
	install -D -m 0755 initramfs/initramfs-tools/hooks/cairn $(DESTDIR)/usr/share/initramfs-tools/hooks/cairn
	install -D -m 0755 initramfs/initramfs-tools/scripts/local-bottom/cairn $(DESTDIR)/usr/share/initramfs-tools/scripts/local-bottom/cairn
	# Staged deployments and boot assessment: the units, enabled by links
	# in /usr/lib (on by default, as a package's presets would), and the
	# health checks they run.
	install -d $(DESTDIR)/usr/lib/systemd/system/multi-user.target.wants $(DESTDIR)/usr/lib/systemd/system/boot-complete.target.requires
	for unit in cairn-finalize-staged.service cairn-health-check.service; do \
		sed 's|@bindir@|$(PREFIX)/bin|g' systemd/$$unit > $(DESTDIR)/usr/lib/systemd/system/$$unit && \
		chmod 0644 $(DESTDIR)/usr/lib/systemd/system/$$unit || exit 1; \
	done
	ln -sfn ../cairn-finalize-staged.service $(DESTDIR)/usr/lib/systemd/system/multi-user.target.wants/cairn-finalize-staged.service
	ln -sfn ../cairn-health-check.service $(DESTDIR)/usr/lib/systemd/system/multi-user.target.wants/cairn-health-check.service
	ln -sfn ../cairn-health-check.service $(DESTDIR)/usr/lib/systemd/system/boot-complete.target.requires/cairn-health-check.service
	install -d $(DESTDIR)/usr/lib/cairn/health.d
	install -m 0755 health.d/* $(DESTDIR)/usr/lib/cairn/health.d/

demo:
	@scripts/install-packages.sh $(DEMO_PACKAGES)
	swift build
	scripts/demo.sh .build/debug/cairn

# Every test: unit tests, CLI tests against real libostree and Debian's
# ostree, host tests of cairn-prepare-root with real mounts, then the VM boot test.
test:
	@scripts/install-packages.sh $(TEST_PACKAGES) $(VM_PACKAGES)
	@scripts/install-backports.sh $(VM_BACKPORTS)
	swift build --build-tests
	@mkdir -p .build/tmp
	# SwiftPM leaves empty TemporaryDirectory.* folders in $$TMPDIR: keep them in the build folder.
	TMPDIR=$(CURDIR)/.build/tmp swift test --skip-build
	$(MAKE) --no-print-directory test-vm

# cairn-prepare-root as the initramfs needs it: one static, stripped binary.
prepare-root:
	@scripts/install-packages.sh $(BUILD_PACKAGES)
	scripts/build-prepare-root.sh .build/initramfs/cairn-prepare-root

# The VM tests: the busybox boot test (the test plays the boot loader:
# quick tamper and distribution-initramfs cases), then the real machine
# (Tests/VM/machine-test.sh): Debian 12 with systemd, booted by OVMF and
# systemd-boot, upgraded, rolled back and power-cut from the inside.
test-vm: prepare-root
	@scripts/install-packages.sh $(VM_PACKAGES)
	@scripts/install-backports.sh $(VM_BACKPORTS)
	swift build --product cairn && swift build --product cairn-full
	Tests/VM/boot-test.sh .build/debug/cairn .build/initramfs/cairn-prepare-root
	Tests/VM/machine-test.sh .build/debug/cairn .build/initramfs/cairn-prepare-root

# The same with every repetition (five power cuts instead of two).
test-vm-full: prepare-root
	@scripts/install-packages.sh $(VM_PACKAGES)
	@scripts/install-backports.sh $(VM_BACKPORTS)
	swift build --product cairn && swift build --product cairn-full
	Tests/VM/boot-test.sh .build/debug/cairn .build/initramfs/cairn-prepare-root
	Tests/VM/machine-test.sh .build/debug/cairn .build/initramfs/cairn-prepare-root --full

# The same flow for a person to watch: every boot's console is printed.
demo-boot: prepare-root
	@scripts/install-packages.sh $(VM_PACKAGES)
	@scripts/install-backports.sh $(VM_BACKPORTS)
	swift build --product cairn && swift build --product cairn-full
	Tests/VM/boot-test.sh .build/debug/cairn .build/initramfs/cairn-prepare-root --watch

bench-commit:
	@scripts/install-packages.sh $(BENCH_PACKAGES)
	swift build -c release
	scripts/bench-commit.sh .build/release/cairn

bench-oci:
	@scripts/install-packages.sh $(BENCH_PACKAGES)
	swift build -c release
	scripts/bench_oci.py .build/release/cairn

bench-storage:
	@scripts/install-packages.sh $(BENCH_PACKAGES)
	swift build -c release
	scripts/bench_oci_storage.py .build/release/cairn

bench-image-store:
	@scripts/install-packages.sh $(BENCH_PACKAGES)
	scripts/bench_image_store.py

bench-composefs:
	@scripts/install-packages.sh $(BENCH_PACKAGES)
	swift build -c release
	scripts/bench_composefs.py .build/release/cairn

bench-deploy:
	@scripts/install-packages.sh $(BENCH_PACKAGES) busybox-static
	swift build -c release
	scripts/bench_deploy.py .build/release/cairn

bench-pull:
	@scripts/install-packages.sh $(BENCH_PACKAGES) busybox-static
	swift build -c release
	scripts/bench_pull.py .build/release/cairn

# Start-up as installed: `make install` into a scratch folder, then status
# of a sysroot with 10 deployments and image digest of a 10 MB image.
bench-startup:
	@scripts/install-packages.sh $(BENCH_PACKAGES)
	scripts/bench_startup.py

clean:
	rm -rf .build

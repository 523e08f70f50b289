#!/usr/bin/env python3
"""Start-up of the commands a machine runs often, as `make install` installs
cairn, side by side with the baseline and peers in one run.

usage: bench_startup.py [ROUNDS]

`make install DESTDIR=<scratch> PREFIX=/usr/local`, then, interleaved,
ROUNDS runs (default 50) of each of:
  - `cairn status --sysroot S` on a sysroot with 10 deployments (10 signed
    commits, the sysroot trusting their key, so each row verifies), against
    `cairn-full status` (the same command in the program that links
    libostree, GLib, gpgme, libarchive and Foundation, which is what `cairn`
    was before the front end) and `ostree admin status` on the same sysroot;
  - `cairn image digest` of a 10 MB composefs image (from a dump of
    synthetic entries), against `cairn-full image digest` and `fsverity
    digest`.
Wall time: medians, from Python's spawn to the exit (`/bin/true` is shown
for that floor). Peak memory: `/usr/bin/time -f %M` of one run
(bench_measure.py says why not wait4). Markdown on stdout. Goal (issue 15): under 10 ms and 15 MiB.
"""
import os, platform, shutil, statistics, subprocess, sys, tempfile, time

top = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(top, "scripts"))
import bench_measure  # noqa: E402


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw).stdout


def wall(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def peak_mib(cmd):
    return bench_measure.run(cmd)[1]


def sysroot_with_ten(cairn, work):
    sys_ = os.path.join(work, "sysroot")
    repo = os.path.join(sys_, "ostree/repo")
    sh([cairn, "keygen", "--output", os.path.join(work, "key")])
    sh([cairn, "sysroot", "init", sys_, "--stateroot", "os"])
    sh([cairn, "trust", "add", "--sysroot", sys_, os.path.join(work, "key.pub")])
    for i in range(10):
        tree = os.path.join(work, "tree")
        shutil.rmtree(tree, ignore_errors=True)
        sh([os.path.join(top, "scripts/make-sample-tree.sh"), tree, "%d.0" % i])
        os.makedirs(os.path.join(tree, "usr/lib/modules/6.12.0"), exist_ok=True)
        for name in ("vmlinuz", "initramfs.img"):
            with open(os.path.join(tree, "usr/lib/modules/6.12.0", name), "w") as f:
                f.write("kernel\n")
        sh([cairn, "commit", "--repo", repo, "-b", "os/x", "--add-metadata-string", "version=%d.0" % i,
            "--sign-key", os.path.join(work, "key.secret"), tree])
        sh([cairn, "deploy", "--sysroot", sys_, "os/x"])
        sh([cairn, "pin", "--sysroot", sys_, "0"])
    shown = sh([cairn, "status", "--sysroot", sys_])
    assert shown.count("Trust: Good ed25519 signature") == 10, shown
    return sys_


def ten_mb_image(cairn, work):
    dump = os.path.join(work, "image.dump")
    with open(dump, "w") as f:
        f.write("/ 4096 40755 2 0 0 0 0.0 - - -\n")
        n = 0
        for d in range(170):
            f.write("/d%03d 4096 40755 2 0 0 0 1700000000.0 - - -\n" % d)
            for i in range(250):
                digest = "%064x" % (n * 2654435761 + 1)
                f.write("/d%03d/file-%03d %d 100644 1 0 0 0 1700000000.0 %s/%s - %s\n"
                        % (d, i, 4096 + n, digest[:2], digest[2:], digest))
                n += 1
    image = os.path.join(work, "image.cfs")
    sh([cairn, "image", "create", "--from-dump", dump, image])
    size = os.path.getsize(image)
    assert size >= 10 * 1000 * 1000, size
    return image, size


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    work = tempfile.mkdtemp(prefix="cairn-bench-startup.", dir="/var/tmp")
    try:
        root = os.path.join(work, "root")
        subprocess.run(["make", "-C", top, "--no-print-directory", "install", "DESTDIR=" + root, "PREFIX=/usr/local"],
                       check=True, stdout=subprocess.DEVNULL)
        cairn = os.path.join(root, "usr/local/bin/cairn")
        full = os.path.join(root, "usr/local/libexec/cairn/cairn-full")
        sys_ = sysroot_with_ten(cairn, work)
        image, size = ten_mb_image(cairn, work)
        cases = [
            ("status", [
                ("`cairn status` (front end)", [cairn, "status", "--sysroot", sys_]),
                ("`cairn-full status` (baseline: the whole program)", [full, "status", "--sysroot", sys_]),
                ("`ostree admin status` (peer)", ["ostree", "admin", "--sysroot=" + sys_, "status"]),
            ]),
            ("digest", [
                ("`cairn image digest` (front end)", [cairn, "image", "digest", image]),
                ("`cairn-full image digest` (baseline)", [full, "image", "digest", image]),
                ("`fsverity digest` (peer)", ["fsverity", "digest", image]),
            ]),
            ("floor", [("`/bin/true`", ["/bin/true"])]),
        ]
        # The outputs agree before anything is timed.
        assert sh(cases[0][1][0][1]) == sh(cases[0][1][1][1])
        assert sh(cases[1][1][0][1]) == sh(cases[1][1][1][1])
        assert sh(cases[1][1][0][1]).strip() == sh(cases[1][1][2][1]).split()[0].split(":")[-1]
        times = {name: [] for _, group in cases for name, _ in group}
        for _ in range(rounds):
            for _, group in cases:
                for name, cmd in group:
                    times[name].append(wall(cmd))
        print("%s, %s, %d CPUs; %d rounds, interleaved; sysroot with 10 deployments; image %.1f MB\n"
              % (time.strftime("%Y-%m-%d"), platform.node(), os.cpu_count(), rounds, size / 1e6))
        print("| command | wall median (ms) | peak RSS (MiB) |")
        print("|---|---|---|")
        for _, group in cases:
            for name, cmd in group:
                print("| %s | %.2f | %.1f |" % (name, statistics.median(times[name]) * 1000, peak_mib(cmd)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

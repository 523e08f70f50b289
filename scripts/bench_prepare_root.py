#!/usr/bin/env python3
"""Wall time of the whole `cairn-prepare-root` (signed mode) on the deployment
of a real OS tree, digest computed in userspace: this host has no fs-verity,
which signed mode requires, so the program timed must be a test build (with
CAIRN_TEST_KNOBS) and CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE=1 is set; the
digest check itself is the same, only the digest is not the kernel's.

usage: bench_prepare_root.py CAIRN PREPARE_ROOT [RUNS] [COPIES]

CAIRN is the cairn CLI (to build the sysroot), PREPARE_ROOT the program to
time: a static release build with the test switch compiled in, which
scripts/build-prepare-root.sh refuses to make, so built apart with

  swift build -c release --scratch-path .build-bench --product cairn-prepare-root \\
      -Xswiftc -static-executable -Xswiftc -DCAIRN_TEST_KNOBS \\
      -Xlinker --gc-sections -Xlinker -Bstatic -Xlinker -lcrypto

(.build-bench/release/cairn-prepare-root; never put it in an initramfs). The tree is
the Debian minbase root of bench_commit.py with a fake kernel file, committed
signed into a fresh sysroot and deployed (not timed). Each run is a fresh
`unshare -m --propagation private` namespace; the time is taken inside it
around the program alone (page cache warm), median of RUNS. COPIES > 0 adds
that many hard-linked copies of /usr/lib and /usr/share under
/usr/share/bench-copy-N, for a bigger image (18 gives about 10 MB).
"""
import os, platform, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
import bench_commit  # noqa: E402


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def main():
    cairn = os.path.realpath(sys.argv[1])
    prog = os.path.realpath(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 21
    copies = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if "TEST BUILD" not in subprocess.run([prog, "--help"], capture_output=True, text=True).stdout:
        sys.exit("%s is not a test build (CAIRN_TEST_KNOBS): signed mode needs fs-verity, which this kernel lacks; see --help of this script" % prog)
    bench_commit.ensure_tree()
    work = tempfile.mkdtemp(dir="/var/tmp", prefix="cairn-bench-prepare-root-")
    try:
        tree = os.path.join(work, "tree")
        sh("cp", "-a", bench_commit.TREE, tree)
        os.makedirs(os.path.join(tree, "usr/lib/modules/6.1.0"), exist_ok=True)
        with open(os.path.join(tree, "usr/lib/modules/6.1.0/vmlinuz"), "w") as f:
            f.write("not a kernel\n")
        if copies:
            src = os.path.join(work, "copy-src")
            os.makedirs(src)
            sh("cp", "-al", os.path.join(tree, "usr/lib"), os.path.join(tree, "usr/share"), src)
        for n in range(copies):
            sh("cp", "-al", src, os.path.join(tree, "usr/share/bench-copy-%d" % n))
        entries = sum(len(f) + len(d) for _, d, f in os.walk(tree))
        sys_ = os.path.join(work, "sys")
        sh(cairn, "keygen", "--output", os.path.join(work, "key"))
        sh(cairn, "sysroot", "init", sys_, "--stateroot", "os")
        sh(cairn, "commit", "--repo", sys_ + "/ostree/repo", "-b", "os/x", "--sign-key", os.path.join(work, "key.secret"), tree)
        sh(cairn, "deploy", "--sysroot", sys_, "os/x", "--karg", "root=/dev/vda")
        entry = [l for l in open(subprocess.run(["sh", "-c", "ls %s/boot/loader/entries/*.conf" % sys_], capture_output=True, text=True).stdout.strip())
                 if l.startswith("options ")][0][len("options "):].strip()
        image = subprocess.run(["sh", "-c", "echo %s/ostree/deploy/os/deploy/*.0/.ostree.cfs" % sys_], capture_output=True, text=True).stdout.strip()
        conf = os.path.join(work, "prepare-root.conf")
        with open(conf, "w") as f:
            f.write("[composefs]\nenabled = signed\nkeypath = %s/key.pub\n" % work)
        run = os.path.join(work, "run")
        os.makedirs(run)
        script = r'''
            s=$(date +%s%N)
            "$PROG" --cmdline "$CMDLINE" --config "$CONF" --run-dir "$RUN" --kmsg none "$SYS" 2>"$RUN/log" || { cat "$RUN/log" >&2; exit 1; }
            e=$(date +%s%N)
            cat /sysroot/usr/lib/os-release >/dev/null 2>&1; cat "$SYS/usr/lib/os-release" >/dev/null || exit 1
            echo $(( (e - s) / 1000 )) $(sed -n 's/.* in \([0-9.]*\) ms$/\1/p' "$RUN/log")
            '''
        env = dict(os.environ, PROG=prog, CMDLINE=entry, CONF=conf, RUN=run, SYS=sys_, CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE="1")
        outer, inner, own = [], [], []
        for i in range(runs + 1):
            t = time.perf_counter()
            r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env, capture_output=True, text=True)
            dt = time.perf_counter() - t
            if r.returncode != 0:
                sys.exit("run failed: " + r.stderr)
            us, ms = r.stdout.split()
            if i == 0:
                continue  # warm-up
            outer.append(dt * 1000)
            inner.append(int(us) / 1000)
            own.append(float(ms))
        size = os.path.getsize(image)
        digest_t = []
        for _ in range(5):
            t = time.perf_counter()
            sh(cairn, "image", "digest", image)
            digest_t.append((time.perf_counter() - t) * 1000)
    finally:
        subprocess.run(["chattr", "-R", "-f", "-i", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    print("%s, %d cores, %s; minbase tree %d entries, image %.1f MB; %d runs (after one warm-up)\n"
          % (platform.node(), os.cpu_count(), time.strftime("%Y-%m-%d"), entries, size / 1e6, runs))
    print("| cairn-prepare-root, signed, userspace digest | median (ms) | min | max |")
    print("|---|---|---|---|")
    print("| whole program (fork+exec to exit) | %.1f | %.1f | %.1f |" % (statistics.median(inner), min(inner), max(inner)))
    print("| as logged by the program | %.1f | %.1f | %.1f |" % (statistics.median(own), min(own), max(own)))
    print("| unshare + sh + program (outer) | %.1f | %.1f | %.1f |" % (statistics.median(outer), min(outer), max(outer)))
    print("\nfor scale: `cairn image digest` of the same image, median %.1f ms" % statistics.median(digest_t))


if __name__ == "__main__":
    main()

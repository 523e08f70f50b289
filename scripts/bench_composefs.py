#!/usr/bin/env python3
"""Composefs benchmarks, each side by side with its baseline in one run.

usage: bench_composefs.py CAIRN [ROUNDS]

1. fs-verity digest of a 1 GiB file (`cairn image digest`) vs
   `openssl dgst -sha256` of the same file (page cache warm).
2. `cairn image create --from-dump`: the largest dump vector of
   ../shared/vectors (if present) and a generated 64,000-entry dump:
   wall time and peak memory.
3. `cairn image create --from-dir /usr` (all cores) vs `sha256sum` of the
   same files on all cores: wall time, files/s, peak memory.
Medians of ROUNDS runs (alternating order); Markdown on stdout.
"""
import gzip, os, platform, random, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
import bench_measure  # noqa: E402
SHARED = os.path.join(os.path.dirname(HERE), "..", "shared", "vectors", "composefs")


def run(cmd, stdin=None):
    """Wall seconds and peak RSS (MiB) of one command."""
    return bench_measure.run(cmd, stdin=stdin)


def shell(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def median(xs):
    return statistics.median(xs)


def synthetic_dump(path, entries=64000):
    """A deterministic dump: nested dirs, object-backed files with digests,
    symlinks and small inline files, with selinux-like labels."""
    rnd = random.Random(42)
    lines = ["/ 4096 40755 2 0 0 0 0.0 - - - security.selinux=system_u:object_r:root_t:s0\\x00"]
    dirs = ["/"]
    n = 1
    while n < entries:
        parent = rnd.choice(dirs)
        name = "%s%d" % (rnd.choice(["lib", "bin", "share", "doc", "x"]), n)
        p = (parent.rstrip("/") + "/" + name)
        kind = rnd.random()
        label = "security.selinux=system_u:object_r:%s_t:s0\\x00" % rnd.choice(["usr", "bin", "lib", "etc"])
        if kind < 0.08:
            lines.append("%s 4096 40755 2 0 0 0 0.0 - - - %s" % (p, label))
            dirs.append(p)
        elif kind < 0.2:
            lines.append("%s 10 120777 1 0 0 0 0.0 ../target/%d - - %s" % (p, n, label))
        elif kind < 0.3:
            lines.append("%s 12 100644 1 0 0 0 0.0 - inline-%05d - %s" % (p, n % 100000, label))
        else:
            d = "%064x" % rnd.getrandbits(256)
            lines.append("%s %d 100644 1 0 0 0 0.0 %s/%s - %s %s" % (p, rnd.randint(65, 10**7), d[:2], d[2:], d, label))
        n += 1
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    cairn = os.path.realpath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print("%s, %d cores, %s; medians of %d rounds\n" % (platform.node(), os.cpu_count(), time.strftime("%Y-%m-%d"), rounds))
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cairn-bench-") as work:
        # 1. fs-verity vs openssl
        big = os.path.join(work, "1GiB")
        subprocess.run(["head", "-c", str(1 << 30), "/dev/urandom"], stdout=open(big, "wb"), check=True)
        shell("cat %s > /dev/null" % big)
        ours, theirs = [], []
        for i in range(rounds):
            for tool in (["ours", "theirs"] if i % 2 == 0 else ["theirs", "ours"]):
                if tool == "ours":
                    ours.append(run([cairn, "image", "digest", big])[0])
                else:
                    theirs.append(run(["openssl", "dgst", "-sha256", big])[0])
        os.unlink(big)
        print("| 1 GiB file | median (s) | GiB/s |")
        print("|---|---|---|")
        print("| `cairn image digest` (fs-verity) | %.3f | %.2f |" % (median(ours), 1 / median(ours)))
        print("| `openssl dgst -sha256` | %.3f | %.2f |" % (median(theirs), 1 / median(theirs)))
        print("\nspeed of cairn relative to openssl: %.2f×\n" % (median(theirs) / median(ours)))

        # 2. --from-dump
        dumps = []
        cfg = os.path.join(SHARED, "config.dump.gz")
        if os.path.exists(cfg):
            plain = os.path.join(work, "config.dump")
            with gzip.open(cfg) as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            dumps.append(("config.dump (largest vector)", plain))
        synth = os.path.join(work, "64k.dump")
        synthetic_dump(synth)
        dumps.append(("generated, 64,000 entries", synth))
        print("| `cairn image create --from-dump` | entries | wall median (s) | peak RSS (MiB) |")
        print("|---|---|---|---|")
        for name, path in dumps:
            walls, rss = [], []
            entries = sum(1 for _ in open(path, "rb"))
            for _ in range(rounds):
                w, m = run([cairn, "image", "create", "--from-dump", path, os.path.join(work, "out.cfs")])
                walls.append(w)
                rss.append(m)
            print("| %s | %d | %.3f | %.0f |" % (name, entries, median(walls), max(rss)))

        # 3. --from-dir /usr vs sha256sum on all cores
        source = os.environ.get("CAIRN_BENCH_DIR", "/usr")
        files = int(subprocess.run("find %s -xdev -type f | wc -l" % source, shell=True, capture_output=True, text=True).stdout)
        entries = int(subprocess.run("find %s -xdev | wc -l" % source, shell=True, capture_output=True, text=True).stdout)
        size = int(subprocess.run(["du", "-sbx", source], capture_output=True, text=True).stdout.split()[0])
        sha_cmd = "find %s -xdev -type f -print0 | xargs -0 -n 200 -P %d sha256sum" % (source, os.cpu_count())
        shell(sha_cmd)  # warm the page cache
        ours, theirs, rss = [], [], []
        for i in range(rounds):
            for tool in (["ours", "theirs"] if i % 2 == 0 else ["theirs", "ours"]):
                if tool == "ours":
                    w, m = run([cairn, "image", "create", "--from-dir", source, os.path.join(work, "usr.cfs")])
                    ours.append(w)
                    rss.append(m)
                else:
                    theirs.append(shell(sha_cmd))
        print("\n`--from-dir %s`: %d entries, %d regular files, %.1f GB, page cache warm\n" % (source, entries, files, size / 1e9))
        print("| | wall median (s) | files/s | peak RSS (MiB) |")
        print("|---|---|---|---|")
        print("| `cairn image create --from-dir` | %.2f | %.0f | %.0f |" % (median(ours), files / median(ours), max(rss)))
        print("| `sha256sum` on %d cores | %.2f | %.0f | |" % (os.cpu_count(), median(theirs), files / median(theirs)))
        print("\nspeed of cairn relative to sha256sum: %.2f×" % (median(theirs) / median(ours)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`cairn image create --from-dir --digest-store` against the plain tools
doing the same work, side by side in one run.

usage: bench_image_store.py CAIRN [ROUNDS]

The work: every regular file's content put into an empty store folder and
its fs-verity digest computed. Plain tools: `cp --reflink=auto -a` of the
tree, then `fsverity digest` of each file on all cores (`xargs -P`); that is
the floor mkcomposefs pays too, before it writes any image. Trees: the
minbase tree and the large tree of bench_commit.py (cached in
/var/tmp/cairn-cache). Page cache warm; the store is on the same
filesystem as /var/tmp. Medians of ROUNDS (alternating order), peak RSS of
the largest process of each side; Markdown on stdout.
"""
import os, platform, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import bench_commit  # noqa: E402  (the cached trees)
import bench_measure  # noqa: E402


def run(cmd, shell=False):
    """Wall seconds and peak RSS (MiB); `sync` first, so that no run pays for the last one's writes."""
    subprocess.run(["sync"], check=True)
    return bench_measure.run(cmd, shell=shell)


def bench(tree, cairn, rounds, work):
    files = int(subprocess.run("find %s -xdev -type f | wc -l" % tree, shell=True, capture_output=True, text=True).stdout)
    size = int(subprocess.run(["du", "-sbx", tree], capture_output=True, text=True).stdout.split()[0])
    subprocess.run(["tar", "-C", tree, "-cf", "/dev/null", "."], check=True)  # warm the page cache
    store = os.path.join(work, "store")
    plain = ("cp --reflink=auto -a %s %s && find %s -xdev -type f -print0 | xargs -0 -n 256 -P %d fsverity digest"
             % (tree, store, tree, os.cpu_count()))
    ours, theirs, our_rss, their_rss = [], [], [], []
    for i in range(rounds):
        for tool in (["ours", "theirs"] if i % 2 == 0 else ["theirs", "ours"]):
            shutil.rmtree(store, ignore_errors=True)
            if tool == "ours":
                os.mkdir(store)
                w, m = run([cairn, "image", "create", "--from-dir", tree, "--digest-store", store, os.path.join(work, "out.cfs")])
                ours.append(w)
                our_rss.append(m)
            else:
                w, m = run(plain, shell=True)
                theirs.append(w)
                their_rss.append(m)
    shutil.rmtree(store, ignore_errors=True)
    c, p = statistics.median(ours), statistics.median(theirs)
    print("tree: %s, %d regular files, %.0f MB; %d rounds\n" % (tree, files, size / 1e6, rounds))
    print("| | wall median (s) | peak RSS (MiB) |")
    print("|---|---|---|")
    print("| `cairn image create --from-dir --digest-store` | %.2f | %.0f |" % (c, max(our_rss)))
    print("| `cp --reflink=auto -a` + `fsverity digest` (%d cores) | %.2f | %.0f |" % (os.cpu_count(), p, max(their_rss)))
    print("\ncairn / plain tools: time **%.2f**, peak memory **%.2f**\n" % (c / p, max(our_rss) / max(their_rss)), flush=True)


def main():
    cairn = os.path.realpath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    bench_commit.ensure_tree()
    bench_commit.ensure_large_tree()
    print("%s, %d cores, %s\n" % (platform.node(), os.cpu_count(), time.strftime("%Y-%m-%d")))
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cairn-bench-") as work:
        bench(bench_commit.TREE, cairn, rounds, work)
        bench(bench_commit.LARGE_TREE, cairn, max(3, rounds // 2), work)


if __name__ == "__main__":
    main()

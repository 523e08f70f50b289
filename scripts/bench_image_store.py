#!/usr/bin/env python3
"""`cairn image create --from-dir --digest-store` against the plain tools
doing the same work, side by side in one run.

usage: bench_image_store.py [ROUNDS]

cairn as `make install` installs it (into a scratch folder): the front end
runs `image create --from-dir` itself, without cairn-full's libraries.

The work: every regular file's content put into an empty store folder and
its fs-verity digest computed. Plain tools: `cp --reflink=auto -a` of the
tree, then `fsverity digest` of each file on all cores (`xargs -P`); that is
the floor mkcomposefs pays too, before it writes any image. Trees: the
minbase tree and the large tree of bench_commit.py (cached in
/var/tmp/cairn-cache). Page cache warm; the store is on the same
filesystem as /var/tmp. Medians of ROUNDS (alternating order), peak RSS of
the largest process of each side; Markdown on stdout. With MKCOMPOSEFS=PATH
(upstream composefs's tool, which Debian 12 does not package), mkcomposefs
--digest-store runs too, in the same rounds, and the images are compared.
"""
import os, platform, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import bench_commit  # noqa: E402  (the cached trees)
import bench_measure  # noqa: E402


def run(cmd, shell=False):
    """Wall seconds and peak RSS (MiB); `sync` first, so that no run pays for the last one's writes."""
    subprocess.run(["sync"], check=True)
    return bench_measure.run(cmd, shell=shell)


def bench(tree, cairn, rounds, work, mkcomposefs=None):
    files = int(subprocess.run("find %s -xdev -type f | wc -l" % tree, shell=True, capture_output=True, text=True).stdout)
    size = int(subprocess.run(["du", "-sbx", tree], capture_output=True, text=True).stdout.split()[0])
    subprocess.run(["tar", "-C", tree, "-cf", "/dev/null", "."], check=True)  # warm the page cache
    store = os.path.join(work, "store")
    plain = ("cp --reflink=auto -a %s %s && find %s -xdev -type f -print0 | xargs -0 -n 256 -P %d fsverity digest"
             % (tree, store, tree, os.cpu_count()))
    images = {"ours": os.path.join(work, "cairn.cfs"), "mkcomposefs": os.path.join(work, "mkcomposefs.cfs")}
    tools = {
        "ours": ([cairn, "image", "create", "--from-dir", tree, "--digest-store", store, images["ours"]], False),
        "theirs": (plain, True),
    }
    if mkcomposefs:
        tools["mkcomposefs"] = ([mkcomposefs, "--digest-store=" + store, tree, images["mkcomposefs"]], False)
    wall = {t: [] for t in tools}
    rss = {t: [] for t in tools}
    names = list(tools)
    for i in range(rounds):
        for tool in names[i % len(names):] + names[:i % len(names)]:  # each tool in each position in turn
            shutil.rmtree(store, ignore_errors=True)
            if tool != "theirs":
                os.mkdir(store)
            w, m = run(tools[tool][0], shell=tools[tool][1])
            wall[tool].append(w)
            rss[tool].append(m)
    shutil.rmtree(store, ignore_errors=True)
    med = {t: statistics.median(wall[t]) for t in tools}
    peak = {t: max(rss[t]) for t in tools}
    print("tree: %s, %d regular files, %.0f MB; %d rounds\n" % (tree, files, size / 1e6, rounds))
    print("| | wall median (s) | peak RSS (MiB) |")
    print("|---|---|---|")
    print("| `cairn image create --from-dir --digest-store` | %.2f | %.1f |" % (med["ours"], peak["ours"]))
    print("| `cp --reflink=auto -a` + `fsverity digest` (%d cores) | %.2f | %.1f |" % (os.cpu_count(), med["theirs"], peak["theirs"]))
    if mkcomposefs:
        same = open(images["ours"], "rb").read() == open(images["mkcomposefs"], "rb").read()
        print("| `mkcomposefs --digest-store` (%s) | %.2f | %.1f |" % (mkcomposefs, med["mkcomposefs"], peak["mkcomposefs"]))
        print("\nimages byte-identical to mkcomposefs's: %s" % ("yes" if same else "**NO**"))
    print("\ncairn / plain tools: time **%.2f**, peak memory **%.2f**" % (med["ours"] / med["theirs"], peak["ours"] / peak["theirs"]))
    if mkcomposefs:
        print("cairn / mkcomposefs: time **%.2f**, peak memory **%.2f**" % (med["ours"] / med["mkcomposefs"], peak["ours"] / peak["mkcomposefs"]))
    print(flush=True)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    bench_commit.ensure_tree()
    bench_commit.ensure_large_tree()
    print("%s, %d cores, %s\n" % (platform.node(), os.cpu_count(), time.strftime("%Y-%m-%d")))
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cairn-bench-") as work:
        top = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        root = os.path.join(work, "root")
        subprocess.run(["make", "-C", top, "--no-print-directory", "install", "DESTDIR=" + root, "PREFIX=/usr/local"],
                       check=True, stdout=subprocess.DEVNULL)
        cairn = os.path.join(root, "usr/local/bin/cairn")
        mkcomposefs = os.environ.get("MKCOMPOSEFS")  # upstream's tool, if built (not packaged for Debian 12)
        bench(bench_commit.TREE, cairn, rounds, work, mkcomposefs)
        bench(bench_commit.LARGE_TREE, cairn, max(3, rounds // 2), work, mkcomposefs)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""cairn commit vs ostree commit of a real OS tree, side by side in one run.

usage: bench_commit.py CAIRN [ROUNDS [CAIRN OPTIONS...]]

Two trees, made once into /var/tmp/cairn-cache (device nodes removed: no
ostree tool can store them): a debootstrap --variant=minbase Debian 12 root,
and a large one (over 1 GB, over 50,000 entries) copied from this machine's
/usr/{bin,sbin,share,include,libexec}. Each round commits a tree into a
fresh bare repository with each tool (order alternating), then commits the
unchanged tree again. The large tree gets ROUNDS // 2 rounds (at least 3).
Prints medians and cairn/ostree ratios as Markdown, one table per tree.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time, platform

CACHE = os.environ.get("CAIRN_CACHE", "/var/tmp/cairn-cache")
TREE = os.path.join(CACHE, "minbase-tree")
LARGE_TREE = os.path.join(CACHE, "large-tree")
LARGE_PARTS = ["bin", "sbin", "share", "include", "libexec"]


def cached_tree(path, what, fill):
    """`path`, made once by `fill(tmp)` into a temporary folder, without
    device nodes, fifos and sockets (no ostree tool can store them)."""
    if os.path.isdir(os.path.join(path, "usr")):
        return
    os.makedirs(CACHE, exist_ok=True)
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"building {path} {what} (once)...", file=sys.stderr)
    fill(tmp)
    subprocess.run(["find", tmp, "-xdev", "(", "-type", "c", "-o", "-type", "b", "-o", "-type", "p",
                    "-o", "-type", "s", ")", "-delete"], check=True)
    os.rename(tmp, path)


def ensure_tree():
    cached_tree(TREE, "with debootstrap", lambda tmp: subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", tmp], check=True, stdout=subprocess.DEVNULL))


def ensure_large_tree():
    def fill(tmp):
        os.makedirs(os.path.join(tmp, "usr"))
        parts = [os.path.join("/usr", p) for p in LARGE_PARTS if os.path.isdir(os.path.join("/usr", p))]
        subprocess.run(["cp", "-a", *parts, os.path.join(tmp, "usr")], check=True)
    cached_tree(LARGE_TREE, "from /usr", fill)


def os_tree(dest):
    """The minbase tree copied to `dest` as an OS to deploy: /etc as
    /usr/etc, Debian's cloud kernel in /usr/lib/modules/<kver>/vmlinuz.
    Returns the kernel version."""
    ensure_tree()
    here = os.path.dirname(os.path.realpath(__file__))
    kroot, kver = subprocess.run([os.path.join(here, "fetch-kernel.sh")], check=True,
                                 capture_output=True, text=True).stdout.split()
    subprocess.run(["cp", "-a", TREE, dest], check=True)
    os.rename(os.path.join(dest, "etc"), os.path.join(dest, "usr/etc"))
    os.makedirs(os.path.join(dest, "usr/lib/modules", kver), exist_ok=True)
    shutil.copy(os.path.join(kroot, "boot", "vmlinuz-" + kver), os.path.join(dest, "usr/lib/modules", kver, "vmlinuz"))
    return kver


def timed(cmd):
    subprocess.run(["sync"], check=True)  # the last run's writeback is not this one's cost
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def one_round(tool, cairn, work, extra, tree):
    repo = os.path.join(work, tool)
    shutil.rmtree(repo, ignore_errors=True)
    if tool == "cairn":
        subprocess.run([cairn, "init", "--repo", repo], check=True, stdout=subprocess.DEVNULL)
        cmd = [cairn, "commit", "--repo", repo, "-b", "os", *extra, tree]
    else:
        subprocess.run(["ostree", "init", "--repo=" + repo, "--mode=bare"], check=True)
        cmd = ["ostree", "commit", "--repo=" + repo, "-b", "os", tree]
    first = timed(cmd)
    again = timed(cmd)
    shutil.rmtree(repo)
    return first, again


def bench(tree, cairn, rounds, extra):
    files = sum(len(f) + len(d) for _, d, f in os.walk(tree))
    size = subprocess.run(["du", "-sb", tree], capture_output=True, text=True).stdout.split()[0]
    results = {"cairn": ([], []), "ostree": ([], [])}
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cairn-bench-") as work:
        subprocess.run(["tar", "-C", tree, "-cf", "/dev/null", "."], check=True)  # warm the page cache
        for i in range(rounds):
            order = ["cairn", "ostree"] if i % 2 == 0 else ["ostree", "cairn"]
            for tool in order:
                first, again = one_round(tool, cairn, work, extra, tree)
                results[tool][0].append(first)
                results[tool][1].append(again)
    c1, c2 = (statistics.median(x) for x in results["cairn"])
    o1, o2 = (statistics.median(x) for x in results["ostree"])
    print(f"tree: {tree}, {files} entries, {int(size) / 1e6:.0f} MB; {rounds} rounds; "
          f"{platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; cairn options: {' '.join(extra) or '(none)'}")
    print()
    print("| commit | cairn median (s) | ostree median (s) | cairn / ostree |")
    print("|---|---|---|---|")
    print(f"| first commit | {c1:.3f} | {o1:.3f} | {c1 / o1:.2f} |")
    print(f"| recommit, unchanged tree | {c2:.3f} | {o2:.3f} | {c2 / o2:.2f} |")
    print(flush=True)


def main():
    cairn = os.path.realpath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    extra = sys.argv[3:]
    ensure_tree()
    ensure_large_tree()
    bench(TREE, cairn, rounds, extra)
    bench(LARGE_TREE, cairn, max(3, rounds // 2), extra)


if __name__ == "__main__":
    main()

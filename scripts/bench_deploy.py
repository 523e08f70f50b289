#!/usr/bin/env python3
"""`cairn deploy` vs `ostree admin deploy` of the same OS tree into fresh
sysroots, side by side in one run; and `cairn status` with 10 deployments.

usage: bench_deploy.py CAIRN [ROUNDS]

The tree is the Debian minbase root of bench_commit.py (built once into
/var/tmp/cairn-cache) with /etc moved to /usr/etc and a Debian cloud kernel
in /usr/lib/modules/<kver>/ (fetch-kernel.sh). Each round commits it into a
fresh sysroot per tool (not timed) and times the deploy alone, twice: with
the stateroot's /var empty (cairn then fills it with the commit's /var, as
current ostree does; Debian's ostree 2022.7 does not), and with /var already
in use (as on every deploy after a stateroot's first).
"""
import os, platform, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
import bench_commit  # noqa: E402


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def timed(*cmd):
    t = time.perf_counter()
    sh(*cmd)
    return time.perf_counter() - t


def remove(path):
    """ostree marks deployment folders immutable; lift that before removing."""
    subprocess.run(["chattr", "-R", "-f", "-i", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)


def main():
    cairn = os.path.realpath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    work = tempfile.mkdtemp(dir="/var/tmp", prefix="cairn-bench-deploy-")
    try:
        tree = os.path.join(work, "tree")
        kver = bench_commit.os_tree(tree)
        sh(os.path.join(HERE, "..", "initramfs", "mkinitramfs.sh"), os.path.join(tree, "usr/lib/modules", kver, "initramfs.img"))
        entries = sum(len(f) + len(d) for _, d, f in os.walk(tree))
        times = {(tool, var): [] for tool in ("cairn", "ostree") for var in ("empty", "in use")}
        for i in range(rounds):
            for tool in (["cairn", "ostree"] if i % 2 == 0 else ["ostree", "cairn"]):
                for var in ("empty", "in use"):
                    root = os.path.join(work, tool)
                    remove(root)
                    os.makedirs(root)
                    if tool == "cairn":
                        sh(cairn, "sysroot", "init", root, "--stateroot", "os")
                        sh(cairn, "commit", "--repo", root + "/ostree/repo", "-b", "os/x", tree)
                    else:
                        sh("ostree", "admin", "init-fs", root)
                        sh("ostree", "admin", "os-init", "--sysroot=" + root, "os")
                        sh("ostree", "commit", "--repo=" + root + "/ostree/repo", "-b", "os/x", tree)
                    if var == "in use":
                        open(os.path.join(root, "ostree/deploy/os/var/in-use"), "w").close()
                    sh("sync")
                    if tool == "cairn":
                        times[(tool, var)].append(timed(cairn, "deploy", "--sysroot", root, "os/x", "--karg", "root=/dev/vda"))
                    else:
                        times[(tool, var)].append(timed("ostree", "admin", "deploy", "--sysroot=" + root, "--os=os", "--karg=root=/dev/vda", "os/x"))
                    remove(root)

        # status with 10 deployments (pinned so that all are kept)
        root = os.path.join(work, "status")
        os.makedirs(root)
        sh(cairn, "sysroot", "init", root, "--stateroot", "os")
        for n in range(10):
            with open(os.path.join(tree, "usr/share/bench-version"), "w") as f:
                f.write(str(n))
            sh(cairn, "commit", "--repo", root + "/ostree/repo", "-b", "os/x", tree)
            sh(cairn, "deploy", "--sysroot", root, "os/x")
            sh(cairn, "pin", "--sysroot", root, "0")
        count = len(subprocess.run([cairn, "status", "--sysroot", root, "--json"], capture_output=True, text=True).stdout.split('"checksum"')) - 1
        status = [timed(cairn, "status", "--sysroot", root) for _ in range(20)]
        status_json = [timed(cairn, "status", "--sysroot", root, "--json") for _ in range(20)]
    finally:
        remove(work)

    print("%s, %d cores, %s; tree %d entries + kernel %s; %d rounds\n" % (platform.node(), os.cpu_count(), time.strftime("%Y-%m-%d"), entries, kver, rounds))
    print("| deploy into a fresh sysroot | `cairn deploy` median (s) | `ostree admin deploy` median (s) | cairn / ostree |")
    print("|---|---|---|---|")
    for var, label in (("empty", "stateroot /var empty (cairn fills it from the commit)"), ("in use", "stateroot /var in use")):
        c, o = statistics.median(times[("cairn", var)]), statistics.median(times[("ostree", var)])
        print("| %s | %.3f | %.3f | **%.2f×** |" % (label, c, o, c / o))
    print()
    print("`cairn status` with %d deployments: median %.1f ms (text), %.1f ms (--json), of 20 runs" %
          (count, statistics.median(status) * 1000, statistics.median(status_json) * 1000))


if __name__ == "__main__":
    main()

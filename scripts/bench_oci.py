#!/usr/bin/env python3
"""cairn commit --from-oci of an OS image vs umoci unpack + cairn commit of
the unpacked directory, side by side in one run.

usage: bench_oci.py CAIRN [ROUNDS]

The image is built once with buildah (vfs storage in a temporary folder)
FROM scratch from a Debian tree: $CAIRN_BENCH_TREE, else the debootstrap
minbase tree bench_commit.py makes. Layer 1 is the tree (device nodes
removed: no ostree tool stores them), layer 2 deletes /usr/share/doc and
rewrites /usr/etc/os-release-like files, as an update does. It is kept as
an OCI layout in /var/tmp/cairn-cache/oci-bench. Each round commits it into
a fresh bare repository both ways (order alternating); the umoci way is
timed as its two steps. Prints medians as Markdown.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time, platform

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import bench_commit  # noqa: E402  (its debootstrap tree)

CACHE = os.environ.get("CAIRN_CACHE", "/var/tmp/cairn-cache")
IMAGE = os.path.join(CACHE, "oci-bench")


def ensure_image():
    if os.path.exists(os.path.join(IMAGE, "index.json")):
        return
    tree = os.environ.get("CAIRN_BENCH_TREE")
    if not tree:
        bench_commit.ensure_tree()
        tree = bench_commit.TREE
    print(f"building {IMAGE} from {tree} with buildah (once)...", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cairn-bench-buildah-") as work:
        b = ["buildah", "--root", work + "/storage", "--runroot", work + "/run", "--storage-driver", "vfs"]
        out = lambda *args: subprocess.run(b + list(args), check=True, capture_output=True, text=True).stdout.strip()
        c = out("from", "scratch")
        m = out("mount", c)
        subprocess.run(["cp", "-a", tree + "/.", m], check=True)
        subprocess.run(["find", m, "-xdev", "(", "-type", "c", "-o", "-type", "b", "-o", "-type", "p",
                        "-o", "-type", "s", ")", "-delete"], check=True)
        out("commit", "-q", c, "base")
        c2 = out("from", "base")
        m2 = out("mount", c2)
        shutil.rmtree(os.path.join(m2, "usr/share/doc"), ignore_errors=True)
        for etc in ("etc", "usr/etc"):
            if os.path.isdir(os.path.join(m2, etc)):
                with open(os.path.join(m2, etc, "motd"), "w") as f:
                    f.write("updated by layer 2\n")
        out("config", "--label", "org.opencontainers.image.version=bench", c2)
        out("commit", "-q", c2, "bench")
        tmp = IMAGE + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        out("push", "-q", "bench", "oci:" + tmp + ":bench")
        os.rename(tmp, IMAGE)


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def root_tree(repo, ref):
    return subprocess.run(["ostree", "ls", "--repo=" + repo, "-C", "-d", ref, "/"], check=True,
                          capture_output=True, text=True).stdout.split()[4]


def one_round(way, cairn, work):
    repo = os.path.join(work, way)
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run([cairn, "init", "--repo", repo], check=True, stdout=subprocess.DEVNULL)
    if way == "oci":
        t = timed([cairn, "commit", "--repo", repo, "-b", "os", "--from-oci", "oci:" + IMAGE + ":bench"])
        result = (t,)
    else:
        bundle = os.path.join(work, "bundle")
        shutil.rmtree(bundle, ignore_errors=True)
        unpack = timed(["umoci", "unpack", "--image", IMAGE + ":bench", bundle])
        commit = timed([cairn, "commit", "--repo", repo, "-b", "os", bundle + "/rootfs"])
        shutil.rmtree(bundle)
        result = (unpack, commit)
    tree = root_tree(repo, "os")
    shutil.rmtree(repo)
    return result, tree


def main():
    cairn = os.path.realpath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    ensure_image()
    blobs = os.path.join(IMAGE, "blobs/sha256")
    size = sum(os.path.getsize(os.path.join(blobs, b)) for b in os.listdir(blobs))
    oci, unpack, commit, trees = [], [], [], set()
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cairn-bench-oci-") as work:
        subprocess.run(["cat"] + [os.path.join(blobs, b) for b in os.listdir(blobs)], check=True,
                       stdout=subprocess.DEVNULL)  # warm the page cache
        for i in range(rounds):
            for way in (["oci", "umoci"] if i % 2 == 0 else ["umoci", "oci"]):
                times, tree = one_round(way, cairn, work)
                trees.add(tree)
                if way == "oci":
                    oci.append(times[0])
                else:
                    unpack.append(times[0])
                    commit.append(times[1])
    both = [u + c for u, c in zip(unpack, commit)]
    o, u, c, b = (statistics.median(x) for x in (oci, unpack, commit, both))
    print(f"image: {IMAGE} (2 layers, {size / 1e6:.0f} MB of blobs); {rounds} rounds; {platform.node()}, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; "
          f"same root dirtree both ways: {'yes' if len(trees) == 1 else 'NO: ' + ' '.join(sorted(trees))}")
    print()
    print("| step | median (s) |")
    print("|---|---|")
    print(f"| `cairn commit --from-oci oci:...` | {o:.3f} |")
    print(f"| `umoci unpack` | {u:.3f} |")
    print(f"| `cairn commit` of the unpacked rootfs | {c:.3f} |")
    print(f"| umoci unpack + cairn commit | {b:.3f} |")
    print(f"| from-oci / (unpack + commit) | {o / b:.2f} |")


if __name__ == "__main__":
    main()

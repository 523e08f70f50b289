#!/usr/bin/env python3
"""Storage of many images of one OS tree, three ways, side by side in one run.

usage: bench_oci_storage.py CAIRN [IMAGES]

IMAGES (default 20) OCI images of the Debian image bench_oci.py builds,
each with one more layer holding one file of its own (64 KiB of random
bytes), kept as tags of one OCI layout in a temporary folder. Each is
stored as
  (a) an unpacked tree (`umoci unpack`), as without composefs;
  (b) a commit of one cairn repository (`cairn commit --from-oci`);
  (c) a composefs image over one digest store (`cairn image create
      --from-oci --digest-store`).
Bytes on disk are `du` of what each way wrote (allocated blocks, and
apparent bytes), with the ratio to one unpacked image.

Page cache: all images of (c) mounted (a private mount namespace), the
largest file of the tree evicted (POSIX_FADV_DONTNEED on its backing object),
then read through every mount; `fincore` of the object and the change of
Cached in /proc/meminfo say what that cost. The same with the file of each
unpacked tree of (a). Prints Markdown.
"""
import os, shutil, subprocess, sys, tempfile, time, platform, json, tarfile, io

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import bench_oci  # noqa: E402  (its image)

LAYOUT_TOOL = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "Tests", "Scripts", "oci_layout.py")


def run(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw).stdout


def du(*paths):
    """(allocated bytes, apparent bytes) of the paths, hardlinks once."""
    alloc = int(run("du", "-s", "-c", "--block-size=1", *paths).split("\n")[-2].split()[0])
    apparent = int(run("du", "-s", "-c", "-b", *paths).split("\n")[-2].split()[0])
    return alloc, apparent


def cached_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Cached in /proc/meminfo")


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident(path):
    return int(run("fincore", "--bytes", "--noheadings", "--output", "RES", path).strip())


def read_all(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def page_cache_cost(files, evict_paths, measure_paths):
    """Cached before/after reading every one of `files`, after evicting
    `evict_paths`; resident bytes of `measure_paths` after."""
    subprocess.run(["sync"], check=True)
    for p in evict_paths:
        evict(p)
    time.sleep(0.5)
    before = cached_bytes()
    read_all(files)
    after = cached_bytes()
    return after - before, sum(resident(p) for p in measure_paths)


def main():
    cairn = os.path.realpath(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    bench_oci.ensure_image()
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cairn-bench-storage-") as work:
        layout = os.path.join(work, "layout")
        shutil.copytree(bench_oci.IMAGE, layout)
        for i in range(count):
            layer = os.path.join(work, f"layer{i}.tar")
            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as t:
                data = os.urandom(65536)
                ti = tarfile.TarInfo(f"usr/share/cairn-bench/image-{i}")
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
                t.addfile(ti, io.BytesIO(data))
            run("python3", LAYOUT_TOOL, "add-layer", layout, "bench", f"img{i}", layer, "gzip")
            os.unlink(layer)

        # (a) unpacked trees
        trees = []
        t = time.perf_counter()
        for i in range(count):
            bundle = os.path.join(work, "unpacked", f"img{i}")
            os.makedirs(os.path.dirname(bundle), exist_ok=True)
            run("umoci", "unpack", "--image", f"{layout}:img{i}", bundle)
            trees.append(os.path.join(bundle, "rootfs"))
        time_a = time.perf_counter() - t
        one = du(trees[0])
        size_a = du(*trees)

        # (b) commits of one repository
        repo = os.path.join(work, "repo")
        run(cairn, "init", "--repo", repo)
        empty_repo = du(repo)
        t = time.perf_counter()
        for i in range(count):
            run(cairn, "commit", "--repo", repo, "-b", f"img{i}", "--from-oci", f"oci:{layout}:img{i}")
        time_b = time.perf_counter() - t
        size_b = du(repo)

        # (c) composefs images over one digest store
        store = os.path.join(work, "store")
        images = [os.path.join(work, "images", f"img{i}.cfs") for i in range(count)]
        os.makedirs(os.path.dirname(images[0]))
        t = time.perf_counter()
        for i, image in enumerate(images):
            run(cairn, "image", "create", "--from-oci", f"oci:{layout}:img{i}", "--digest-store", store, image)
        time_c = time.perf_counter() - t
        size_store = du(store)
        size_images = du(*images)
        size_c = du(store, *images)
        objects = sum(len(files) for _, _, files in os.walk(store))

        # The largest regular file of the tree, and its backing object.
        largest = max((os.path.getsize(os.path.join(d, f)), os.path.relpath(os.path.join(d, f), trees[0]))
                      for d, _, fs in os.walk(trees[0]) for f in fs
                      if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)))
        lsize, lpath = largest
        digest = run(cairn, "image", "digest", os.path.join(trees[0], lpath)).strip()
        obj = os.path.join(store, digest[:2], digest[2:])

        # Page cache, (a): the file of every unpacked tree.
        copies = [os.path.join(tree, lpath) for tree in trees]
        cost_a, res_a = page_cache_cost(copies, copies, copies)

        # Page cache, (c): through every mounted image, in a private namespace.
        probe = os.path.join(work, "probe.py")
        with open(probe, "w") as f:
            f.write(f"""
import json, os, subprocess, sys
sys.path.insert(0, {os.path.dirname(os.path.realpath(__file__))!r})
import bench_oci_storage as b
images, store, obj, lpath, work = json.loads(sys.argv[1])
mounts = []
try:
    for i, image in enumerate(images):
        m = os.path.join(work, "mnt", str(i))
        os.makedirs(m)
        subprocess.run([{cairn!r}, "image", "mount", "--basedir", store, image, m], check=True)
        mounts.append(m)
    files = [os.path.join(m, lpath) for m in mounts]
    cost, res = b.page_cache_cost(files, [obj], [obj])
    print(json.dumps([cost, res, len(mounts)]))
finally:
    for m in reversed(mounts):
        subprocess.run(["umount", m], check=True)
""")
        out = run("unshare", "-m", "--propagation", "private", sys.executable, probe,
                  json.dumps([images, store, obj, lpath, work]))
        cost_c, res_c, mounted = json.loads(out)

        mb = lambda x: f"{x / 1e6:.1f}"
        ratio = lambda x: f"{x / one[0]:.3f}"
        print(f"{count} images of {bench_oci.IMAGE} (+1 layer each: a 64 KiB file of its own); "
              f"{platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
        print()
        print("| way | MB on disk (allocated) | MB apparent | × one unpacked image | time to make all (s) |")
        print("|---|---|---|---|---|")
        print(f"| one unpacked image | {mb(one[0])} | {mb(one[1])} | 1.000 | |")
        print(f"| (a) {count} unpacked trees (umoci unpack) | {mb(size_a[0])} | {mb(size_a[1])} | {ratio(size_a[0])} | {time_a:.1f} |")
        print(f"| (b) {count} commits, one cairn repository (bare) | {mb(size_b[0] - empty_repo[0])} | {mb(size_b[1] - empty_repo[1])} | {ratio(size_b[0] - empty_repo[0])} | {time_b:.1f} |")
        print(f"| (c) {count} composefs images + one digest store | {mb(size_c[0])} | {mb(size_c[1])} | {ratio(size_c[0])} | {time_c:.1f} |")
        print(f"| (c) of which the store ({objects} objects) | {mb(size_store[0])} | {mb(size_store[1])} | {ratio(size_store[0])} | |")
        print(f"| (c) of which the {count} images | {mb(size_images[0])} | {mb(size_images[1])} | | |")
        print()
        print(f"Page cache, reading /{lpath} ({mb(lsize)} MB) once through each of the {count} trees / {mounted} mounted images:")
        print()
        print("| way | Cached grew by (MB) | resident in the page cache (MB, fincore) | copies |")
        print("|---|---|---|---|")
        print(f"| (a) unpacked trees | {mb(cost_a)} | {mb(res_a)} | {res_a / lsize:.2f} |")
        print(f"| (c) composefs images, one store | {mb(cost_c)} | {mb(res_c)} | {res_c / lsize:.2f} |")


if __name__ == "__main__":
    main()

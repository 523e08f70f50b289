#!/usr/bin/env python3
"""Network updates side by side with Debian's ostree, from one nginx on
127.0.0.1 serving one archive repository that cairn wrote (signed commits,
a signed summary, a static delta v1 -> v2).

usage: bench_pull.py CAIRN [ROUNDS]

The OS is the Debian minbase root of bench_commit.py with /etc as /usr/etc
and a Debian cloud kernel (as bench_deploy.py). v2 changes about 2% of its
regular files (rewritten with new content). Measured, medians of ROUNDS:
  1. `cairn pull` vs `ostree pull` of v1 into a fresh bare repository;
  2. bytes an upgrade v1 -> v2 fetches, with and without the static delta,
     against the gzip -6 size of the changed files (what they cost at least);
  3. `cairn upgrade` (pull + deploy) vs `ostree pull` + `ostree admin deploy`
     of v2 into a sysroot where v1 is deployed;
  4. `cairn deploy` right after a pull vs `ostree admin deploy`: of v1 into
     a fresh stateroot (cairn also fills its empty /var from the commit,
     which Debian's ostree skips), and of v2 beside v1 (/var in use).
Each client sysroot is on a fresh ext4 filesystem of its own (a loop
device), as a machine's disk is: on a filesystem where thousands of files
were just deleted, ext4 spends seconds skipping their inodes, and whichever
tool runs first after a deletion pays it.
Debian's ostree cannot verify ed25519, so its remote is added without
signature verification; cairn verifies every commit and the summary.
"""
import gzip, os, platform, random, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
import bench_commit  # noqa: E402
import serve_repo  # noqa: E402


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def out(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def timed(*cmd):
    t = time.perf_counter()
    sh(*cmd)
    return time.perf_counter() - t


def remove(path):
    if os.path.ismount(path):
        subprocess.run(["umount", path], check=True)
    subprocess.run(["chattr", "-R", "-f", "-i", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path + ".img"):
        os.remove(path + ".img")


def fresh_disk(path):
    """A new, empty 4 GiB ext4 filesystem mounted at `path` (sparse image beside it)."""
    remove(path)
    os.makedirs(path)
    with open(path + ".img", "wb") as f:
        f.truncate(4 << 30)
    sh("mkfs.ext4", "-q", "-F", path + ".img")
    sh("mount", "-o", "loop", path + ".img", path)


def fetched_bytes(server, since):
    return sum(size for status, size, _ in server.requests()[since:] if status in (200, 206))


def main():
    cairn = os.path.realpath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(dir="/var/tmp", prefix="cairn-bench-pull-")
    server = None
    try:
        tree = os.path.join(work, "tree")
        bench_commit.os_tree(tree)
        # The server: /v1 is the repository when only v1 was published, /v2 after v2
        # (and the delta v1 -> v2) joined it; both signed, with signed summaries.
        www = os.path.join(work, "www")
        build = os.path.join(www, "v2")
        os.makedirs(www)
        sh(cairn, "init", "--repo", build, "--mode", "archive")
        sh(cairn, "keygen", "--output", os.path.join(work, "vendor"))
        key, pub = os.path.join(work, "vendor.secret"), os.path.join(work, "vendor.pub")
        v1 = out(cairn, "commit", "--repo", build, "-b", "os/x", "--sign-key", key, "--add-metadata-string", "version=1", tree).split()[-1]
        sh(cairn, "summary", "--repo", build, "--update", "--sign-key", key)
        sh("cp", "-a", build, os.path.join(www, "v1"))

        # v2: about 2% of the regular files get new content.
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs
                       if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)))
        random.seed(2)
        changed = random.sample(files, max(1, len(files) // 50))
        least = 0
        for path in changed:
            data = open(path, "rb").read() + b"\n# cairn bench v2\n"
            open(path, "wb").write(data)
            least += len(gzip.compress(data, 6))
        v2 = out(cairn, "commit", "--repo", build, "-b", "os/x", "--sign-key", key, "--add-metadata-string", "version=2", tree).split()[-1]
        sh(cairn, "static-delta", "generate", "--repo", build, "--from", v1, "--to", v2)
        sh(cairn, "summary", "--repo", build, "--update", "--sign-key", key)
        server = serve_repo.Nginx(www, os.path.join(work, "nginx"))

        def client(tool, name, version):
            """A sysroot whose remote 'origin' is the server at `version`."""
            root = os.path.join(work, name)
            fresh_disk(root)
            url = server.url + "/" + version
            if tool == "cairn":
                sh(cairn, "sysroot", "init", root, "--stateroot", "os")
                sh(cairn, "remote", "add", "--sysroot", root, "--sign-keys", pub, "origin", url)
            else:
                sh("ostree", "admin", "init-fs", root)
                sh("ostree", "admin", "os-init", "--sysroot=" + root, "os")
                sh("ostree", "remote", "add", "--repo=" + root + "/ostree/repo", "--no-gpg-verify", "origin", url)
            return root

        def repoint(tool, root, version):
            url = server.url + "/" + version
            if tool == "cairn":
                sh(cairn, "remote", "delete", "--sysroot", root, "origin")
                sh(cairn, "remote", "add", "--sysroot", root, "--sign-keys", pub, "origin", url)
            else:
                sh("ostree", "remote", "delete", "--repo=" + root + "/ostree/repo", "origin")
                sh("ostree", "remote", "add", "--repo=" + root + "/ostree/repo", "--no-gpg-verify", "origin", url)

        t = {k: [] for k in ("cairn pull", "ostree pull", "cairn upgrade", "ostree upgrade", "cairn deploy", "ostree deploy",
                             "cairn deploy v2", "ostree deploy v2")}
        delta_bytes, plain_bytes = [], []
        for i in range(rounds):
            for tool in (["cairn", "ostree"] if i % 2 == 0 else ["ostree", "cairn"]):
                root = client(tool, tool, "v1")
                if tool == "cairn":
                    t["cairn pull"].append(timed(cairn, "pull", "--sysroot", root, "origin:os/x"))
                    t["cairn deploy"].append(timed(cairn, "deploy", "--sysroot", root, "origin:os/x"))
                else:
                    t["ostree pull"].append(timed("ostree", "pull", "--repo=" + root + "/ostree/repo", "origin", "os/x"))
                    t["ostree deploy"].append(timed("ostree", "admin", "deploy", "--sysroot=" + root, "--os=os", "origin:os/x"))
                # The server publishes v2: the upgrade.
                repoint(tool, root, "v2")
                since = len(server.requests())
                if tool == "cairn":
                    t["cairn upgrade"].append(timed(cairn, "upgrade", "--sysroot", root))
                    delta_bytes.append(fetched_bytes(server, since))
                else:
                    start = time.perf_counter()
                    sh("ostree", "pull", "--repo=" + root + "/ostree/repo", "origin", "os/x")
                    sh("ostree", "admin", "deploy", "--sysroot=" + root, "--os=os", "origin:os/x")
                    t["ostree upgrade"].append(time.perf_counter() - start)
                remove(root)
            # The same upgrade object by object, for its bytes, and the deploy
            # right after that pull, /var in use.
            for tool in ("cairn", "ostree"):
                root = client(tool, "plain-" + tool, "v1")
                if tool == "cairn":
                    sh(cairn, "switch", "--sysroot", root, "origin:os/x")
                    repoint("cairn", root, "v2")
                    since = len(server.requests())
                    sh(cairn, "upgrade", "--sysroot", root, "--pull-only", "--disable-static-deltas")
                    plain_bytes.append(fetched_bytes(server, since))
                    t["cairn deploy v2"].append(timed(cairn, "deploy", "--sysroot", root, "origin:os/x"))
                else:
                    sh("ostree", "pull", "--repo=" + root + "/ostree/repo", "origin", "os/x")
                    sh("ostree", "admin", "deploy", "--sysroot=" + root, "--os=os", "origin:os/x")
                    repoint("ostree", root, "v2")
                    sh("ostree", "pull", "--repo=" + root + "/ostree/repo", "--disable-static-deltas", "origin", "os/x")
                    t["ostree deploy v2"].append(timed("ostree", "admin", "deploy", "--sysroot=" + root, "--os=os", "origin:os/x"))
                remove(root)
    finally:
        if server:
            server.stop()
        for name in os.listdir(work):
            if os.path.ismount(os.path.join(work, name)):
                remove(os.path.join(work, name))
        remove(work)

    m = {k: statistics.median(v) for k, v in t.items()}
    print("%s, %d cores, %s; minbase + kernel, %d of %d files changed in v2; %d rounds\n"
          % (platform.node(), os.cpu_count(), time.strftime("%Y-%m-%d"), len(changed), len(files), rounds))
    print("| | cairn median (s) | ostree median (s) | cairn / ostree |")
    print("|---|---|---|---|")
    for label, c, o in (("pull v1 into a fresh repository", "cairn pull", "ostree pull"),
                        ("first deploy right after the pull (cairn also fills /var)", "cairn deploy", "ostree deploy"),
                        ("deploy of v2 right after its pull (/var in use)", "cairn deploy v2", "ostree deploy v2"),
                        ("upgrade v1 -> v2 (pull + deploy)", "cairn upgrade", "ostree upgrade")):
        print("| %s | %.3f | %.3f | **%.2f×** |" % (label, m[c], m[o], m[c] / m[o]))
    d, p = statistics.median(delta_bytes), statistics.median(plain_bytes)
    print("\nBytes fetched for the upgrade v1 -> v2 (%d changed files, %s gzip -6 at least):" % (len(changed), serve_repo_size(least)))
    print("with the static delta %s (**%.2f×**), object by object %s (**%.2f×**)" % (serve_repo_size(d), d / least, serve_repo_size(p), p / least))


def serve_repo_size(n):
    return "%.1f KiB" % (n / 1024) if n < 1 << 20 else "%.2f MiB" % (n / (1 << 20))


if __name__ == "__main__":
    main()

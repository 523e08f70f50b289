"""Wall time and peak memory of one command, for the benchmark scripts.

Peak memory comes from GNU time (`/usr/bin/time -f %M`), not from wait4 on
a child Python spawned: Python starts children with vfork, and Linux counts
the parent's pages (13 MiB of Python) in the child's ru_maxrss until it
execs, which put a 13 MiB floor under every figure. time's own fork is
about 1 MiB. For a shell command, the figure is the largest process of the
pipeline (Linux reports the maximum over the waited-for descendants).
"""
import os, subprocess, tempfile, time


def run(cmd, shell=False, stdin=None):
    """Wall seconds and peak RSS (MiB) of `cmd` (a list, or with shell=True a string)."""
    with tempfile.NamedTemporaryFile("r", prefix="cairn-bench-rss.") as out:
        argv = ["/usr/bin/time", "-f", "%M", "-o", out.name] + (["sh", "-c", cmd] if shell else list(cmd))
        t = time.perf_counter()
        p = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit("failed: %s: %s" % (cmd if shell else " ".join(cmd), p.stderr.decode()))
        return wall, int(out.read().strip().splitlines()[-1]) / 1024

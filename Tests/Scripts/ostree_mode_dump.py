#!/usr/bin/env python3
"""Writes the composefs dump of an ostree commit by the rules of the
composefs spec section 17, from what independent tools say: Debian's
`ostree ls -R -C` for the tree and `fsverity digest` for the objects.

usage: ostree_mode_dump.py REPO COMMIT OUT.dump   (commit made with --no-xattrs)
"""
import re
import subprocess
import sys

repo, commit, out = sys.argv[1:4]
listing = subprocess.run(["ostree", "ls", "--repo=" + repo, "-R", "-C", commit],
                         capture_output=True, check=True).stdout


def esc(b):
    r = ""
    for ch in b:
        if ch == 0x5C:
            r += "\\\\"
        elif 0x21 <= ch < 0x7F and ch != 0x3D:
            r += chr(ch)
        else:
            r += "\\x%02x" % ch
    return r if r != "-" else "\\x2d"


entries = []
for line in listing.split(b"\n"):
    if not line:
        continue
    kind, mode = line[:1], int(line[1:6], 8)
    f = re.split(rb" +", line, maxsplit=4)
    uid, gid, size, rest = int(f[1]), int(f[2]), int(f[3]), f[4]
    if kind == b"d":
        path = rest.split(b" ", 2)[2]  # contents checksum, metadata checksum, path
        entries.append((path, "d", 0o040000 | mode, uid, gid, 0, None, None))
    elif kind == b"l":
        path, target = rest.split(b" ", 1)[1].split(b" -> ", 1)
        entries.append((path, "l", 0o120000 | mode, uid, gid, len(target), target, None))
    else:
        csum, path = rest.split(b" ", 1)
        csum = csum.decode()
        payload = digest = None
        if size > 0:
            obj = "%s/objects/%s/%s.file" % (repo, csum[:2], csum[2:])
            digest = subprocess.run(["fsverity", "digest", "--compact", obj], capture_output=True,
                                    check=True, text=True).stdout.strip()
            payload = ("%s/%s.file" % (csum[:2], csum[2:])).encode()
        entries.append((path, "f", 0o100000 | mode, uid, gid, size, payload, digest))

paths = {e[0] for e in entries}
for top in [b"/usr", b"/etc", b"/boot", b"/var", b"/sysroot"]:
    if top not in paths:
        entries.append((top, "d", 0o040755, 0, 0, 0, None, None))
# Parents before children.
entries.sort(key=lambda e: (e[0] != b"/", e[0].count(b"/"), e[0]))
subdirs = {}
for e in entries:
    if e[1] == "d" and e[0] != b"/":
        parent = e[0].rsplit(b"/", 1)[0] or b"/"
        subdirs[parent] = subdirs.get(parent, 0) + 1
with open(out, "w") as o:
    for path, kind, mode, uid, gid, size, payload, digest in entries:
        nlink = 2 + subdirs.get(path, 0) if kind == "d" else 1
        o.write("%s %d %o %d %d %d 0 0.0 %s - %s\n" % (esc(path), size, mode, nlink, uid, gid,
                                                       esc(payload) if payload else "-", digest or "-"))

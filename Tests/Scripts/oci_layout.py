#!/usr/bin/env python3
"""Rewrites OCI image layouts for the tests, keeping every digest, size and
diff_id consistent unless told to break one. Each command reads the image
tagged FROM in LAYOUT and writes a new manifest tagged TO (blobs are
shared, so break a copy of a layout, not the original).

  add-layer LAYOUT FROM TO TARFILE none|gzip|zstd
  recompress LAYOUT FROM TO none|gzip|zstd      every layer
  break LAYOUT FROM TO CASE N [ARG]             layer N (1-based):
      flip-byte [TEXT]  a byte of the blob (the first of TEXT) changed, descriptor kept
      truncate-blob     the blob file cut to half, descriptor kept
      missing-blob      the blob file deleted
      media-type TYPE   the descriptor's media type set to TYPE
      diff-id           the config's diff_id for it changed
      truncate-tar      the uncompressed tar cut inside a member's data,
                        recompressed, every digest made to match
"""
import gzip, hashlib, json, os, subprocess, sys

TYPES = {"none": "application/vnd.oci.image.layer.v1.tar",
         "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
         "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":"))


def read_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        return f.read()


def put_blob(layout, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(layout, digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return digest


def load(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    entry = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
    manifest = json.loads(read_blob(layout, entry["digest"]))
    config = json.loads(read_blob(layout, manifest["config"]["digest"]))
    return index, manifest, config


def save(layout, index, manifest, config, tag):
    data = json.dumps(config).encode()
    manifest["config"]["digest"], manifest["config"]["size"] = put_blob(layout, data), len(data)
    data = json.dumps(manifest).encode()
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put_blob(layout, data), "size": len(data),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag] + [entry]
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)


def decompress(media_type, data):
    if media_type.endswith("gzip"):
        return gzip.decompress(data)
    if media_type.endswith("zstd"):
        return subprocess.run(["zstd", "-dq", "-c"], input=data, capture_output=True, check=True).stdout
    return data


def compress(kind, data):
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    return data


def kind_of(media_type):
    return "gzip" if media_type.endswith("gzip") else "zstd" if media_type.endswith("zstd") else "none"


def set_layer(layout, manifest, config, i, tar, kind):
    blob = compress(kind, tar)
    manifest["layers"][i] = {"mediaType": TYPES[kind], "digest": put_blob(layout, blob), "size": len(blob)}
    config["rootfs"]["diff_ids"][i] = "sha256:" + hashlib.sha256(tar).hexdigest()


def main():
    cmd, layout, src, dst = sys.argv[1:5]
    args = sys.argv[5:]
    index, manifest, config = load(layout, src)
    if cmd == "add-layer":
        with open(args[0], "rb") as f:
            tar = f.read()
        manifest["layers"].append(None)
        config["rootfs"]["diff_ids"].append(None)
        set_layer(layout, manifest, config, len(manifest["layers"]) - 1, tar, args[1])
    elif cmd == "recompress":
        for i, layer in enumerate(manifest["layers"]):
            set_layer(layout, manifest, config, i, decompress(layer["mediaType"], read_blob(layout, layer["digest"])), args[0])
    elif cmd == "break":
        case, i = args[0], int(args[1]) - 1
        layer = manifest["layers"][i]
        path = blob_path(layout, layer["digest"])
        if case == "flip-byte":
            data = bytearray(read_blob(layout, layer["digest"]))
            at = data.find(args[2].encode()) if len(args) > 2 else len(data) // 2
            data[at] ^= 0x01
            with open(path, "wb") as f:
                f.write(data)
        elif case == "truncate-blob":
            data = read_blob(layout, layer["digest"])
            with open(path, "wb") as f:
                f.write(data[:len(data) // 2])
        elif case == "missing-blob":
            os.unlink(path)
        elif case == "media-type":
            layer["mediaType"] = args[2]
        elif case == "diff-id":
            config["rootfs"]["diff_ids"][i] = "sha256:" + hashlib.sha256(b"not this layer").hexdigest()
        elif case == "truncate-tar":
            tar = decompress(layer["mediaType"], read_blob(layout, layer["digest"]))
            # Inside the data of the largest member: past its header, before its end.
            set_layer(layout, manifest, config, i, tar[:int(args[2])], kind_of(layer["mediaType"]))
        else:
            sys.exit("unknown case " + case)
    else:
        sys.exit("unknown command " + cmd)
    save(layout, index, manifest, config, dst)


if __name__ == "__main__":
    main()

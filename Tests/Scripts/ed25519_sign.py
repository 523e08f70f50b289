#!/usr/bin/env python3
"""An independent ed25519 signer for the tests: signs the bytes of FILE with
a fresh key (python3-cryptography, raw Ed25519), writes the a{sv} that
ostree stores signatures in ({'ostree.sign.ed25519': [sig]}, serialized by
hand after the GVariant specification, not by GLib) to OUT, the public key
in base64 to PUB, and prints that key.

usage: ed25519_sign.py FILE OUT PUB
"""
import base64, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization


def width(body, n):
    for w in (1, 2, 4, 8):
        if body + n * w < 1 << (8 * w):
            return w


def array(elems, align):
    out, offs = b'', []
    for e in elems:
        out += b'\0' * (-len(out) % align) + e
        offs.append(len(out))
    w = width(len(out), len(offs))
    return out + b''.join(o.to_bytes(w, 'little') for o in offs)


def entry(key, value, vtype):
    k = key.encode() + b'\0'
    out = k + b'\0' * (-len(k) % 8) + value + b'\0' + vtype
    return out + len(k).to_bytes(width(len(out), 1), 'little')


key = Ed25519PrivateKey.generate()
raw = serialization.Encoding.Raw
pub = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
sig = key.sign(open(sys.argv[1], 'rb').read())
open(sys.argv[2], 'wb').write(array([entry('ostree.sign.ed25519', array([sig], 1), b'aay')], 8))
open(sys.argv[3], 'w').write(base64.b64encode(pub).decode() + '\n')
print(base64.b64encode(pub).decode())

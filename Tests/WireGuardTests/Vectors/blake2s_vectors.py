#!/usr/bin/env python3
"""Known answers for BLAKE2sTests.swift and KDFTests.swift, computed with Python's hashlib
and hmac (independent of the Swift implementation). Run: python3 blake2s_vectors.py"""
import hashlib
import hmac


def seq(n, seed):
    """RFC 7693 Appendix E selftest_seq: a Fibonacci-like byte sequence."""
    a = (0xDEAD4BAD * seed) & 0xFFFFFFFF
    b = 1
    out = bytearray()
    for _ in range(n):
        t = (a + b) & 0xFFFFFFFF
        a, b = b, t
        out.append((t >> 24) & 0xFF)
    return bytes(out)


def rfc7693_selftest():
    grand = hashlib.blake2s(digest_size=32)
    for outlen in (16, 20, 28, 32):
        for inlen in (0, 3, 64, 65, 255, 1024):
            data = seq(inlen, inlen)
            grand.update(hashlib.blake2s(data, digest_size=outlen).digest())
            key = seq(outlen, outlen)
            grand.update(hashlib.blake2s(data, digest_size=outlen, key=key).digest())
    return grand.hexdigest()


def kdf(key, data, n):
    """WireGuard whitepaper §5.4 KDF_n with HMAC-BLAKE2s."""
    def h(k, m):
        return hmac.new(k, m, hashlib.blake2s).digest()
    prk = h(key, data)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = h(prk, prev + bytes([i]))
        out.append(prev)
    return out


if __name__ == "__main__":
    print("selftest", rfc7693_selftest())
    print("abc", hashlib.blake2s(b"abc").hexdigest())
    # Keyed: key = bytes 0..31 (or shorter), message = bytes i % 251 of the given length.
    for keylen, msglen, outlen in [(32, 0, 32), (32, 1, 32), (32, 64, 32), (32, 65, 32), (16, 200, 16),
                                   (1, 3, 20), (32, 1000, 28), (32, 63, 1)]:
        key = bytes(range(keylen))
        msg = bytes(i % 251 for i in range(msglen))
        print("keyed", keylen, msglen, outlen, hashlib.blake2s(msg, key=key, digest_size=outlen).hexdigest())
    # HMAC-BLAKE2s: keys of 32, 0, 64 and 100 bytes (the last is hashed first, RFC 2104).
    for keylen, msglen in [(32, 0), (32, 33), (0, 10), (64, 100), (100, 64)]:
        key = bytes((7 * i + 1) % 256 for i in range(keylen))
        msg = bytes((3 * i) % 256 for i in range(msglen))
        print("hmac", keylen, msglen, hmac.new(key, msg, hashlib.blake2s).hexdigest())
    # KDF: key = 0x00..0x1f, input of 0, 32 and 50 bytes.
    for inlen in (0, 32, 50):
        key = bytes(range(32))
        data = bytes((255 - i) % 256 for i in range(inlen))
        print("kdf", inlen, " ".join(t.hex() for t in kdf(key, data, 3)))

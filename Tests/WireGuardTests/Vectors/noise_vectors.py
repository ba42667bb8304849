#!/usr/bin/env python3
"""An independent model of WireGuard's Noise_IKpsk2 handshake (whitepaper §5.4) that prints
the deterministic vectors embedded in HandshakeTests.swift. Uses `cryptography` for X25519
and ChaCha20-Poly1305 and hashlib/hmac for BLAKE2s. Run: python3 noise_vectors.py"""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"

# The fixed inputs (the Swift test uses the same).
INITIATOR_STATIC = bytes(range(1, 33))
RESPONDER_STATIC = bytes(range(33, 65))
INITIATOR_EPHEMERAL = bytes(range(65, 97))
RESPONDER_EPHEMERAL = bytes(range(97, 129))
PSK = bytes(range(129, 161))
INITIATOR_INDEX = 0x11223344
RESPONDER_INDEX = 0x55667788
SECONDS, NANOS = 1_700_000_000, 123_456_789


def HASH(*parts):
    return hashlib.blake2s(b"".join(parts)).digest()


def MAC(key, data):
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def HMAC(key, data):
    return hmac.new(key, data, hashlib.blake2s).digest()


def KDF(n, key, data):
    prk = HMAC(key, data)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = HMAC(prk, prev + bytes([i]))
        out.append(prev)
    return out


def pub(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def DH(priv, public):
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(public))


def AEAD(key, counter, plain, ad):
    return ChaCha20Poly1305(key).encrypt(b"\0" * 4 + struct.pack("<Q", counter), plain, ad)


def tai64n(seconds, nanos):
    return struct.pack(">QI", (1 << 62) + seconds, nanos - nanos % (1 << 24))


def handshake(psk):
    s_i, s_r, e_i, e_r = INITIATOR_STATIC, RESPONDER_STATIC, INITIATOR_EPHEMERAL, RESPONDER_EPHEMERAL
    S_i, S_r, E_i, E_r = pub(s_i), pub(s_r), pub(e_i), pub(e_r)

    # Initiation.
    c = HASH(CONSTRUCTION)
    h = HASH(HASH(c, IDENTIFIER), S_r)
    c = KDF(1, c, E_i)[0]                                   # e
    h = HASH(h, E_i)
    c, k = KDF(2, c, DH(e_i, S_r))                          # es
    enc_static = AEAD(k, 0, S_i, h)                         # s
    h = HASH(h, enc_static)
    c, k = KDF(2, c, DH(s_i, S_r))                          # ss
    enc_time = AEAD(k, 0, tai64n(SECONDS, NANOS), h)
    h = HASH(h, enc_time)
    msg = struct.pack("<I", 1) + struct.pack("<I", INITIATOR_INDEX) + E_i + enc_static + enc_time
    mac1 = MAC(HASH(b"mac1----", S_r), msg)
    initiation = msg + mac1 + b"\0" * 16

    # Response.
    c = KDF(1, c, E_r)[0]                                   # e
    h = HASH(h, E_r)
    c = KDF(1, c, DH(e_r, E_i))[0]                          # ee
    c = KDF(1, c, DH(e_r, S_i))[0]                          # se
    c, tau, k = KDF(3, c, psk)                              # psk
    h = HASH(h, tau)
    enc_nothing = AEAD(k, 0, b"", h)
    h = HASH(h, enc_nothing)
    msg = struct.pack("<III", 2, RESPONDER_INDEX, INITIATOR_INDEX) + E_r + enc_nothing
    mac1 = MAC(HASH(b"mac1----", S_i), msg)
    response = msg + mac1 + b"\0" * 16

    initiator_send, initiator_receive = KDF(2, c, b"")
    return initiation, response, initiator_send, initiator_receive


if __name__ == "__main__":
    print("initiator static public", pub(INITIATOR_STATIC).hex())
    print("responder static public", pub(RESPONDER_STATIC).hex())
    for name, psk in (("no psk", b"\0" * 32), ("psk", PSK)):
        init, resp, send, recv = handshake(psk)
        print(f"[{name}]")
        print("initiation", init.hex())
        print("response", resp.hex())
        print("initiator send", send.hex())
        print("initiator receive", recv.hex())

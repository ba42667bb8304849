#pragma once
// OpenSSL's libcrypto, for one thing only: the EVP ChaCha20-Poly1305 transport backend
// (WireGuard/TransportCipher.swift). Everything else cryptographic stays with libsodium.
#include <openssl/crypto.h>
#include <openssl/evp.h>

#pragma once
// Intel's ipsec-mb (libIPSec_MB), for the ChaCha20-Poly1305 transport backend
// (WireGuard/TransportCipher.swift). Debian's libipsec-mb-dev has no pkg-config file: the
// header is in the default include path and the module map links IPSec_MB.
#include <stdint.h>
#include <intel-ipsec-mb.h>

// Swift cannot call ipsec-mb's job API: IMB_GET_NEXT_JOB, IMB_SUBMIT_JOB and IMB_FLUSH_JOB
// are function-like macros (calls through the manager's function pointers), and IMB_JOB's
// fields sit in anonymous unions. This one helper runs one ChaCha20-Poly1305 job to
// completion on `mgr` (which must not be used by another thread meanwhile).

/// Seals (`encrypt` 1) or opens (`encrypt` 0) `length` bytes at `source` into `destination`
/// (the same memory, or disjoint) with the 32-byte `key` and 12-byte `nonce`. Writes the
/// 16-byte Poly1305 tag of the ciphertext to `tag`: on open it is the tag the ciphertext
/// should carry, which the caller compares in constant time with the one received.
/// Returns 1 when the job completed, 0 when ipsec-mb refused it (imb_get_errno says why).
static inline int xdpwg_imb_chacha20poly1305(IMB_MGR *mgr, const void *key, const void *nonce,
                                             const void *aad, uint64_t aad_length,
                                             const void *source, void *destination, uint64_t length,
                                             void *tag, int encrypt)
{
    // ipsec-mb rejects NULL pointers even for empty inputs (a keepalive has no payload).
    static const uint8_t empty[16];
    IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
    job->cipher_mode = IMB_CIPHER_CHACHA20_POLY1305;
    job->hash_alg = IMB_AUTH_CHACHA20_POLY1305;
    job->cipher_direction = encrypt ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    // Poly1305 covers the ciphertext: encrypt then hash when sealing, hash then decrypt when opening.
    job->chain_order = encrypt ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    job->enc_keys = key;
    job->dec_keys = key;
    job->key_len_in_bytes = 32;
    job->iv = nonce;
    job->iv_len_in_bytes = 12;
    job->src = source ? source : empty;
    job->dst = destination ? destination : (uint8_t *)empty;
    job->cipher_start_src_offset_in_bytes = 0;
    job->msg_len_to_cipher_in_bytes = length;
    job->hash_start_src_offset_in_bytes = 0;
    job->msg_len_to_hash_in_bytes = length;
    job->u.CHACHA20_POLY1305.aad = aad ? aad : empty;
    job->u.CHACHA20_POLY1305.aad_len_in_bytes = aad_length;
    job->auth_tag_output = tag;
    job->auth_tag_output_len_in_bytes = 16;
    job = IMB_SUBMIT_JOB(mgr);
    // ChaCha20-Poly1305 completes on submit; should a build of the library hold the job back,
    // flush it (one job in flight at most, so the flushed one is ours).
    if (job == NULL) job = IMB_FLUSH_JOB(mgr);
    if (job == NULL) return 0;
    return job->status == IMB_STATUS_COMPLETED;
}

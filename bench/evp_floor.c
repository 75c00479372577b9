/*
 * The native floor of one ChaCha20-Poly1305 seal through OpenSSL's EVP API,
 * without FFI or JavaScript: what the libcrypto backend's call sequence costs
 * in C. Compiled and run by `bench/crypto_bench.ts` when a C compiler and
 * OpenSSL's headers are present (a measurement only; nothing ships compiled).
 *
 *   cc -O2 -o /tmp/evp_floor bench/evp_floor.c -lcrypto && /tmp/evp_floor 1024
 *
 * Prints three lines, "<name> <ns per message>" (medians of 15 rounds):
 *   per-message   init(key, nonce), update, final, get tag: the backend's sequence
 *   key-kept      init(nonce only), update, final, get tag: the key set once
 *   update-only   update on one long stream: what `openssl speed -evp` times
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

enum { ROUNDS = 15, N = 100000, MAX = 65536 };

/** ns per seal of `size` bytes: init (with `key`, or the nonce alone when NULL), update, final, tag. */
static double per_message(EVP_CIPHER_CTX *ctx, const unsigned char *key, int size,
                          const unsigned char *in, unsigned char *out) {
  unsigned char nonce[12] = {0}, tag[16];
  int outl;
  double t0 = now_ns();
  for (int i = 0; i < N; i++) {
    nonce[4] = (unsigned char)i;
    nonce[5] = (unsigned char)(i >> 8);
    EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, 1);
    EVP_CipherUpdate(ctx, out, &outl, in, size);
    EVP_CipherFinal_ex(ctx, out + outl, &outl);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
  }
  return (now_ns() - t0) / N;
}

int main(int argc, char **argv) {
  int size = argc > 1 ? atoi(argv[1]) : 1024;
  if (size <= 0 || size > MAX) return 2;
  static unsigned char in[MAX], out[MAX + 16];
  unsigned char key[32] = {7};
  int outl;
  memset(in, 1, sizeof in);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL || EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), NULL, NULL, NULL, 1) != 1) {
    return 1;
  }
  double per[3][ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    per[0][r] = per_message(ctx, key, size, in, out);
    EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, 1);
    per[1][r] = per_message(ctx, NULL, size, in, out);
    EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, 1);
    double t0 = now_ns();
    for (int i = 0; i < N; i++) EVP_CipherUpdate(ctx, out, &outl, in, size);
    per[2][r] = (now_ns() - t0) / N;
  }
  const char *names[3] = {"per-message", "key-kept", "update-only"};
  for (int k = 0; k < 3; k++) {
    qsort(per[k], ROUNDS, sizeof(double), by_value);
    printf("%s %.1f\n", names[k], per[k][ROUNDS / 2]);
  }
  EVP_CIPHER_CTX_free(ctx);
  return 0;
}

/* The real libcudart on whatever libcuda.so.1 the process loads (the fake driver in CI),
 * with or without libvvram.so preloaded. Declares the few runtime functions it uses
 * itself (no CUDA headers needed) and links against libcudart.so.13.
 *
 * usage: cudart-exercise EXPECTED_TOTAL_BYTES BUFFERS BUFFER_BYTES
 * Checks: one device; cudaMemGetInfo's total; BUFFERS cudaMalloc'd buffers filled from
 * the host and read back byte for byte; cudaMemset; cudaMallocAsync/cudaFreeAsync and
 * async copies on a stream. Under libvvram.so it prints "stats: JSON" (vvram_stats_json)
 * while every buffer is held. Prints "ok: ..." per check; on failure a message on stderr
 * and exit 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
typedef void *cudaStream_t;
enum { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaMemGetInfo(size_t *free, size_t *total);
cudaError_t cudaMalloc(void **ptr, size_t size);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, int kind);
cudaError_t cudaMemset(void *ptr, int value, size_t count);
cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaMallocAsync(void **ptr, size_t size, cudaStream_t stream);
cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, cudaStream_t stream);
const char *cudaGetErrorString(cudaError_t error);

#define CHECK(call)                                                                        \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != 0) {                                                                     \
            fprintf(stderr, "cudart-exercise: %s failed: error %d (%s)\n", #call, e_,      \
                    cudaGetErrorString(e_));                                               \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static void fail(const char *what) {
    fprintf(stderr, "cudart-exercise: %s\n", what);
    exit(1);
}

/* Bytes that differ per buffer and per position. */
static void fill_pattern(unsigned char *bytes, size_t n, unsigned seed) {
    uint32_t x = 2463534242u ^ seed * 2654435761u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes[i] = (unsigned char)x;
    }
}

static void print_stats(void) {
    size_t (*stats_json)(char *, size_t) = (size_t (*)(char *, size_t))dlsym(RTLD_DEFAULT, "vvram_stats_json");
    if (!stats_json) return;
    size_t len = 1 << 16;
    for (;;) {
        char *buffer = malloc(len);
        size_t needed = stats_json(buffer, len);
        if (needed <= len) {
            printf("stats: %s\n", buffer);
            free(buffer);
            return;
        }
        free(buffer);
        len = needed * 2;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) fail("usage: cudart-exercise EXPECTED_TOTAL_BYTES BUFFERS BUFFER_BYTES");
    size_t expected_total = strtoull(argv[1], NULL, 10);
    int buffers = atoi(argv[2]);
    size_t size = strtoull(argv[3], NULL, 10);

    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    if (count != 1) fail("expected one device");
    printf("ok: devices %d\n", count);

    size_t free_bytes = 0, total = 0;
    CHECK(cudaMemGetInfo(&free_bytes, &total));
    if (total != expected_total || free_bytes > total) {
        fprintf(stderr, "cudart-exercise: cudaMemGetInfo free %zu total %zu, expected total %zu\n", free_bytes, total, expected_total);
        exit(1);
    }
    printf("ok: cudaMemGetInfo free %zu total %zu\n", free_bytes, total);

    void **device = calloc(buffers, sizeof(void *));
    unsigned char *host = malloc(size), *back = malloc(size);
    for (int i = 0; i < buffers; i++) {
        CHECK(cudaMalloc(&device[i], size));
        fill_pattern(host, size, i);
        CHECK(cudaMemcpy(device[i], host, size, cudaMemcpyHostToDevice));
    }
    print_stats();
    for (int i = 0; i < buffers; i++) {
        fill_pattern(host, size, i);
        memset(back, 0, size);
        CHECK(cudaMemcpy(back, device[i], size, cudaMemcpyDeviceToHost));
        if (memcmp(host, back, size) != 0) fail("a buffer did not read back byte for byte");
    }
    printf("ok: %d buffers of %zu bytes copied in and read back\n", buffers, size);

    CHECK(cudaMemset(device[buffers - 1], 0x5A, size));
    CHECK(cudaMemcpy(back, device[buffers - 1], size, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < size; i++)
        if (back[i] != 0x5A) fail("cudaMemset did not set every byte");
    printf("ok: cudaMemset\n");
    for (int i = 0; i < buffers; i++) CHECK(cudaFree(device[i]));

    cudaStream_t stream;
    CHECK(cudaStreamCreate(&stream));
    void *async = NULL;
    CHECK(cudaMallocAsync(&async, size, stream));
    fill_pattern(host, size, 1000);
    memset(back, 0, size);
    CHECK(cudaMemcpyAsync(async, host, size, cudaMemcpyHostToDevice, stream));
    CHECK(cudaMemcpyAsync(back, async, size, cudaMemcpyDeviceToHost, stream));
    CHECK(cudaFreeAsync(async, stream));
    CHECK(cudaStreamSynchronize(stream));
    if (memcmp(host, back, size) != 0) fail("stream-ordered buffer did not read back byte for byte");
    CHECK(cudaStreamDestroy(stream));
    printf("ok: cudaMallocAsync, async copies, cudaFreeAsync on a stream\n");
    free(device);
    free(host);
    free(back);
    return 0;
}

/* Door one (direct ELF binding) and door two (dlsym, both glibc symbol versions) under
 * libvvram.so. Linked against libcuda.so.1 like a CUDA program built with -lcuda; its
 * calls bind to the preloaded library's exports. Prints what it saw; exits 1 on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
CUresult cuInit(unsigned flags);
CUresult cuDevicePrimaryCtxRetain(void **ctx, int device);
CUresult cuCtxSetCurrent(void *ctx);
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size);
CUresult cuMemFree_v2(CUdeviceptr p);
CUresult cuMemGetInfo_v2(size_t *free, size_t *total);
size_t vvram_stats_json(char *buffer, size_t len) __attribute__((weak));

/* A reference to the old dlsym version, as binaries built before glibc 2.34 carry. */
void *dlsym_old(void *handle, const char *name);
__asm__(".symver dlsym_old,dlsym@GLIBC_2.2.5");

#define CHECK(call) do { CUresult r_ = (call); if (r_) { fprintf(stderr, "%s failed: %d\n", #call, r_); return 1; } } while (0)

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoull(argv[1], 0, 10) : 64;
  void *ctx;
  CHECK(cuInit(0));
  CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
  CHECK(cuCtxSetCurrent(ctx));
  size_t free_bytes, total;
  CHECK(cuMemGetInfo_v2(&free_bytes, &total));
  printf("direct: total %zu MiB\n", total >> 20);
  CUdeviceptr p[3];
  for (int i = 0; i < 3; i++) CHECK(cuMemAlloc_v2(&p[i], mib << 20));

  void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  void *new_version = dlsym(driver, "cuMemAlloc_v2");
  void *old_version = dlsym_old(driver, "cuMemAlloc_v2");
  void *bound = (void *)&cuMemAlloc_v2;
  printf("dlsym: new %s, old %s\n", new_version == bound ? "hooked" : "real", old_version == bound ? "hooked" : "real");
  printf("dlsym(RTLD_NEXT, malloc): %s\n", dlsym(RTLD_NEXT, "malloc") ? "found" : "missing");
  printf("dlsym(driver, cuInit): %s\n", dlsym(driver, "cuInit") == (void *)&cuInit ? "the driver's" : "other");

  if (vvram_stats_json) {
    char buffer[8192];
    if (vvram_stats_json(buffer, sizeof buffer) <= sizeof buffer) printf("stats: %s\n", buffer);
  }
  for (int i = 0; i < 3; i++) CHECK(cuMemFree_v2(p[i]));
  return 0;
}

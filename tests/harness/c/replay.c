/* Replays of interposer crash classes that need C: built twice, as a library linked into
 * the test program (its constructor calls CUDA before main) and as a library the program
 * loads with RTLD_LOCAL (its RTLD_NEXT lookups must resolve relative to itself). With
 * -DREPLAY_MAIN it is the program. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;

#ifndef REPLAY_MAIN
static int constructor_result = -1;

/* Initialises the driver and allocates and frees 4 MiB before main, through dlsym. */
__attribute__((constructor)) static void allocate_before_main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!cuda) {
        constructor_result = -2;
        return;
    }
    CUresult (*init)(unsigned) = (CUresult (*)(unsigned))dlsym(cuda, "cuInit");
    CUresult (*retain)(CUcontext *, int) = (CUresult (*)(CUcontext *, int))dlsym(cuda, "cuDevicePrimaryCtxRetain");
    CUresult (*set)(CUcontext) = (CUresult (*)(CUcontext))dlsym(cuda, "cuCtxSetCurrent");
    CUresult (*alloc)(CUdeviceptr *, size_t) = (CUresult (*)(CUdeviceptr *, size_t))dlsym(cuda, "cuMemAlloc_v2");
    CUresult (*release)(CUdeviceptr) = (CUresult (*)(CUdeviceptr))dlsym(cuda, "cuMemFree_v2");
    if (!init || !retain || !set || !alloc || !release) {
        constructor_result = -3;
        return;
    }
    CUcontext context = 0;
    CUdeviceptr p = 0;
    CUresult code = init(0);
    if (!code) code = retain(&context, 0);
    if (!code) code = set(context);
    if (!code) code = alloc(&p, 4u << 20);
    if (!code) code = release(p);
    constructor_result = code;
}

int replay_constructor_result(void) { return constructor_result; }

/* dlsym(RTLD_NEXT, name) from inside this library. */
void *replay_next(const char *name) { return dlsym(RTLD_NEXT, name); }
#else
int replay_constructor_result(void);

static const char *object_of(void *address) {
    Dl_info info;
    if (!address || !dladdr(address, &info) || !info.dli_fname) return "(nothing)";
    return info.dli_fname;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    printf("constructor before main: %d\n", replay_constructor_result());
    void *local = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!local) {
        printf("dlopen RTLD_LOCAL failed: %s\n", dlerror());
        return 1;
    }
    void *(*next)(const char *) = (void *(*)(const char *))dlsym(local, "replay_next");
    for (int i = 0; i < 3; i++) {
        /* Repeated lookups: HAMi-core's recursion guard made the second one return NULL. */
        printf("RTLD_NEXT malloc from a RTLD_LOCAL library: %s\n", strstr(object_of(next("malloc")), "libc") ? "libc" : object_of(next("malloc")));
    }
    printf("RTLD_NEXT cudnnCreate from a RTLD_LOCAL library: %s\n", next("cudnnCreate") ? "found" : "not found");
    return 0;
}
#endif

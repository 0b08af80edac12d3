/* vvram control API, exported by libvvram.so when it is preloaded.
 *
 * Find it from the application with dlsym(RTLD_DEFAULT, "vvram_version"), or from
 * Python with ctypes.CDLL(None).vvram_version. Return codes: 0 success, 1 bad
 * arguments, 2 invalid policy or name. */
#ifndef VVRAM_H
#define VVRAM_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* The library version, e.g. "0.1.0" (static storage). */
const char *vvram_version(void);

/* Replace the policy with a TOML text. Validated as `vvram check` does, and against the
 * machine (the call initialises the driver, as cuInit does, when the application has not
 * yet). Applies to allocations made from now on. On error returns 2 and writes
 * "<policy>:LINE:COLUMN: message" into error (error_len bytes). No call of this API ends
 * the process. */
int vvram_set_policy_toml(const char *toml, char *error, size_t error_len);

/* As vvram_set_policy_toml, under a name (a preset's, say; 1-128 characters, no control
 * characters) that error messages ("NAME:LINE:COLUMN: message") and statistics show
 * instead of "<policy>". */
int vvram_set_policy_named(const char *name, const char *toml, char *error, size_t error_len);

/* Replace the policy with a DisTorch2 allocation string ("cuda:0,2.5gb;cpu,*") for
 * compute device `device`. Errors as vvram_set_policy_toml. */
int vvram_set_alloc(const char *alloc, int device, char *error, size_t error_len);

/* Set the phase placement rules match on ("load", "sampling", ...); NULL or "" clears.
 * Names are 1-64 letters, digits, '_', '-' or '.'. */
int vvram_set_phase(const char *phase);

/* Set the tag placement rules match on for allocations from now on; NULL or "" clears. */
int vvram_set_tag(const char *tag);

/* Write the live state as JSON into buffer when it fits (len bytes, NUL-terminated).
 * Returns the bytes needed including the NUL: call again with a larger buffer if it is
 * more than len. Fields: version, pid, policy, active, phase, tag, devices[] {device,
 * reported_total, allocations, tiers[] {tier, used, capacity}}, host_pool_bytes,
 * allocations, frees, out_of_memory, fast_h2d_bytes, errors, and policy_error: why the
 * policy in force does not fit the machine (placement then stays inactive), or null. */
size_t vvram_stats_json(char *buffer, size_t len);

#ifdef __cplusplus
}
#endif
#endif

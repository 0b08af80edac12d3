//! What `cuGetProcAddress` knows about each entry point: the base name it is asked
//! for, the CUDA version that introduced this exact variant and the version whose newer
//! variant (often with another signature) replaced it. Facts from the CUDA 13.0
//! `cudaTypedefs.h` (`PFN_<base>_v<version>[_ptsz|_ptds]`).

use std::ffi::c_int;

/// The `cudaVersion` beyond every real one: the variant is the newest.
const NEWEST: c_int = c_int::MAX;

/// One exact symbol as `cuGetProcAddress` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// The exact exported symbol (`cuMemAlloc_v2`, `cuMemcpyHtoD_v2_ptds`).
    pub symbol: &'static str,
    /// The name `cuGetProcAddress` is asked for (`cuMemAlloc`, `cuMemcpyHtoD`).
    pub base: &'static str,
    /// The first `cudaVersion` that answers this variant.
    pub since: c_int,
    /// The first `cudaVersion` that answers a newer variant instead (`c_int::MAX` if none).
    pub until: c_int,
    /// Whether it is the per-thread default stream variant (`_ptsz`/`_ptds`).
    pub per_thread: bool,
}

impl Variant {
    /// Whether `cuGetProcAddress(base, cudaVersion = version, flags)` answers this
    /// variant; `per_thread` is whether the flags ask for per-thread default stream
    /// semantics (a base name without such a variant answers the plain one either way).
    pub fn answers(&self, version: c_int, per_thread: bool) -> bool {
        let wants_twin = per_thread && VARIANTS.iter().any(|v| v.base == self.base && v.per_thread && v.since <= version);
        self.since <= version && version < self.until && self.per_thread == wants_twin
    }

    /// A `cudaVersion` that answers this variant.
    pub fn version(&self) -> c_int {
        if self.until == NEWEST { self.since.max(12000) } else { self.until - 1 }
    }
}

/// Whether a symbol name ends in `_ptsz` or `_ptds`.
const fn is_per_thread(symbol: &str) -> bool {
    let b = symbol.as_bytes();
    let n = b.len();
    n > 5 && b[n - 5] == b'_' && b[n - 4] == b'p' && b[n - 3] == b't'
}

macro_rules! variants {
    ($(($symbol:literal, $base:literal, $since:expr, $until:expr)),* $(,)?) => {
        /// Every entry point of [`crate::DriverApi`], as `cuGetProcAddress` gives it.
        pub static VARIANTS: &[Variant] = &[$(Variant {
            symbol: $symbol,
            base: $base,
            since: $since,
            until: $until,
            per_thread: is_per_thread($symbol),
        }),*];
    };
}

variants![
    ("cuInit", "cuInit", 2000, NEWEST),
    ("cuDriverGetVersion", "cuDriverGetVersion", 2020, NEWEST),
    ("cuDeviceGet", "cuDeviceGet", 2000, NEWEST),
    ("cuDeviceGetCount", "cuDeviceGetCount", 2000, NEWEST),
    ("cuDeviceGetName", "cuDeviceGetName", 2000, NEWEST),
    ("cuDeviceTotalMem_v2", "cuDeviceTotalMem", 3020, NEWEST),
    ("cuDeviceGetAttribute", "cuDeviceGetAttribute", 2000, NEWEST),
    ("cuDeviceCanAccessPeer", "cuDeviceCanAccessPeer", 4000, NEWEST),
    ("cuDeviceGetPCIBusId", "cuDeviceGetPCIBusId", 4010, NEWEST),
    ("cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain", 7000, NEWEST),
    ("cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease", 11000, NEWEST),
    ("cuDevicePrimaryCtxGetState", "cuDevicePrimaryCtxGetState", 7000, NEWEST),
    ("cuCtxSetCurrent", "cuCtxSetCurrent", 4000, NEWEST),
    ("cuCtxGetCurrent", "cuCtxGetCurrent", 4000, NEWEST),
    ("cuCtxGetDevice", "cuCtxGetDevice", 2000, 13000),
    ("cuCtxSynchronize", "cuCtxSynchronize", 2000, 13000),
    ("cuCtxEnablePeerAccess", "cuCtxEnablePeerAccess", 4000, NEWEST),
    ("cuMemGetInfo_v2", "cuMemGetInfo", 3020, NEWEST),
    ("cuMemAllocHost_v2", "cuMemAllocHost", 3020, NEWEST),
    ("cuMemFreeHost", "cuMemFreeHost", 2000, NEWEST),
    ("cuMemAlloc_v2", "cuMemAlloc", 3020, NEWEST),
    ("cuMemAllocPitch_v2", "cuMemAllocPitch", 3020, NEWEST),
    ("cuMemFree_v2", "cuMemFree", 3020, NEWEST),
    ("cuMemAllocAsync", "cuMemAllocAsync", 11020, NEWEST),
    ("cuMemAllocAsync_ptsz", "cuMemAllocAsync", 11020, NEWEST),
    ("cuMemFreeAsync", "cuMemFreeAsync", 11020, NEWEST),
    ("cuMemFreeAsync_ptsz", "cuMemFreeAsync", 11020, NEWEST),
    ("cuDeviceGetDefaultMemPool", "cuDeviceGetDefaultMemPool", 11020, NEWEST),
    ("cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync", 11020, NEWEST),
    ("cuMemAllocFromPoolAsync_ptsz", "cuMemAllocFromPoolAsync", 11020, NEWEST),
    ("cuMemGetAddressRange_v2", "cuMemGetAddressRange", 3020, NEWEST),
    ("cuPointerGetAttribute", "cuPointerGetAttribute", 4000, NEWEST),
    ("cuPointerGetAttributes", "cuPointerGetAttributes", 7000, NEWEST),
    ("cuMemcpy", "cuMemcpy", 4000, NEWEST),
    ("cuMemcpy_ptds", "cuMemcpy", 7000, NEWEST),
    ("cuMemcpyAsync", "cuMemcpyAsync", 4000, NEWEST),
    ("cuMemcpyAsync_ptsz", "cuMemcpyAsync", 7000, NEWEST),
    ("cuMemcpyHtoD_v2", "cuMemcpyHtoD", 3020, NEWEST),
    ("cuMemcpyHtoD_v2_ptds", "cuMemcpyHtoD", 7000, NEWEST),
    ("cuMemcpyDtoH_v2", "cuMemcpyDtoH", 3020, NEWEST),
    ("cuMemcpyDtoH_v2_ptds", "cuMemcpyDtoH", 7000, NEWEST),
    ("cuMemcpyDtoD_v2", "cuMemcpyDtoD", 3020, NEWEST),
    ("cuMemcpyDtoD_v2_ptds", "cuMemcpyDtoD", 7000, NEWEST),
    ("cuMemcpyHtoDAsync_v2", "cuMemcpyHtoDAsync", 3020, NEWEST),
    ("cuMemcpyHtoDAsync_v2_ptsz", "cuMemcpyHtoDAsync", 7000, NEWEST),
    ("cuMemcpyDtoHAsync_v2", "cuMemcpyDtoHAsync", 3020, NEWEST),
    ("cuMemcpyDtoHAsync_v2_ptsz", "cuMemcpyDtoHAsync", 7000, NEWEST),
    ("cuMemcpyDtoDAsync_v2", "cuMemcpyDtoDAsync", 3020, NEWEST),
    ("cuMemcpyDtoDAsync_v2_ptsz", "cuMemcpyDtoDAsync", 7000, NEWEST),
    ("cuMemcpyPeer", "cuMemcpyPeer", 4000, NEWEST),
    ("cuMemcpyPeerAsync", "cuMemcpyPeerAsync", 4000, NEWEST),
    ("cuMemsetD8_v2", "cuMemsetD8", 3020, NEWEST),
    ("cuMemsetD32_v2", "cuMemsetD32", 3020, NEWEST),
    ("cuMemsetD8Async", "cuMemsetD8Async", 3020, NEWEST),
    ("cuMemsetD32Async", "cuMemsetD32Async", 3020, NEWEST),
    ("cuStreamCreate", "cuStreamCreate", 2000, NEWEST),
    ("cuStreamDestroy_v2", "cuStreamDestroy", 4000, NEWEST),
    ("cuStreamSynchronize", "cuStreamSynchronize", 2000, NEWEST),
    ("cuStreamSynchronize_ptsz", "cuStreamSynchronize", 7000, NEWEST),
    ("cuStreamQuery", "cuStreamQuery", 2000, NEWEST),
    ("cuStreamWaitEvent", "cuStreamWaitEvent", 3020, NEWEST),
    ("cuStreamWaitEvent_ptsz", "cuStreamWaitEvent", 7000, NEWEST),
    ("cuEventCreate", "cuEventCreate", 2000, NEWEST),
    ("cuEventRecord", "cuEventRecord", 2000, NEWEST),
    ("cuEventRecord_ptsz", "cuEventRecord", 7000, NEWEST),
    ("cuEventQuery", "cuEventQuery", 2000, NEWEST),
    ("cuEventSynchronize", "cuEventSynchronize", 2000, NEWEST),
    ("cuEventDestroy_v2", "cuEventDestroy", 4000, NEWEST),
    ("cuEventElapsedTime", "cuEventElapsedTime", 2000, 12080),
    ("cuMemAddressReserve", "cuMemAddressReserve", 10020, NEWEST),
    ("cuMemAddressFree", "cuMemAddressFree", 10020, NEWEST),
    ("cuMemCreate", "cuMemCreate", 10020, NEWEST),
    ("cuMemRelease", "cuMemRelease", 10020, NEWEST),
    ("cuMemMap", "cuMemMap", 10020, NEWEST),
    ("cuMemUnmap", "cuMemUnmap", 10020, NEWEST),
    ("cuMemSetAccess", "cuMemSetAccess", 10020, NEWEST),
    ("cuMemGetAllocationGranularity", "cuMemGetAllocationGranularity", 10020, NEWEST),
    ("cuMemRetainAllocationHandle", "cuMemRetainAllocationHandle", 11000, NEWEST),
    ("cuIpcGetMemHandle", "cuIpcGetMemHandle", 4010, NEWEST),
    ("cuModuleLoadData", "cuModuleLoadData", 2000, NEWEST),
    ("cuModuleUnload", "cuModuleUnload", 2000, NEWEST),
    ("cuLibraryUnload", "cuLibraryUnload", 12000, NEWEST),
    ("cuModuleGetFunction", "cuModuleGetFunction", 2000, NEWEST),
    ("cuLibraryLoadData", "cuLibraryLoadData", 12000, NEWEST),
    ("cuLibraryGetKernel", "cuLibraryGetKernel", 12000, NEWEST),
    ("cuFuncGetParamInfo", "cuFuncGetParamInfo", 12040, NEWEST),
    ("cuKernelGetParamInfo", "cuKernelGetParamInfo", 12040, NEWEST),
    ("cuLaunchKernel", "cuLaunchKernel", 4000, NEWEST),
    ("cuLaunchKernel_ptsz", "cuLaunchKernel", 7000, NEWEST),
    ("cuLaunchKernelEx", "cuLaunchKernelEx", 11060, NEWEST),
    ("cuLaunchKernelEx_ptsz", "cuLaunchKernelEx", 11060, NEWEST),
    ("cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", 9000, NEWEST),
    ("cuTensorMapEncodeTiled", "cuTensorMapEncodeTiled", 12000, NEWEST),
    ("cuTensorMapEncodeIm2col", "cuTensorMapEncodeIm2col", 12000, NEWEST),
    ("cuLaunchCooperativeKernel_ptsz", "cuLaunchCooperativeKernel", 9000, NEWEST),
    ("cuStreamBeginCapture_v2", "cuStreamBeginCapture", 10010, NEWEST),
    ("cuStreamBeginCapture_v2_ptsz", "cuStreamBeginCapture", 10010, NEWEST),
    ("cuStreamEndCapture", "cuStreamEndCapture", 10000, NEWEST),
    ("cuStreamEndCapture_ptsz", "cuStreamEndCapture", 10000, NEWEST),
    ("cuStreamIsCapturing", "cuStreamIsCapturing", 10000, NEWEST),
    ("cuStreamIsCapturing_ptsz", "cuStreamIsCapturing", 10000, NEWEST),
    ("cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags", 11040, NEWEST),
    ("cuGraphDestroy", "cuGraphDestroy", 10000, NEWEST),
    ("cuGraphExecDestroy", "cuGraphExecDestroy", 10000, NEWEST),
    ("cuGraphLaunch", "cuGraphLaunch", 10000, NEWEST),
    ("cuGraphLaunch_ptsz", "cuGraphLaunch", 10000, NEWEST),
    ("cuGetProcAddress", "cuGetProcAddress", 11030, 12000),
    ("cuGetProcAddress_v2", "cuGetProcAddress", 12000, NEWEST),
    ("cuGetErrorString", "cuGetErrorString", 6000, NEWEST),
    ("cuGetErrorName", "cuGetErrorName", 6000, NEWEST),
];

/// The variant of an exact symbol name.
pub fn variant(symbol: &str) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.symbol == symbol)
}

/// The exact symbol `cuGetProcAddress(base, version, flags)` answers, among [`VARIANTS`].
pub fn answered(base: &str, version: c_int, per_thread: bool) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.base == base && v.answers(version, per_thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_point_has_one_variant() {
        for name in crate::DriverApi::NAMES {
            assert_eq!(VARIANTS.iter().filter(|v| v.symbol == *name).count(), 1, "{name}");
        }
        assert_eq!(VARIANTS.len(), crate::DriverApi::NAMES.len());
    }

    #[test]
    fn versions_and_flags_pick_the_variant() {
        assert_eq!(answered("cuMemAlloc", 12000, false).map(|v| v.symbol), Some("cuMemAlloc_v2"));
        assert_eq!(answered("cuMemAlloc", 2000, false), None);
        assert_eq!(answered("cuMemcpyHtoD", 12000, true).map(|v| v.symbol), Some("cuMemcpyHtoD_v2_ptds"));
        assert_eq!(answered("cuMemcpyHtoD", 12000, false).map(|v| v.symbol), Some("cuMemcpyHtoD_v2"));
        assert_eq!(answered("cuMemCreate", 12000, true).map(|v| v.symbol), Some("cuMemCreate"));
        assert_eq!(answered("cuCtxSynchronize", 12000, false).map(|v| v.symbol), Some("cuCtxSynchronize"));
        assert_eq!(answered("cuCtxSynchronize", 13000, false), None, "the CUDA 13 variant takes a context");
        assert_eq!(answered("cuGetProcAddress", 11030, false).map(|v| v.symbol), Some("cuGetProcAddress"));
        assert_eq!(answered("cuGetProcAddress", 12000, false).map(|v| v.symbol), Some("cuGetProcAddress_v2"));
        for v in VARIANTS {
            assert!(v.answers(v.version(), v.per_thread), "{} at {}", v.symbol, v.version());
        }
    }
}

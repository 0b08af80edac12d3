//! `cuGetProcAddress` and `cuGetProcAddress_v2`: entry points by base name, CUDA version
//! and stream flags, as the driver gives them to libcudart.

use super::*;

/// One base name: the version that introduced each variant, and the per-thread twin.
struct Entry {
    base: &'static str,
    since: c_int,
    address: *const c_void,
    per_thread: Option<*const c_void>,
}

// SAFETY: function addresses are immutable and valid for the life of the library.
unsafe impl Sync for Entry {}
unsafe impl Send for Entry {}

macro_rules! table {
    ($(($base:literal, $since:literal, $func:path $(, $pt:path)?)),* $(,)?) => {
        vec![$(Entry {
            base: $base,
            since: $since,
            address: $func as *const c_void,
            per_thread: None $(.or(Some($pt as *const c_void)))?,
        }),*]
    };
}

fn entries() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        table![
            ("cuInit", 2000, cuInit),
            ("cuDriverGetVersion", 2020, cuDriverGetVersion),
            ("cuDeviceGet", 2000, cuDeviceGet),
            ("cuDeviceGetCount", 2000, cuDeviceGetCount),
            ("cuDeviceGetName", 2000, cuDeviceGetName),
            ("cuDeviceTotalMem", 3020, cuDeviceTotalMem_v2),
            ("cuDeviceGetAttribute", 2000, cuDeviceGetAttribute),
            ("cuDeviceGetPCIBusId", 4010, cuDeviceGetPCIBusId),
            ("cuDeviceCanAccessPeer", 4000, cuDeviceCanAccessPeer),
            ("cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
            ("cuDevicePrimaryCtxRelease", 7000, cuDevicePrimaryCtxRelease),
            ("cuDevicePrimaryCtxRelease", 11000, cuDevicePrimaryCtxRelease_v2),
            ("cuDevicePrimaryCtxGetState", 7000, cuDevicePrimaryCtxGetState),
            ("cuDeviceGetUuid", 9020, cuDeviceGetUuid),
            ("cuDeviceGetUuid", 11040, cuDeviceGetUuid_v2),
            ("cuCtxGetStreamPriorityRange", 5050, cuCtxGetStreamPriorityRange),
            ("cuDeviceGetDefaultMemPool", 11020, cuDeviceGetDefaultMemPool),
            ("cuDeviceGetMemPool", 11020, cuDeviceGetMemPool),
            ("cuMemPoolGetAttribute", 11020, cuMemPoolGetAttribute),
            ("cuMemPoolSetAttribute", 11020, cuMemPoolSetAttribute),
            ("cuMemPoolTrimTo", 11020, cuMemPoolTrimTo),
            ("cuStreamCreateWithPriority", 5050, cuStreamCreateWithPriority),
            ("cuStreamGetPriority", 5050, cuStreamGetPriority, cuStreamGetPriority_ptsz),
            ("cuStreamGetFlags", 5050, cuStreamGetFlags, cuStreamGetFlags_ptsz),
            ("cuStreamIsCapturing", 10000, cuStreamIsCapturing, cuStreamIsCapturing_ptsz),
            ("cuStreamBeginCapture", 10010, cuStreamBeginCapture_v2, cuStreamBeginCapture_v2_ptsz),
            ("cuStreamEndCapture", 10000, cuStreamEndCapture, cuStreamEndCapture_ptsz),
            ("cuGraphInstantiateWithFlags", 11040, cuGraphInstantiateWithFlags),
            ("cuGraphLaunch", 10000, cuGraphLaunch, cuGraphLaunch_ptsz),
            ("cuGraphDestroy", 10000, cuGraphDestroy),
            ("cuGraphExecDestroy", 10000, cuGraphExecDestroy),
            ("cuStreamGetCaptureInfo", 11030, cuStreamGetCaptureInfo_v2, cuStreamGetCaptureInfo_v2_ptsz),
            ("cuStreamGetCaptureInfo", 12030, cuStreamGetCaptureInfo_v3, cuStreamGetCaptureInfo_v3_ptsz),
            ("cuModuleGetLoadingMode", 11070, cuModuleGetLoadingMode),
            ("cuGetExportTable", 3000, cuGetExportTable),
            ("cuCtxSetCurrent", 4000, cuCtxSetCurrent),
            ("cuCtxGetCurrent", 4000, cuCtxGetCurrent),
            ("cuCtxGetDevice", 2000, cuCtxGetDevice),
            ("cuCtxGetDevice", 13000, cuCtxGetDevice_v2),
            ("cuCtxSynchronize", 2000, cuCtxSynchronize),
            ("cuCtxSynchronize", 13000, cuCtxSynchronize_v2),
            ("cuCtxEnablePeerAccess", 4000, cuCtxEnablePeerAccess),
            ("cuMemGetInfo", 3020, cuMemGetInfo_v2),
            ("cuMemAlloc", 3020, cuMemAlloc_v2),
            ("cuMemAllocPitch", 3020, cuMemAllocPitch_v2),
            ("cuMemFree", 3020, cuMemFree_v2),
            ("cuMemAllocAsync", 11020, cuMemAllocAsync, cuMemAllocAsync_ptsz),
            ("cuMemFreeAsync", 11020, cuMemFreeAsync, cuMemFreeAsync_ptsz),
            ("cuMemGetAddressRange", 3020, cuMemGetAddressRange_v2),
            ("cuPointerGetAttribute", 4000, cuPointerGetAttribute),
            ("cuPointerGetAttributes", 7000, cuPointerGetAttributes),
            ("cuMemcpy", 4000, cuMemcpy, cuMemcpy_ptds),
            ("cuMemcpyAsync", 4000, cuMemcpyAsync, cuMemcpyAsync_ptsz),
            ("cuMemcpyHtoD", 3020, cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds),
            ("cuMemcpyDtoH", 3020, cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds),
            ("cuMemcpyDtoD", 3020, cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds),
            ("cuMemcpyHtoDAsync", 3020, cuMemcpyHtoDAsync_v2, cuMemcpyHtoDAsync_v2_ptsz),
            ("cuMemcpyDtoHAsync", 3020, cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz),
            ("cuMemcpyDtoDAsync", 3020, cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz),
            ("cuMemcpyPeer", 4000, cuMemcpyPeer, cuMemcpyPeer_ptds),
            ("cuMemcpyPeerAsync", 4000, cuMemcpyPeerAsync, cuMemcpyPeerAsync_ptsz),
            ("cuMemsetD8", 3020, cuMemsetD8_v2, cuMemsetD8_v2_ptds),
            ("cuMemsetD32", 3020, cuMemsetD32_v2, cuMemsetD32_v2_ptds),
            ("cuMemsetD8Async", 3020, cuMemsetD8Async, cuMemsetD8Async_ptsz),
            ("cuMemsetD32Async", 3020, cuMemsetD32Async, cuMemsetD32Async_ptsz),
            ("cuStreamCreate", 2000, cuStreamCreate),
            ("cuStreamDestroy", 4000, cuStreamDestroy_v2),
            ("cuStreamSynchronize", 2000, cuStreamSynchronize, cuStreamSynchronize_ptsz),
            ("cuLaunchHostFunc", 10000, cuLaunchHostFunc, cuLaunchHostFunc_ptsz),
            ("cuStreamQuery", 2000, cuStreamQuery, cuStreamQuery_ptsz),
            ("cuStreamWaitEvent", 3020, cuStreamWaitEvent, cuStreamWaitEvent_ptsz),
            ("cuEventCreate", 2000, cuEventCreate),
            ("cuEventRecord", 2000, cuEventRecord, cuEventRecord_ptsz),
            ("cuEventQuery", 2000, cuEventQuery),
            ("cuEventSynchronize", 2000, cuEventSynchronize),
            ("cuEventDestroy", 4000, cuEventDestroy_v2),
            ("cuEventElapsedTime", 2000, cuEventElapsedTime),
            ("cuEventElapsedTime", 12080, cuEventElapsedTime_v2),
            ("cuMemAddressReserve", 10020, cuMemAddressReserve),
            ("cuMemAddressFree", 10020, cuMemAddressFree),
            ("cuMemCreate", 10020, cuMemCreate),
            ("cuMemRelease", 10020, cuMemRelease),
            ("cuMemMap", 10020, cuMemMap),
            ("cuMemUnmap", 10020, cuMemUnmap),
            ("cuMemSetAccess", 10020, cuMemSetAccess),
            ("cuMemGetAllocationGranularity", 10020, cuMemGetAllocationGranularity),
            ("cuMemRetainAllocationHandle", 11000, cuMemRetainAllocationHandle),
            ("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync),
            ("cuIpcGetMemHandle", 4010, cuIpcGetMemHandle),
            ("cuModuleLoadData", 2000, cuModuleLoadData),
            ("cuModuleUnload", 2000, cuModuleUnload),
            ("cuLibraryUnload", 12000, cuLibraryUnload),
            ("cuModuleGetFunction", 2000, cuModuleGetFunction),
            ("cuLibraryLoadData", 12000, cuLibraryLoadData),
            ("cuLibraryGetKernel", 12000, cuLibraryGetKernel),
            ("cuFuncGetParamInfo", 12040, cuFuncGetParamInfo),
            ("cuKernelGetParamInfo", 12040, cuKernelGetParamInfo),
            ("cuLaunchKernel", 4000, cuLaunchKernel, cuLaunchKernel_ptsz),
            ("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz),
            ("cuLaunchKernelEx", 11060, cuLaunchKernelEx, cuLaunchKernelEx_ptsz),
            ("cuTensorMapEncodeTiled", 12000, cuTensorMapEncodeTiled),
            ("cuTensorMapEncodeIm2col", 12000, cuTensorMapEncodeIm2col),
            ("cuGetProcAddress", 11030, cuGetProcAddress),
            ("cuGetProcAddress", 12000, cuGetProcAddress_v2),
            ("cuGetErrorString", 6000, cuGetErrorString),
            ("cuGetErrorName", 6000, cuGetErrorName),
        ]
    })
}

/// Looks a base name up: the newest variant not newer than `version`, its per-thread
/// twin when `flags` asks for per-thread default stream semantics.
/// `cuMemAlloc_v2` behind another address than the exported symbol's, as a driver may
/// answer `cuGetProcAddress` with an internal entry point (`FAKECUDA_PROC_INTERNAL=1`).
unsafe extern "C" fn internal_mem_alloc(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    entry("cuMemAlloc_v2", true, || unsafe { out(dptr, memory::allocate(current_device()?, bytes as u64)?) })
}

/// The internal entry points answered instead of the exported ones when configured.
fn internal_twin(address: *const c_void) -> *const c_void {
    if config().proc_internal && address == cuMemAlloc_v2 as *const c_void { internal_mem_alloc as *const c_void } else { address }
}

fn lookup(symbol: &str, version: c_int, flags: u64) -> Result<*const c_void, c_int> {
    let candidates: Vec<&Entry> = entries().iter().filter(|e| e.base == symbol).collect();
    if candidates.is_empty() {
        return unsupported::find(symbol).ok_or(CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    }
    let entry = candidates
        .into_iter()
        .filter(|e| e.since <= version)
        .max_by_key(|e| e.since)
        .ok_or(CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT)?;
    Ok(internal_twin(match entry.per_thread {
        Some(twin) if flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM != 0 => twin,
        _ => entry.address,
    }))
}

unsafe fn get_proc_address(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64, status: *mut c_int) -> Outcome {
    if symbol.is_null() || pfn.is_null() {
        return Err(result::INVALID_VALUE);
    }
    let name = unsafe { CStr::from_ptr(symbol) }.to_string_lossy();
    let found = lookup(&name, version, flags);
    unsafe {
        if !status.is_null() {
            status.write(match found {
                Ok(_) => CU_GET_PROC_ADDRESS_SUCCESS,
                Err(s) => s,
            });
        }
        pfn.write(found.map_or(std::ptr::null_mut(), |a| a as *mut c_void));
    }
    found.map(|_| ()).map_err(|_| result::NOT_FOUND)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64) -> CUresult {
    entry("cuGetProcAddress", false, || unsafe { get_proc_address(symbol, pfn, version, flags, std::ptr::null_mut()) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> CUresult {
    entry("cuGetProcAddress_v2", false, || unsafe { get_proc_address(symbol, pfn, version, flags, status) })
}

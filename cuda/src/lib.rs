//! The part of the CUDA driver API vvram uses, as plain C types.
//!
//! Enumerations are plain integers (`u32`/`c_int`), never Rust enums: a newer driver
//! may return codes this list does not know, and that must not be undefined behaviour.
//! [`DriverApi`] holds typed entry points looked up by name through any resolver
//! (`dlsym` on a handle, the shim's real `dlsym`, `cuGetProcAddress`).

#![allow(non_camel_case_types, non_snake_case)]

pub mod kernels;
pub mod layout;
mod variants;

pub use variants::{VARIANTS, Variant, answered, variant};

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

/// `CUresult`.
pub type CUresult = c_uint;
/// `CUdevice`.
pub type CUdevice = c_int;
/// `CUdeviceptr`: a device address.
pub type CUdeviceptr = u64;
/// `CUcontext`.
pub type CUcontext = *mut c_void;
/// `CUstream`.
pub type CUstream = *mut c_void;
/// `CUevent`.
pub type CUevent = *mut c_void;
/// `CUmodule`.
pub type CUmodule = *mut c_void;
/// `CUfunction`.
pub type CUfunction = *mut c_void;
/// `CUlibrary`.
pub type CUlibrary = *mut c_void;
/// `CUkernel` (launchable through `cuLaunchKernel` as a `CUfunction`).
pub type CUkernel = *mut c_void;
/// `CUgraph`.
pub type CUgraph = *mut c_void;
/// `CUgraphExec`.
pub type CUgraphExec = *mut c_void;
/// `CUmemoryPool`.
pub type CUmemoryPool = *mut c_void;
/// `CUipcMemHandle`: 64 opaque bytes.
pub type CUipcMemHandle = [u8; 64];
/// `CUmemGenericAllocationHandle`.
pub type CUmemGenericAllocationHandle = u64;

/// Result codes (`cudaError_enum`).
pub mod result {
    use super::CUresult;
    /// `CUDA_SUCCESS`.
    pub const SUCCESS: CUresult = 0;
    /// `CUDA_ERROR_INVALID_VALUE`.
    pub const INVALID_VALUE: CUresult = 1;
    /// `CUDA_ERROR_OUT_OF_MEMORY`.
    pub const OUT_OF_MEMORY: CUresult = 2;
    /// `CUDA_ERROR_NOT_INITIALIZED`.
    pub const NOT_INITIALIZED: CUresult = 3;
    /// `CUDA_ERROR_NO_DEVICE`.
    pub const NO_DEVICE: CUresult = 100;
    /// `CUDA_ERROR_INVALID_DEVICE`.
    pub const INVALID_DEVICE: CUresult = 101;
    /// `CUDA_ERROR_INVALID_IMAGE`.
    pub const INVALID_IMAGE: CUresult = 200;
    /// `CUDA_ERROR_INVALID_CONTEXT`.
    pub const INVALID_CONTEXT: CUresult = 201;
    /// `CUDA_ERROR_ALREADY_MAPPED`.
    pub const ALREADY_MAPPED: CUresult = 208;
    /// `CUDA_ERROR_NO_BINARY_FOR_GPU`.
    pub const NO_BINARY_FOR_GPU: CUresult = 209;
    /// `CUDA_ERROR_NOT_MAPPED`.
    pub const NOT_MAPPED: CUresult = 211;
    /// `CUDA_ERROR_PEER_ACCESS_UNSUPPORTED`.
    pub const PEER_ACCESS_UNSUPPORTED: CUresult = 217;
    /// `CUDA_ERROR_ILLEGAL_STATE`.
    pub const ILLEGAL_STATE: CUresult = 401;
    /// `CUDA_ERROR_INVALID_HANDLE`.
    pub const INVALID_HANDLE: CUresult = 400;
    /// `CUDA_ERROR_NOT_FOUND`.
    pub const NOT_FOUND: CUresult = 500;
    /// `CUDA_ERROR_NOT_READY`.
    pub const NOT_READY: CUresult = 600;
    /// `CUDA_ERROR_ILLEGAL_ADDRESS`.
    pub const ILLEGAL_ADDRESS: CUresult = 700;
    /// `CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED`.
    pub const PEER_ACCESS_ALREADY_ENABLED: CUresult = 704;
    /// `CUDA_ERROR_NOT_PERMITTED`.
    pub const NOT_PERMITTED: CUresult = 800;
    /// `CUDA_ERROR_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: CUresult = 801;
    /// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`: not allowed while a stream captures.
    pub const STREAM_CAPTURE_UNSUPPORTED: CUresult = 900;
    /// `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`: the capture was broken by an earlier error.
    pub const STREAM_CAPTURE_INVALIDATED: CUresult = 901;
    /// `CUDA_ERROR_STREAM_CAPTURE_IMPLICIT`: the legacy stream would wait for a capture.
    pub const STREAM_CAPTURE_IMPLICIT: CUresult = 906;
    /// `CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD`: capture ended from another thread.
    pub const STREAM_CAPTURE_WRONG_THREAD: CUresult = 908;
    /// `CUDA_ERROR_CAPTURED_EVENT`: not allowed on an event recorded in a capture.
    pub const CAPTURED_EVENT: CUresult = 907;
    /// `CUDA_ERROR_UNKNOWN`.
    pub const UNKNOWN: CUresult = 999;

    /// The driver's name of a result code (`CUDA_ERROR_…`), if known.
    pub fn name(code: CUresult) -> Option<&'static std::ffi::CStr> {
        Some(match code {
            SUCCESS => c"CUDA_SUCCESS",
            INVALID_VALUE => c"CUDA_ERROR_INVALID_VALUE",
            OUT_OF_MEMORY => c"CUDA_ERROR_OUT_OF_MEMORY",
            NOT_INITIALIZED => c"CUDA_ERROR_NOT_INITIALIZED",
            NO_DEVICE => c"CUDA_ERROR_NO_DEVICE",
            INVALID_DEVICE => c"CUDA_ERROR_INVALID_DEVICE",
            INVALID_IMAGE => c"CUDA_ERROR_INVALID_IMAGE",
            INVALID_CONTEXT => c"CUDA_ERROR_INVALID_CONTEXT",
            ALREADY_MAPPED => c"CUDA_ERROR_ALREADY_MAPPED",
            NO_BINARY_FOR_GPU => c"CUDA_ERROR_NO_BINARY_FOR_GPU",
            NOT_MAPPED => c"CUDA_ERROR_NOT_MAPPED",
            PEER_ACCESS_UNSUPPORTED => c"CUDA_ERROR_PEER_ACCESS_UNSUPPORTED",
            INVALID_HANDLE => c"CUDA_ERROR_INVALID_HANDLE",
            ILLEGAL_STATE => c"CUDA_ERROR_ILLEGAL_STATE",
            NOT_FOUND => c"CUDA_ERROR_NOT_FOUND",
            NOT_READY => c"CUDA_ERROR_NOT_READY",
            ILLEGAL_ADDRESS => c"CUDA_ERROR_ILLEGAL_ADDRESS",
            PEER_ACCESS_ALREADY_ENABLED => c"CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED",
            NOT_PERMITTED => c"CUDA_ERROR_NOT_PERMITTED",
            NOT_SUPPORTED => c"CUDA_ERROR_NOT_SUPPORTED",
            STREAM_CAPTURE_UNSUPPORTED => c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
            STREAM_CAPTURE_INVALIDATED => c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
            STREAM_CAPTURE_IMPLICIT => c"CUDA_ERROR_STREAM_CAPTURE_IMPLICIT",
            STREAM_CAPTURE_WRONG_THREAD => c"CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
            CAPTURED_EVENT => c"CUDA_ERROR_CAPTURED_EVENT",
            UNKNOWN => c"CUDA_ERROR_UNKNOWN",
            _ => return None,
        })
    }
}

/// `CUmemLocationType` values.
pub const CU_MEM_LOCATION_TYPE_DEVICE: c_uint = 1;
/// Host memory location.
pub const CU_MEM_LOCATION_TYPE_HOST: c_uint = 2;
/// Host memory on a NUMA node (`id` is the node).
pub const CU_MEM_LOCATION_TYPE_HOST_NUMA: c_uint = 3;
/// Host memory on the calling thread's NUMA node.
pub const CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT: c_uint = 4;
/// `CU_MEM_ALLOCATION_TYPE_PINNED`.
pub const CU_MEM_ALLOCATION_TYPE_PINNED: c_uint = 1;
/// `CU_MEM_ACCESS_FLAGS_PROT_NONE`.
pub const CU_MEM_ACCESS_FLAGS_PROT_NONE: c_uint = 0;
/// `CU_MEM_ACCESS_FLAGS_PROT_READ`.
pub const CU_MEM_ACCESS_FLAGS_PROT_READ: c_uint = 1;
/// `CU_MEM_ACCESS_FLAGS_PROT_READWRITE`.
pub const CU_MEM_ACCESS_FLAGS_PROT_READWRITE: c_uint = 3;
/// `CU_MEM_ALLOC_GRANULARITY_MINIMUM`.
pub const CU_MEM_ALLOC_GRANULARITY_MINIMUM: c_uint = 0;

/// `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`.
pub const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: c_int = 16;
/// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`.
pub const CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: c_int = 33;
/// `CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID`.
pub const CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: c_int = 34;
/// `CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING`.
pub const CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: c_int = 41;
/// `CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID`.
pub const CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: c_int = 50;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR`.
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
/// `CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED`.
pub const CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: c_int = 102;

/// `CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID`: the host NUMA node closest to the device (-1: none).
pub const CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID: c_int = 134;
/// `CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED`.
pub const CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: c_int = 141;

/// `CU_POINTER_ATTRIBUTE_CONTEXT`.
pub const CU_POINTER_ATTRIBUTE_CONTEXT: c_int = 1;
/// `CU_POINTER_ATTRIBUTE_MEMORY_TYPE`.
pub const CU_POINTER_ATTRIBUTE_MEMORY_TYPE: c_int = 2;
/// `CU_POINTER_ATTRIBUTE_DEVICE_POINTER`.
pub const CU_POINTER_ATTRIBUTE_DEVICE_POINTER: c_int = 3;
/// `CU_POINTER_ATTRIBUTE_HOST_POINTER`.
pub const CU_POINTER_ATTRIBUTE_HOST_POINTER: c_int = 4;
/// `CU_POINTER_ATTRIBUTE_BUFFER_ID`.
pub const CU_POINTER_ATTRIBUTE_BUFFER_ID: c_int = 7;
/// `CU_POINTER_ATTRIBUTE_IS_MANAGED`.
pub const CU_POINTER_ATTRIBUTE_IS_MANAGED: c_int = 8;
/// `CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL`.
pub const CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: c_int = 9;
/// `CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE`: whether `cuIpcGetMemHandle` works on it.
pub const CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: c_int = 10;
/// `CU_POINTER_ATTRIBUTE_RANGE_START_ADDR`.
pub const CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: c_int = 11;
/// `CU_POINTER_ATTRIBUTE_RANGE_SIZE`.
pub const CU_POINTER_ATTRIBUTE_RANGE_SIZE: c_int = 12;
/// `CU_POINTER_ATTRIBUTE_MAPPED`.
pub const CU_POINTER_ATTRIBUTE_MAPPED: c_int = 13;
/// `CU_MEMORYTYPE_HOST`.
pub const CU_MEMORYTYPE_HOST: c_uint = 1;
/// `CU_MEMORYTYPE_DEVICE`.
pub const CU_MEMORYTYPE_DEVICE: c_uint = 2;

/// `CU_STREAM_CAPTURE_MODE_GLOBAL`.
pub const CU_STREAM_CAPTURE_MODE_GLOBAL: c_uint = 0;
/// `CU_STREAM_CAPTURE_MODE_RELAXED`.
pub const CU_STREAM_CAPTURE_MODE_RELAXED: c_uint = 2;
/// `CU_STREAM_CAPTURE_STATUS_NONE`.
pub const CU_STREAM_CAPTURE_STATUS_NONE: c_uint = 0;
/// `CU_STREAM_CAPTURE_STATUS_ACTIVE`.
pub const CU_STREAM_CAPTURE_STATUS_ACTIVE: c_uint = 1;

/// `CU_STREAM_NON_BLOCKING`.
pub const CU_STREAM_NON_BLOCKING: c_uint = 1;
/// `CU_STREAM_LEGACY`: the legacy default stream as an explicit handle.
pub const CU_STREAM_LEGACY: usize = 1;
/// `CU_STREAM_PER_THREAD`: the per-thread default stream as an explicit handle.
pub const CU_STREAM_PER_THREAD: usize = 2;

/// `CU_LAUNCH_PARAM_END` in an `extra` array.
pub const CU_LAUNCH_PARAM_END: usize = 0;
/// `CU_LAUNCH_PARAM_BUFFER_POINTER`: the next entry is the packed parameter buffer.
pub const CU_LAUNCH_PARAM_BUFFER_POINTER: usize = 1;
/// `CU_LAUNCH_PARAM_BUFFER_SIZE`: the next entry points at a `size_t` with its size.
pub const CU_LAUNCH_PARAM_BUFFER_SIZE: usize = 2;

/// `CU_GET_PROC_ADDRESS_DEFAULT`.
pub const CU_GET_PROC_ADDRESS_DEFAULT: u64 = 0;
/// `CU_GET_PROC_ADDRESS_LEGACY_STREAM`.
pub const CU_GET_PROC_ADDRESS_LEGACY_STREAM: u64 = 1;
/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
pub const CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM: u64 = 2;
/// `CU_GET_PROC_ADDRESS_SUCCESS` (`CUdriverProcAddressQueryResult`).
pub const CU_GET_PROC_ADDRESS_SUCCESS: c_int = 0;
/// `CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND`.
pub const CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND: c_int = 1;
/// `CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT`.
pub const CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT: c_int = 2;

/// `CUmemLocation`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CUmemLocation {
    /// `CUmemLocationType`.
    pub type_: c_uint,
    /// Device ordinal or NUMA node.
    pub id: c_int,
}

/// `CUmemAllocationProp::allocFlags`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CUmemAllocationPropFlags {
    /// Compression type.
    pub compressionType: u8,
    /// Whether GPUDirect RDMA may be used.
    pub gpuDirectRDMACapable: u8,
    /// Usage flags.
    pub usage: u16,
    /// Reserved.
    pub reserved: [u8; 4],
}

/// `CUmemAllocationProp`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemAllocationProp {
    /// `CUmemAllocationType`.
    pub type_: c_uint,
    /// `CUmemAllocationHandleType` bits.
    pub requestedHandleTypes: c_uint,
    /// Where the memory lives.
    pub location: CUmemLocation,
    /// Windows only.
    pub win32HandleMetaData: *mut c_void,
    /// Flags.
    pub allocFlags: CUmemAllocationPropFlags,
}

impl CUmemAllocationProp {
    /// Pinned memory at `location`.
    pub fn pinned(location: CUmemLocation) -> CUmemAllocationProp {
        CUmemAllocationProp {
            type_: CU_MEM_ALLOCATION_TYPE_PINNED,
            requestedHandleTypes: 0,
            location,
            win32HandleMetaData: std::ptr::null_mut(),
            allocFlags: CUmemAllocationPropFlags::default(),
        }
    }
}

/// `CUmemAccessDesc`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CUmemAccessDesc {
    /// Who gets access.
    pub location: CUmemLocation,
    /// `CUmemAccess_flags`.
    pub flags: c_uint,
}

/// `CUlaunchAttribute` (opaque here: 8-byte id plus a 64-byte value union, which holds
/// 64-bit members and so aligns the struct to 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUlaunchAttribute {
    /// `CUlaunchAttributeID`.
    pub id: c_uint,
    /// Padding.
    pub pad: [u8; 4],
    /// The value union, as 64-bit words.
    pub value: [u64; 8],
}

/// `CU_TENSOR_MAP_DATA_TYPE_FLOAT32` (`CUtensorMapDataType`): 4-byte floats.
pub const CU_TENSOR_MAP_DATA_TYPE_FLOAT32: c_uint = 7;
/// `CU_TENSOR_MAP_DATA_TYPE_16U6_ALIGN16B`: the last data type CUDA 13 defines.
pub const CU_TENSOR_MAP_DATA_TYPE_16U6_ALIGN16B: c_uint = 15;
/// `CU_TENSOR_MAP_INTERLEAVE_NONE` (`CUtensorMapInterleave`).
pub const CU_TENSOR_MAP_INTERLEAVE_NONE: c_uint = 0;
/// `CU_TENSOR_MAP_INTERLEAVE_32B`: the last interleave.
pub const CU_TENSOR_MAP_INTERLEAVE_32B: c_uint = 2;
/// `CU_TENSOR_MAP_SWIZZLE_NONE` (`CUtensorMapSwizzle`).
pub const CU_TENSOR_MAP_SWIZZLE_NONE: c_uint = 0;
/// `CU_TENSOR_MAP_SWIZZLE_128B_ATOM_64B`: the last swizzle.
pub const CU_TENSOR_MAP_SWIZZLE_128B_ATOM_64B: c_uint = 6;
/// `CU_TENSOR_MAP_L2_PROMOTION_NONE` (`CUtensorMapL2promotion`).
pub const CU_TENSOR_MAP_L2_PROMOTION_NONE: c_uint = 0;
/// `CU_TENSOR_MAP_L2_PROMOTION_L2_256B`: the last promotion.
pub const CU_TENSOR_MAP_L2_PROMOTION_L2_256B: c_uint = 3;
/// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE` (`CUtensorMapFloatOOBfill`).
pub const CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE: c_uint = 0;
/// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA`: the last fill.
pub const CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA: c_uint = 1;

/// 64-bit words of a `CUtensorMap`.
pub const CU_TENSOR_MAP_NUM_QWORDS: usize = 16;

/// `CUtensorMap`: an opaque tensor-map descriptor (128 bytes, aligned to 128 in CUDA 13's
/// `cuda.h`), written by `cuTensorMapEncode*` and passed to kernels by value.
#[repr(C, align(128))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CUtensorMap {
    /// The driver's encoding.
    pub opaque: [u64; CU_TENSOR_MAP_NUM_QWORDS],
}

/// `CUlaunchConfig`, the first argument of `cuLaunchKernelEx`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUlaunchConfig {
    /// Grid size.
    pub gridDimX: c_uint,
    /// Grid size.
    pub gridDimY: c_uint,
    /// Grid size.
    pub gridDimZ: c_uint,
    /// Block size.
    pub blockDimX: c_uint,
    /// Block size.
    pub blockDimY: c_uint,
    /// Block size.
    pub blockDimZ: c_uint,
    /// Dynamic shared memory.
    pub sharedMemBytes: c_uint,
    /// Stream.
    pub hStream: CUstream,
    /// Attributes.
    pub attrs: *mut CUlaunchAttribute,
    /// Number of attributes.
    pub numAttrs: c_uint,
}

macro_rules! driver_api {
    ($($name:ident : fn($($arg:ident : $ty:ty),* $(,)?);)*) => {
        /// Function pointer types of the driver entry points, named `PFN_<symbol>`.
        pub mod pfn {
            use super::*;
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub type $name = unsafe extern "C" fn($($arg: $ty),*) -> CUresult;
            )*
        }

        /// Driver entry points looked up by their exact symbol names; `None` where the
        /// driver does not have one.
        #[derive(Clone, Copy)]
        pub struct DriverApi {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub $name: Option<pfn::$name>,
            )*
        }

        impl DriverApi {
            /// Looks every entry point up through `lookup` (a symbol name, NUL-terminated,
            /// to an address or null).
            pub fn load(mut lookup: impl FnMut(&'static [u8]) -> *mut c_void) -> DriverApi {
                DriverApi {
                    $(
                        // SAFETY: the symbol has this C signature in every driver since it was introduced.
                        $name: unsafe {
                            let address = lookup(concat!(stringify!($name), "\0").as_bytes());
                            if address.is_null() { None } else { Some(std::mem::transmute::<*mut c_void, pfn::$name>(address)) }
                        },
                    )*
                }
            }

            /// The symbol names this table covers.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];
        }
    };
}

driver_api! {
    cuInit: fn(flags: c_uint);
    cuDriverGetVersion: fn(version: *mut c_int);
    cuDeviceGet: fn(device: *mut CUdevice, ordinal: c_int);
    cuDeviceGetCount: fn(count: *mut c_int);
    cuDeviceGetName: fn(name: *mut c_char, len: c_int, device: CUdevice);
    cuDeviceTotalMem_v2: fn(bytes: *mut usize, device: CUdevice);
    cuDeviceGetAttribute: fn(value: *mut c_int, attribute: c_int, device: CUdevice);
    cuDeviceCanAccessPeer: fn(can: *mut c_int, device: CUdevice, peer: CUdevice);
    cuDeviceGetPCIBusId: fn(bus_id: *mut c_char, len: c_int, device: CUdevice);
    cuDevicePrimaryCtxRetain: fn(context: *mut CUcontext, device: CUdevice);
    cuDevicePrimaryCtxRelease_v2: fn(device: CUdevice);
    cuDevicePrimaryCtxGetState: fn(device: CUdevice, flags: *mut c_uint, active: *mut c_int);
    cuCtxSetCurrent: fn(context: CUcontext);
    cuCtxGetCurrent: fn(context: *mut CUcontext);
    cuCtxGetDevice: fn(device: *mut CUdevice);
    cuCtxSynchronize: fn();
    cuCtxEnablePeerAccess: fn(peer: CUcontext, flags: c_uint);
    cuMemGetInfo_v2: fn(free: *mut usize, total: *mut usize);
    cuMemAllocHost_v2: fn(pointer: *mut *mut c_void, bytes: usize);
    cuMemFreeHost: fn(pointer: *mut c_void);
    cuMemAlloc_v2: fn(dptr: *mut CUdeviceptr, bytes: usize);
    cuMemAllocPitch_v2: fn(dptr: *mut CUdeviceptr, pitch: *mut usize, width: usize, height: usize, element_size: c_uint);
    cuMemFree_v2: fn(dptr: CUdeviceptr);
    cuMemAllocAsync: fn(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemAllocAsync_ptsz: fn(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemFreeAsync: fn(dptr: CUdeviceptr, stream: CUstream);
    cuMemFreeAsync_ptsz: fn(dptr: CUdeviceptr, stream: CUstream);
    cuDeviceGetDefaultMemPool: fn(pool: *mut CUmemoryPool, device: CUdevice);
    cuMemAllocFromPoolAsync: fn(dptr: *mut CUdeviceptr, bytes: usize, pool: CUmemoryPool, stream: CUstream);
    cuMemAllocFromPoolAsync_ptsz: fn(dptr: *mut CUdeviceptr, bytes: usize, pool: CUmemoryPool, stream: CUstream);
    cuMemGetAddressRange_v2: fn(base: *mut CUdeviceptr, size: *mut usize, dptr: CUdeviceptr);
    cuPointerGetAttribute: fn(data: *mut c_void, attribute: c_int, ptr: CUdeviceptr);
    cuPointerGetAttributes: fn(count: c_uint, attributes: *mut c_int, data: *mut *mut c_void, ptr: CUdeviceptr);
    cuMemcpy: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize);
    cuMemcpy_ptds: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize);
    cuMemcpyAsync: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemcpyAsync_ptsz: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemcpyHtoD_v2: fn(dst: CUdeviceptr, src: *const c_void, bytes: usize);
    cuMemcpyHtoD_v2_ptds: fn(dst: CUdeviceptr, src: *const c_void, bytes: usize);
    cuMemcpyDtoH_v2: fn(dst: *mut c_void, src: CUdeviceptr, bytes: usize);
    cuMemcpyDtoH_v2_ptds: fn(dst: *mut c_void, src: CUdeviceptr, bytes: usize);
    cuMemcpyDtoD_v2: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize);
    cuMemcpyDtoD_v2_ptds: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize);
    cuMemcpyHtoDAsync_v2: fn(dst: CUdeviceptr, src: *const c_void, bytes: usize, stream: CUstream);
    cuMemcpyHtoDAsync_v2_ptsz: fn(dst: CUdeviceptr, src: *const c_void, bytes: usize, stream: CUstream);
    cuMemcpyDtoHAsync_v2: fn(dst: *mut c_void, src: CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemcpyDtoHAsync_v2_ptsz: fn(dst: *mut c_void, src: CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemcpyDtoDAsync_v2: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemcpyDtoDAsync_v2_ptsz: fn(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, stream: CUstream);
    cuMemcpyPeer: fn(dst: CUdeviceptr, dst_context: CUcontext, src: CUdeviceptr, src_context: CUcontext, bytes: usize);
    cuMemcpyPeerAsync: fn(dst: CUdeviceptr, dst_context: CUcontext, src: CUdeviceptr, src_context: CUcontext, bytes: usize, stream: CUstream);
    cuMemsetD8_v2: fn(dst: CUdeviceptr, value: u8, count: usize);
    cuMemsetD32_v2: fn(dst: CUdeviceptr, value: c_uint, count: usize);
    cuMemsetD8Async: fn(dst: CUdeviceptr, value: u8, count: usize, stream: CUstream);
    cuMemsetD32Async: fn(dst: CUdeviceptr, value: c_uint, count: usize, stream: CUstream);
    cuStreamCreate: fn(stream: *mut CUstream, flags: c_uint);
    cuStreamDestroy_v2: fn(stream: CUstream);
    cuStreamSynchronize: fn(stream: CUstream);
    cuStreamSynchronize_ptsz: fn(stream: CUstream);
    cuStreamQuery: fn(stream: CUstream);
    cuStreamWaitEvent: fn(stream: CUstream, event: CUevent, flags: c_uint);
    cuStreamWaitEvent_ptsz: fn(stream: CUstream, event: CUevent, flags: c_uint);
    cuEventCreate: fn(event: *mut CUevent, flags: c_uint);
    cuEventRecord: fn(event: CUevent, stream: CUstream);
    cuEventRecord_ptsz: fn(event: CUevent, stream: CUstream);
    cuEventQuery: fn(event: CUevent);
    cuEventSynchronize: fn(event: CUevent);
    cuEventDestroy_v2: fn(event: CUevent);
    cuEventElapsedTime: fn(milliseconds: *mut f32, start: CUevent, end: CUevent);
    cuMemAddressReserve: fn(ptr: *mut CUdeviceptr, size: usize, alignment: usize, addr: CUdeviceptr, flags: u64);
    cuMemAddressFree: fn(ptr: CUdeviceptr, size: usize);
    cuMemCreate: fn(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: u64);
    cuMemRelease: fn(handle: CUmemGenericAllocationHandle);
    cuMemMap: fn(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: u64);
    cuMemUnmap: fn(ptr: CUdeviceptr, size: usize);
    cuMemSetAccess: fn(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize);
    cuMemGetAllocationGranularity: fn(granularity: *mut usize, prop: *const CUmemAllocationProp, option: c_uint);
    cuMemRetainAllocationHandle: fn(handle: *mut CUmemGenericAllocationHandle, address: *mut c_void);
    cuIpcGetMemHandle: fn(handle: *mut CUipcMemHandle, dptr: CUdeviceptr);
    cuModuleLoadData: fn(module: *mut CUmodule, image: *const c_void);
    cuModuleUnload: fn(module: CUmodule);
    cuLibraryUnload: fn(library: CUlibrary);
    cuModuleGetFunction: fn(function: *mut CUfunction, module: CUmodule, name: *const c_char);
    cuLibraryLoadData: fn(library: *mut CUlibrary, code: *const c_void, jit_options: *mut c_int, jit_values: *mut *mut c_void, jit_count: c_uint, library_options: *mut c_int, library_values: *mut *mut c_void, library_count: c_uint);
    cuLibraryGetKernel: fn(kernel: *mut CUkernel, library: CUlibrary, name: *const c_char);
    cuFuncGetParamInfo: fn(function: CUfunction, index: usize, offset: *mut usize, size: *mut usize);
    cuKernelGetParamInfo: fn(kernel: CUkernel, index: usize, offset: *mut usize, size: *mut usize);
    cuLaunchKernel: fn(function: CUfunction, grid_x: c_uint, grid_y: c_uint, grid_z: c_uint, block_x: c_uint, block_y: c_uint, block_z: c_uint, shared_bytes: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void);
    cuLaunchKernel_ptsz: fn(function: CUfunction, grid_x: c_uint, grid_y: c_uint, grid_z: c_uint, block_x: c_uint, block_y: c_uint, block_z: c_uint, shared_bytes: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void);
    cuLaunchKernelEx: fn(config: *const CUlaunchConfig, function: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void);
    cuLaunchKernelEx_ptsz: fn(config: *const CUlaunchConfig, function: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void);
    cuLaunchCooperativeKernel: fn(function: CUfunction, grid_x: c_uint, grid_y: c_uint, grid_z: c_uint, block_x: c_uint, block_y: c_uint, block_z: c_uint, shared_bytes: c_uint, stream: CUstream, params: *mut *mut c_void);
    cuLaunchCooperativeKernel_ptsz: fn(function: CUfunction, grid_x: c_uint, grid_y: c_uint, grid_z: c_uint, block_x: c_uint, block_y: c_uint, block_z: c_uint, shared_bytes: c_uint, stream: CUstream, params: *mut *mut c_void);
    cuTensorMapEncodeTiled: fn(tensor_map: *mut CUtensorMap, data_type: c_uint, rank: u32, global_address: *mut c_void, global_dim: *const u64, global_strides: *const u64, box_dim: *const u32, element_strides: *const u32, interleave: c_uint, swizzle: c_uint, l2_promotion: c_uint, oob_fill: c_uint);
    cuTensorMapEncodeIm2col: fn(tensor_map: *mut CUtensorMap, data_type: c_uint, rank: u32, global_address: *mut c_void, global_dim: *const u64, global_strides: *const u64, lower_corner: *const c_int, upper_corner: *const c_int, channels_per_pixel: u32, pixels_per_column: u32, element_strides: *const u32, interleave: c_uint, swizzle: c_uint, l2_promotion: c_uint, oob_fill: c_uint);
    cuStreamBeginCapture_v2: fn(stream: CUstream, mode: c_uint);
    cuStreamBeginCapture_v2_ptsz: fn(stream: CUstream, mode: c_uint);
    cuStreamEndCapture: fn(stream: CUstream, graph: *mut CUgraph);
    cuStreamEndCapture_ptsz: fn(stream: CUstream, graph: *mut CUgraph);
    cuStreamIsCapturing: fn(stream: CUstream, status: *mut c_uint);
    cuStreamIsCapturing_ptsz: fn(stream: CUstream, status: *mut c_uint);
    cuGraphInstantiateWithFlags: fn(executable: *mut CUgraphExec, graph: CUgraph, flags: u64);
    cuGraphDestroy: fn(graph: CUgraph);
    cuGraphExecDestroy: fn(executable: CUgraphExec);
    cuGraphLaunch: fn(graph: CUgraphExec, stream: CUstream);
    cuGraphLaunch_ptsz: fn(graph: CUgraphExec, stream: CUstream);
    cuGetProcAddress: fn(symbol: *const c_char, pfn: *mut *mut c_void, cuda_version: c_int, flags: u64);
    cuGetProcAddress_v2: fn(symbol: *const c_char, pfn: *mut *mut c_void, cuda_version: c_int, flags: u64, status: *mut c_int);
    cuGetErrorString: fn(error: CUresult, text: *mut *const c_char);
    cuGetErrorName: fn(error: CUresult, text: *mut *const c_char);
}

/// A failed driver call: the entry point and what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallError {
    /// The entry point.
    pub what: &'static str,
    /// Its result (`CUDA_ERROR_NOT_FOUND` when the driver lacks the entry point).
    pub code: CUresult,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = result::name(self.code).map_or("unknown".into(), |n| n.to_string_lossy());
        write!(f, "{} failed: {} ({name})", self.what, self.code)
    }
}

impl std::error::Error for CallError {}

/// Turns a result code into a `Result`.
pub fn check(code: CUresult, what: &'static str) -> Result<(), CallError> {
    if code == result::SUCCESS { Ok(()) } else { Err(CallError { what, code }) }
}

/// Calls an entry point of a [`DriverApi`] (`call!(api, cuInit(0))`), as a `Result`.
#[macro_export]
macro_rules! call {
    ($api:expr, $name:ident ( $($arg:expr),* $(,)? )) => {
        match $api.$name {
            // SAFETY: the arguments are the caller's, as with the C API.
            Some(f) => $crate::check(unsafe { f($($arg),*) }, stringify!($name)),
            None => Err($crate::CallError { what: stringify!($name), code: $crate::result::NOT_FOUND }),
        }
    };
}

/// The driver library opened the way applications open it: `dlopen("libcuda.so.1")`.
pub struct Driver {
    /// Entry points, looked up with `dlsym` on the library.
    pub api: DriverApi,
    /// The library handle.
    pub handle: *mut c_void,
}

impl Driver {
    /// Opens `libcuda.so.1`; the message says why not (no driver installed, usually).
    pub fn open() -> Result<Driver, String> {
        // SAFETY: plain dlopen of the driver.
        let handle = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a C string after a failed dlopen.
            let why = unsafe { CStr::from_ptr(libc::dlerror()) }.to_string_lossy().into_owned();
            return Err(format!("no CUDA driver: cannot open libcuda.so.1 ({why})"));
        }
        let api = DriverApi::load(|name| unsafe { libc::dlsym(handle, name.as_ptr() as *const c_char) });
        Ok(Driver { api, handle })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_driver_headers() {
        assert_eq!(std::mem::size_of::<CUmemLocation>(), 8);
        assert_eq!(std::mem::size_of::<CUmemAllocationProp>(), 32);
        assert_eq!(std::mem::size_of::<CUmemAccessDesc>(), 12);
        assert_eq!(std::mem::size_of::<CUlaunchAttribute>(), 72);
        assert_eq!(std::mem::align_of::<CUlaunchAttribute>(), 8);
        assert_eq!(std::mem::offset_of!(CUlaunchConfig, hStream), 32);
        assert_eq!(std::mem::size_of::<CUlaunchConfig>(), 56);
    }

    #[test]
    fn every_entry_point_is_named_once() {
        let mut names = DriverApi::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DriverApi::NAMES.len());
    }
}

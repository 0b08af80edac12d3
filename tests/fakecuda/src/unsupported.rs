//! Entry points the fake driver does not implement.

use super::*;

macro_rules! unsupported {
    ($($name:ident),* $(,)?) => {
        $(
            /// Not implemented by the fake driver: logged, `CUDA_ERROR_NOT_SUPPORTED`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name() -> CUresult {
                eprintln!("fakecuda: {} is not supported", stringify!($name));
                result::NOT_SUPPORTED
            }
        )*
    };
}

unsupported!(
    cuMemAllocManaged,
    cuMemAllocHost_v2,
    cuMemHostAlloc,
    cuMemFreeHost,
    cuMemHostRegister_v2,
    cuMemHostUnregister,
    cuMemAllocFromPoolAsync,
    cuDeviceGetDefaultMemPool,
    cuMemPoolCreate,
    cuCtxCreate_v2,
    cuGraphLaunch,
    cuLaunchCooperativeKernel,
    cuTensorMapEncodeTiled,
);

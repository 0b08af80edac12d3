//! Modules, libraries, kernels and launches.

use super::*;

/// A loaded module or library: the built-in kernels its image declares.
struct Module {
    kernels: Vec<Kernel>,
}

fn modules() -> &'static Registry<Module> {
    static MODULES: OnceLock<Registry<Module>> = OnceLock::new();
    MODULES.get_or_init(Registry::new)
}

/// Function handles: `CUfunction`s from modules, then `CUkernel`s from libraries.
static FUNCTION_HANDLES: [u8; 2 * kernels::ALL.len()] = [0; 2 * kernels::ALL.len()];

fn function_handle(kernel: Kernel, library: bool) -> *mut c_void {
    let index = kernels::ALL.iter().position(|k| *k == kernel).unwrap_or(0);
    let slot = index + if library { kernels::ALL.len() } else { 0 };
    FUNCTION_HANDLES.as_ptr().wrapping_add(slot) as *mut c_void
}

/// The kernel behind a handle and whether it is a library `CUkernel`.
fn kernel_of(handle: *mut c_void) -> Result<(Kernel, bool), CUresult> {
    let offset = (handle as usize).wrapping_sub(FUNCTION_HANDLES.as_ptr() as usize);
    let count = kernels::ALL.len();
    if offset < 2 * count { Ok((kernels::ALL[offset % count], offset >= count)) } else { Err(result::INVALID_HANDLE) }
}

/// The first word of a fat binary (`FATBIN_MAGIC`) and of its wrapper (`FATBINC_MAGIC`).
const FAT_BINARY_MAGICS: [u32; 2] = [0xBA55_ED50, 0x4662_43B1];

/// Refuses an application's compiled GPU code (a fat binary of SASS, such as PyTorch's
/// kernels), saying so once on stderr: the fake runs only its built-in kernels.
pub(crate) fn refuse_fat_binary() -> CUresult {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!(
            "fakecuda: a fat binary (compiled GPU code) cannot be loaded: the fake driver runs no SASS, only its built-in kernels; \
             launches of its kernels fail with CUDA_ERROR_NO_BINARY_FOR_GPU"
        );
    }
    result::NO_BINARY_FOR_GPU
}

unsafe fn load_image(image: *const c_void) -> Result<usize, CUresult> {
    if image.is_null() {
        return Err(result::INVALID_VALUE);
    }
    // SAFETY: every image starts with at least a 4-byte header or PTX text.
    if FAT_BINARY_MAGICS.contains(&unsafe { (image as *const u32).read_unaligned() }) {
        return Err(refuse_fat_binary());
    }
    let text = unsafe { CStr::from_ptr(image as *const c_char) }.to_bytes();
    let kernels = kernels::declared_in(text);
    if kernels.is_empty() {
        return Err(result::INVALID_IMAGE);
    }
    Ok(modules().insert(Arc::new(Module { kernels })))
}

unsafe fn find_kernel(module: *mut c_void, name: *const c_char, library: bool) -> Result<*mut c_void, CUresult> {
    let module = modules().get(module as usize).ok_or(result::INVALID_HANDLE)?;
    if name.is_null() {
        return Err(result::INVALID_VALUE);
    }
    let name = unsafe { CStr::from_ptr(name) }.to_str().map_err(|_| result::NOT_FOUND)?;
    let kernel = Kernel::by_name(name).filter(|k| module.kernels.contains(k)).ok_or(result::NOT_FOUND)?;
    Ok(function_handle(kernel, library))
}

/// `CU_MODULE_LAZY_LOADING`: modules load their kernels on first use, the default since CUDA 12.2.
const LAZY_LOADING: c_uint = 2;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetLoadingMode(mode: *mut c_uint) -> CUresult {
    entry("cuModuleGetLoadingMode", true, || unsafe { out(mode, LAZY_LOADING) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult {
    entry("cuModuleLoadData", true, || unsafe {
        current_device()?;
        out(module, load_image(image)? as CUmodule)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleUnload(module: CUmodule) -> CUresult {
    entry("cuModuleUnload", true, || modules().remove(module as usize).map(|_| ()).ok_or(result::INVALID_HANDLE))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryUnload(library: CUlibrary) -> CUresult {
    entry("cuLibraryUnload", true, || modules().remove(library as usize).map(|_| ()).ok_or(result::INVALID_HANDLE))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(function: *mut CUfunction, module: CUmodule, name: *const c_char) -> CUresult {
    entry("cuModuleGetFunction", true, || unsafe { out(function, find_kernel(module, name, false)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryLoadData(
    library: *mut CUlibrary,
    code: *const c_void,
    _jit_options: *mut c_int,
    _jit_values: *mut *mut c_void,
    _jit_count: c_uint,
    _library_options: *mut c_int,
    _library_values: *mut *mut c_void,
    _library_count: c_uint,
) -> CUresult {
    entry("cuLibraryLoadData", true, || unsafe { out(library, load_image(code)? as CUlibrary) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryGetKernel(kernel: *mut CUkernel, library: CUlibrary, name: *const c_char) -> CUresult {
    entry("cuLibraryGetKernel", true, || unsafe { out(kernel, find_kernel(library, name, true)?) })
}

unsafe fn param_info(kernel: Kernel, index: usize, offset: *mut usize, size: *mut usize) -> Outcome {
    let &(o, s) = kernel.params().get(index).ok_or(result::INVALID_VALUE)?;
    unsafe {
        out(offset, o)?;
        if !size.is_null() {
            size.write(s);
        }
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetParamInfo(function: CUfunction, index: usize, offset: *mut usize, size: *mut usize) -> CUresult {
    entry("cuFuncGetParamInfo", true, || match kernel_of(function)? {
        // Driver 580 refuses CUkernel handles here (measured): use cuKernelGetParamInfo.
        (_, true) => Err(result::INVALID_HANDLE),
        (kernel, false) => unsafe { param_info(kernel, index, offset, size) },
    })
}

/// `cuKernelGetParamInfo`: not exported, reachable through `cuGetProcAddress` only, as
/// on driver 580.
pub(crate) unsafe extern "C" fn cuKernelGetParamInfo(kernel: CUkernel, index: usize, offset: *mut usize, size: *mut usize) -> CUresult {
    entry("cuKernelGetParamInfo", true, || match kernel_of(kernel)? {
        (kernel, true) => unsafe { param_info(kernel, index, offset, size) },
        (_, false) => Err(result::INVALID_HANDLE),
    })
}

/// Packs the parameters the way the kernel reads them, from `kernelParams` or `extra`.
unsafe fn pack_params(kernel: Kernel, params: *mut *mut c_void, extra: *mut *mut c_void) -> Result<Vec<u8>, CUresult> {
    let mut packed = vec![0u8; kernel.param_bytes()];
    if !params.is_null() {
        for (i, &(offset, size)) in kernel.params().iter().enumerate() {
            let source = unsafe { *params.add(i) } as *const u8;
            if source.is_null() {
                return Err(result::INVALID_VALUE);
            }
            unsafe { std::ptr::copy_nonoverlapping(source, packed.as_mut_ptr().add(offset), size) };
        }
        return Ok(packed);
    }
    if extra.is_null() {
        return Err(result::INVALID_VALUE);
    }
    let (mut buffer, mut length) = (std::ptr::null::<u8>(), None);
    let mut i = 0;
    loop {
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            CU_LAUNCH_PARAM_END => break,
            CU_LAUNCH_PARAM_BUFFER_POINTER => buffer = unsafe { *extra.add(i + 1) } as *const u8,
            CU_LAUNCH_PARAM_BUFFER_SIZE => length = Some(unsafe { *(*extra.add(i + 1) as *const usize) }),
            _ => return Err(result::INVALID_VALUE),
        }
        i += 2;
    }
    match length {
        Some(length) if !buffer.is_null() && length >= packed.len() => {
            unsafe { std::ptr::copy_nonoverlapping(buffer, packed.as_mut_ptr(), packed.len()) };
            Ok(packed)
        }
        _ => Err(result::INVALID_VALUE),
    }
}

unsafe fn launch(function: CUfunction, stream: CUstream, per_thread: bool, params: *mut *mut c_void, extra: *mut *mut c_void) -> Outcome {
    let device = current_device()?;
    let (kernel, _) = kernel_of(function)?;
    let mut packed = unsafe { pack_params(kernel, params, extra)? };
    let time = timing::kernel_time(kernel, &packed, config().kernel_us);
    // The kernel reaches memory as a GPU does: through the device view only.
    for &offset in kernel.pointer_offsets() {
        let word = u64::from_ne_bytes(packed[offset..offset + 8].try_into().map_err(|_| result::UNKNOWN)?);
        packed[offset..offset + 8].copy_from_slice(&memory::kernel_view(word, device).to_ne_bytes());
    }
    for &offset in kernel.tensor_map_offsets() {
        let word = u64::from_ne_bytes(packed[offset..offset + 8].try_into().map_err(|_| result::UNKNOWN)?);
        // Not the fake's encoding: the kernel faults on it (an unmapped address).
        let address = tensor_map::decode_address(word).unwrap_or(0);
        packed[offset..offset + 8].copy_from_slice(&memory::kernel_view(address, device).to_ne_bytes());
    }
    submit(&stream_of(stream, per_thread)?, false, move || {
        // SAFETY: the kernel's addresses are device views; a bad one faults, as on a GPU.
        timing::run(timing::Cost { lane: timing::Lane::Compute, time }, || unsafe { kernel.run(&packed) });
    })
}

macro_rules! launch_entry {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            function: CUfunction,
            _gx: c_uint, _gy: c_uint, _gz: c_uint,
            _bx: c_uint, _by: c_uint, _bz: c_uint,
            _shared: c_uint,
            stream: CUstream,
            params: *mut *mut c_void,
            extra: *mut *mut c_void,
        ) -> CUresult {
            entry(stringify!($name), true, || unsafe { launch(function, stream, $per_thread, params, extra) })
        }
    };
}

launch_entry!(cuLaunchKernel, false);
launch_entry!(cuLaunchKernel_ptsz, true);

macro_rules! launch_cooperative_entry {
    ($name:ident, $per_thread:expr) => {
        /// A cooperative launch: the built-in kernels run as any launch (`kernelParams` only).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            function: CUfunction,
            _gx: c_uint, _gy: c_uint, _gz: c_uint,
            _bx: c_uint, _by: c_uint, _bz: c_uint,
            _shared: c_uint,
            stream: CUstream,
            params: *mut *mut c_void,
        ) -> CUresult {
            entry(stringify!($name), true, || unsafe { launch(function, stream, $per_thread, params, std::ptr::null_mut()) })
        }
    };
}

launch_cooperative_entry!(cuLaunchCooperativeKernel, false);
launch_cooperative_entry!(cuLaunchCooperativeKernel_ptsz, true);

macro_rules! launch_ex_entry {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(config: *const CUlaunchConfig, function: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult {
            entry(stringify!($name), true, || unsafe {
                let config = config.as_ref().ok_or(result::INVALID_VALUE)?;
                launch(function, config.hStream, $per_thread, params, extra)
            })
        }
    };
}

launch_ex_entry!(cuLaunchKernelEx, false);
launch_ex_entry!(cuLaunchKernelEx_ptsz, true);

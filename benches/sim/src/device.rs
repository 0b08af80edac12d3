//! The few driver calls the simulation makes, on the driver `libcuda.so.1` resolves to
//! (the fake driver, under libvvram.so or not).

use std::ffi::{CString, c_void};
use vvram_cuda::kernels as ptx;
use vvram_cuda::*;
use vvram_harness::{CallError, Cuda, Door, cu};

/// A driver call's failure, as text.
pub type Checked<T = ()> = Result<T, String>;

fn fail(e: CallError) -> String {
    e.to_string()
}

/// A context on device 0, the built-in kernels and the stream the model runs on.
pub struct Sim {
    /// The driver.
    pub cuda: Cuda,
    /// The stream the step runs on.
    pub stream: CUstream,
    weight_sum: CUfunction,
    copy: CUfunction,
    scale: CUfunction,
    sum: CUfunction,
}

type Param = *mut c_void;

impl Sim {
    /// Creates the context, loads the module, makes the stream.
    pub fn open() -> Checked<Sim> {
        let cuda = Cuda::load(Door::Dlsym)?;
        cu!(cuda, cuInit(0)).map_err(fail)?;
        let mut context = std::ptr::null_mut();
        cu!(cuda, cuDevicePrimaryCtxRetain(&mut context, 0)).map_err(fail)?;
        cu!(cuda, cuCtxSetCurrent(context)).map_err(fail)?;
        let mut module = std::ptr::null_mut();
        cu!(cuda, cuModuleLoadData(&mut module, ptx::MODULE.as_ptr() as *const c_void)).map_err(fail)?;
        let function = |name: &str| -> Checked<CUfunction> {
            let mut function = std::ptr::null_mut();
            let name = CString::new(name).map_err(|e| e.to_string())?;
            cu!(cuda, cuModuleGetFunction(&mut function, module, name.as_ptr())).map_err(fail)?;
            Ok(function)
        };
        let (weight_sum, copy, scale, sum) = (function("weight_sum")?, function("copy")?, function("scale_f32")?, function("sum_f32")?);
        let mut stream = std::ptr::null_mut();
        cu!(cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING)).map_err(fail)?;
        Ok(Sim { cuda, stream, weight_sum, copy, scale, sum })
    }

    /// `cuMemAlloc` (vvram's placement when preloaded).
    pub fn alloc(&self, bytes: u64) -> Checked<u64> {
        let mut p = 0;
        cu!(self.cuda, cuMemAlloc_v2(&mut p, bytes as usize)).map_err(fail)?;
        Ok(p)
    }

    /// Host-located memory the device can read (what a pinned offload buffer is).
    pub fn host_located(&self, bytes: u64) -> Checked<u64> {
        let granularity = 2 << 20;
        let size = bytes.div_ceil(granularity) * granularity;
        let mut address = 0;
        cu!(self.cuda, cuMemAddressReserve(&mut address, size as usize, granularity as usize, 0, 0)).map_err(fail)?;
        let mut handle = 0;
        let prop = CUmemAllocationProp::pinned(CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST_NUMA, id: 0 });
        cu!(self.cuda, cuMemCreate(&mut handle, size as usize, &prop, 0)).map_err(fail)?;
        cu!(self.cuda, cuMemMap(address, size as usize, 0, handle, 0)).map_err(fail)?;
        let access = [
            CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
            CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
        ];
        cu!(self.cuda, cuMemSetAccess(address, size as usize, access.as_ptr(), access.len())).map_err(fail)?;
        Ok(address)
    }

    /// Writes floats from the host.
    pub fn write(&self, address: u64, values: &[f32]) -> Checked {
        cu!(self.cuda, cuMemcpyHtoD_v2(address, values.as_ptr() as *const c_void, values.len() * 4)).map_err(fail)
    }

    /// Reads `n` floats back.
    pub fn read(&self, address: u64, n: usize) -> Checked<Vec<f32>> {
        let mut values = vec![0f32; n];
        cu!(self.cuda, cuMemcpyDtoH_v2(values.as_mut_ptr() as *mut c_void, address, n * 4)).map_err(fail)?;
        Ok(values)
    }

    fn launch(&self, function: CUfunction, stream: CUstream, params: &mut [Param]) -> Checked {
        cu!(self.cuda, cuLaunchKernel(function, 64, 1, 1, 256, 1, 1, 0, stream, params.as_mut_ptr(), std::ptr::null_mut())).map_err(fail)
    }

    /// `weight_sum`: adds the sum of `n` floats of `weight` to `*out`, lasting `ns` (a GEMM).
    pub fn weight_sum(&self, stream: CUstream, weight: u64, n: u64, out: u64, ns: u64) -> Checked {
        let (mut w, mut n, mut o, mut t) = (weight, n, out, ns);
        self.launch(self.weight_sum, stream, &mut [&mut w as *mut u64 as Param, &mut n as *mut u64 as Param, &mut o as *mut u64 as Param, &mut t as *mut u64 as Param])
    }

    /// `copy`: `floats` floats from `src` to `dst`, on the model's stream.
    pub fn copy(&self, dst: u64, src: u64, floats: u64) -> Checked {
        let (mut d, mut s, mut bytes) = (dst, src, floats * 4);
        self.launch(self.copy, self.stream, &mut [&mut d as *mut u64 as Param, &mut s as *mut u64 as Param, &mut bytes as *mut u64 as Param])
    }

    /// `scale_f32`: multiplies `n` floats at `p` by `factor`, on the model's stream.
    pub fn scale(&self, p: u64, factor: f32, n: u64) -> Checked {
        let (mut p, mut f, mut n) = (p, factor, n);
        self.launch(self.scale, self.stream, &mut [&mut p as *mut u64 as Param, &mut f as *mut f32 as Param, &mut n as *mut u64 as Param])
    }

    /// `sum_f32`: adds the sum of `n` floats at `input` to `*out`, on the model's stream.
    pub fn sum(&self, input: u64, out: u64, n: u64) -> Checked {
        let (mut i, mut o, mut n) = (input, out, n);
        self.launch(self.sum, self.stream, &mut [&mut i as *mut u64 as Param, &mut o as *mut u64 as Param, &mut n as *mut u64 as Param])
    }

    /// A new stream that does not synchronise with the legacy default stream.
    pub fn new_stream(&self) -> Checked<CUstream> {
        let mut stream = std::ptr::null_mut();
        cu!(self.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING)).map_err(fail)?;
        Ok(stream)
    }

    /// An event with timing (step times are measured on the device's clock).
    pub fn timing_event(&self) -> Checked<CUevent> {
        let mut event = std::ptr::null_mut();
        cu!(self.cuda, cuEventCreate(&mut event, 0)).map_err(fail)?;
        Ok(event)
    }

    /// An event without timing, for ordering.
    pub fn event(&self) -> Checked<CUevent> {
        let mut event = std::ptr::null_mut();
        cu!(self.cuda, cuEventCreate(&mut event, 2)).map_err(fail)?;
        Ok(event)
    }

    /// `cuEventRecord`.
    pub fn record(&self, event: CUevent, stream: CUstream) -> Checked {
        cu!(self.cuda, cuEventRecord(event, stream)).map_err(fail)
    }

    /// `cuStreamWaitEvent`.
    pub fn wait(&self, stream: CUstream, event: CUevent) -> Checked {
        cu!(self.cuda, cuStreamWaitEvent(stream, event, 0)).map_err(fail)
    }

    /// `cuMemcpyAsync`.
    pub fn copy_async(&self, dst: u64, src: u64, bytes: u64, stream: CUstream) -> Checked {
        cu!(self.cuda, cuMemcpyAsync(dst, src, bytes as usize, stream)).map_err(fail)
    }

    /// Waits for the model's stream; the milliseconds between two timing events on it.
    pub fn finish(&self, start: CUevent, end: CUevent) -> Checked<f32> {
        cu!(self.cuda, cuStreamSynchronize(self.stream)).map_err(fail)?;
        let mut ms = 0f32;
        cu!(self.cuda, cuEventElapsedTime(&mut ms, start, end)).map_err(fail)?;
        Ok(ms)
    }

    /// `cuCtxSynchronize`.
    pub fn synchronize(&self) -> Checked {
        cu!(self.cuda, cuCtxSynchronize()).map_err(fail)
    }
}

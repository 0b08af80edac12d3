//! The layout check: a C program, built against the real `cuda.h`, that compares every
//! constant, struct size, alignment and field offset of this crate with the header's
//! (`scripts/cuda-check` compiles and runs it in CI). The hand-written types cannot
//! drift from the driver's without CI failing.

use crate::*;

/// One comparison: a C expression and the value Rust has for it.
struct Check {
    c: String,
    rust: i128,
}

macro_rules! constants {
    ($(($rust:expr, $c:literal)),* $(,)?) => {
        fn constants() -> Vec<Check> {
            vec![$(Check { c: format!("(long long)(intptr_t)({})", $c), rust: $rust as i128 }),*]
        }

        /// Every constant named in the check, as Rust spells it.
        #[cfg(test)]
        const CONSTANT_NAMES: &[&str] = &[$(stringify!($rust)),*];
    };
}

constants![
        (result::SUCCESS, "CUDA_SUCCESS"),
        (result::INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"),
        (result::OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"),
        (result::NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"),
        (result::NO_DEVICE, "CUDA_ERROR_NO_DEVICE"),
        (result::INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"),
        (result::INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE"),
        (result::INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"),
        (result::ALREADY_MAPPED, "CUDA_ERROR_ALREADY_MAPPED"),
        (result::NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU"),
        (result::NOT_MAPPED, "CUDA_ERROR_NOT_MAPPED"),
        (result::PEER_ACCESS_UNSUPPORTED, "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED"),
        (result::INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE"),
        (result::ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE"),
        (result::NOT_FOUND, "CUDA_ERROR_NOT_FOUND"),
        (result::NOT_READY, "CUDA_ERROR_NOT_READY"),
        (result::ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS"),
        (result::PEER_ACCESS_ALREADY_ENABLED, "CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED"),
        (result::NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED"),
        (result::NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"),
        (result::STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"),
        (result::STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"),
        (result::STREAM_CAPTURE_IMPLICIT, "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT"),
        (result::STREAM_CAPTURE_WRONG_THREAD, "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD"),
        (result::CAPTURED_EVENT, "CUDA_ERROR_CAPTURED_EVENT"),
        (result::UNKNOWN, "CUDA_ERROR_UNKNOWN"),
        (CU_MEM_LOCATION_TYPE_DEVICE, "CU_MEM_LOCATION_TYPE_DEVICE"),
        (CU_MEM_LOCATION_TYPE_HOST, "CU_MEM_LOCATION_TYPE_HOST"),
        (CU_MEM_LOCATION_TYPE_HOST_NUMA, "CU_MEM_LOCATION_TYPE_HOST_NUMA"),
        (CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT, "CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT"),
        (CU_MEM_ALLOCATION_TYPE_PINNED, "CU_MEM_ALLOCATION_TYPE_PINNED"),
        (CU_MEM_ACCESS_FLAGS_PROT_NONE, "CU_MEM_ACCESS_FLAGS_PROT_NONE"),
        (CU_MEM_ACCESS_FLAGS_PROT_READ, "CU_MEM_ACCESS_FLAGS_PROT_READ"),
        (CU_MEM_ACCESS_FLAGS_PROT_READWRITE, "CU_MEM_ACCESS_FLAGS_PROT_READWRITE"),
        (CU_MEM_ALLOC_GRANULARITY_MINIMUM, "CU_MEM_ALLOC_GRANULARITY_MINIMUM"),
        (CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT"),
        (CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, "CU_DEVICE_ATTRIBUTE_PCI_BUS_ID"),
        (CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, "CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID"),
        (CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, "CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING"),
        (CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, "CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID"),
        (CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR"),
        (CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR"),
        (CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, "CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED"),
        (CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID, "CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID"),
        (CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, "CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED"),
        (CU_POINTER_ATTRIBUTE_CONTEXT, "CU_POINTER_ATTRIBUTE_CONTEXT"),
        (CU_POINTER_ATTRIBUTE_MEMORY_TYPE, "CU_POINTER_ATTRIBUTE_MEMORY_TYPE"),
        (CU_POINTER_ATTRIBUTE_DEVICE_POINTER, "CU_POINTER_ATTRIBUTE_DEVICE_POINTER"),
        (CU_POINTER_ATTRIBUTE_HOST_POINTER, "CU_POINTER_ATTRIBUTE_HOST_POINTER"),
        (CU_POINTER_ATTRIBUTE_BUFFER_ID, "CU_POINTER_ATTRIBUTE_BUFFER_ID"),
        (CU_POINTER_ATTRIBUTE_IS_MANAGED, "CU_POINTER_ATTRIBUTE_IS_MANAGED"),
        (CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, "CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL"),
        (CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, "CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE"),
        (CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, "CU_POINTER_ATTRIBUTE_RANGE_START_ADDR"),
        (CU_POINTER_ATTRIBUTE_RANGE_SIZE, "CU_POINTER_ATTRIBUTE_RANGE_SIZE"),
        (CU_POINTER_ATTRIBUTE_MAPPED, "CU_POINTER_ATTRIBUTE_MAPPED"),
        (CU_MEMORYTYPE_HOST, "CU_MEMORYTYPE_HOST"),
        (CU_MEMORYTYPE_DEVICE, "CU_MEMORYTYPE_DEVICE"),
        (CU_STREAM_CAPTURE_MODE_GLOBAL, "CU_STREAM_CAPTURE_MODE_GLOBAL"),
        (CU_STREAM_CAPTURE_MODE_RELAXED, "CU_STREAM_CAPTURE_MODE_RELAXED"),
        (CU_STREAM_CAPTURE_STATUS_NONE, "CU_STREAM_CAPTURE_STATUS_NONE"),
        (CU_STREAM_CAPTURE_STATUS_ACTIVE, "CU_STREAM_CAPTURE_STATUS_ACTIVE"),
        (CU_STREAM_NON_BLOCKING, "CU_STREAM_NON_BLOCKING"),
        (CU_STREAM_LEGACY, "CU_STREAM_LEGACY"),
        (CU_STREAM_PER_THREAD, "CU_STREAM_PER_THREAD"),
        (CU_LAUNCH_PARAM_END, "CU_LAUNCH_PARAM_END"),
        (CU_LAUNCH_PARAM_BUFFER_POINTER, "CU_LAUNCH_PARAM_BUFFER_POINTER"),
        (CU_LAUNCH_PARAM_BUFFER_SIZE, "CU_LAUNCH_PARAM_BUFFER_SIZE"),
        (CU_GET_PROC_ADDRESS_DEFAULT, "CU_GET_PROC_ADDRESS_DEFAULT"),
        (CU_GET_PROC_ADDRESS_LEGACY_STREAM, "CU_GET_PROC_ADDRESS_LEGACY_STREAM"),
        (CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM"),
        (CU_GET_PROC_ADDRESS_SUCCESS, "CU_GET_PROC_ADDRESS_SUCCESS"),
        (CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, "CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND"),
        (CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT, "CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT"),
        (CU_TENSOR_MAP_NUM_QWORDS, "CU_TENSOR_MAP_NUM_QWORDS"),
        (CU_TENSOR_MAP_DATA_TYPE_FLOAT32, "CU_TENSOR_MAP_DATA_TYPE_FLOAT32"),
        (CU_TENSOR_MAP_DATA_TYPE_16U6_ALIGN16B, "CU_TENSOR_MAP_DATA_TYPE_16U6_ALIGN16B"),
        (CU_TENSOR_MAP_INTERLEAVE_NONE, "CU_TENSOR_MAP_INTERLEAVE_NONE"),
        (CU_TENSOR_MAP_INTERLEAVE_32B, "CU_TENSOR_MAP_INTERLEAVE_32B"),
        (CU_TENSOR_MAP_SWIZZLE_NONE, "CU_TENSOR_MAP_SWIZZLE_NONE"),
        (CU_TENSOR_MAP_SWIZZLE_128B_ATOM_64B, "CU_TENSOR_MAP_SWIZZLE_128B_ATOM_64B"),
        (CU_TENSOR_MAP_L2_PROMOTION_NONE, "CU_TENSOR_MAP_L2_PROMOTION_NONE"),
        (CU_TENSOR_MAP_L2_PROMOTION_L2_256B, "CU_TENSOR_MAP_L2_PROMOTION_L2_256B"),
        (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE, "CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE"),
        (CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA, "CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA"),
];

macro_rules! layouts {
    ($($rust:ident as $c:literal { $($field:ident as $cfield:literal),* $(,)? }),* $(,)?) => {
        fn layouts() -> Vec<Check> {
            let mut checks = Vec::new();
            $(
                checks.push(Check { c: format!("(long long)sizeof({})", $c), rust: std::mem::size_of::<$rust>() as i128 });
                checks.push(Check { c: format!("(long long)_Alignof({})", $c), rust: std::mem::align_of::<$rust>() as i128 });
                $(checks.push(Check { c: format!("(long long)offsetof({}, {})", $c, $cfield), rust: std::mem::offset_of!($rust, $field) as i128 });)*
            )*
            checks
        }

        /// Every struct named in the check.
        #[cfg(test)]
        const STRUCT_NAMES: &[&str] = &[$(stringify!($rust)),*];
    };
}

layouts![
    CUmemLocation as "CUmemLocation" { type_ as "type", id as "id" },
    CUmemAllocationProp as "CUmemAllocationProp" {
        type_ as "type",
        requestedHandleTypes as "requestedHandleTypes",
        location as "location",
        win32HandleMetaData as "win32HandleMetaData",
        allocFlags as "allocFlags",
    },
    CUmemAllocationPropFlags as "__typeof__(((CUmemAllocationProp *)0)->allocFlags)" {
        compressionType as "compressionType",
        gpuDirectRDMACapable as "gpuDirectRDMACapable",
        usage as "usage",
        reserved as "reserved",
    },
    CUmemAccessDesc as "CUmemAccessDesc" { location as "location", flags as "flags" },
    CUlaunchAttribute as "CUlaunchAttribute" { id as "id", pad as "pad", value as "value" },
    CUtensorMap as "CUtensorMap" { opaque as "opaque" },
    CUlaunchConfig as "CUlaunchConfig" {
        gridDimX as "gridDimX",
        gridDimY as "gridDimY",
        gridDimZ as "gridDimZ",
        blockDimX as "blockDimX",
        blockDimY as "blockDimY",
        blockDimZ as "blockDimZ",
        sharedMemBytes as "sharedMemBytes",
        hStream as "hStream",
        attrs as "attrs",
        numAttrs as "numAttrs",
    },
];

/// The C checker: compiled with `cuda.h` on the include path, it prints one line per
/// mismatch and exits 1 if there is any, else prints how many items agree and exits 0.
pub fn c_checker() -> String {
    let mut program = String::from(
        "/* Generated by vvram-cuda's layout check: compares vvram-cuda with cuda.h. */\n\
         #include <cuda.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n\n\
         static int failures, checked;\n\
         static void check(const char *what, long long header, long long rust) {\n\
         \tchecked++;\n\
         \tif (header != rust) { failures++; printf(\"MISMATCH %s: cuda.h %lld, vvram-cuda %lld\\n\", what, header, rust); }\n\
         }\n\nint main(void) {\n",
    );
    for check in constants().into_iter().chain(layouts()) {
        let quoted = check.c.replace('\\', "\\\\").replace('"', "\\\"");
        program.push_str(&format!("\tcheck(\"{quoted}\", {}, {}LL);\n", check.c, check.rust));
    }
    program.push_str("\tprintf(\"%d constants, sizes, alignments and offsets checked, %d mismatches\\n\", checked, failures);\n\treturn failures != 0;\n}\n");
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_and_struct_of_the_crate_is_checked() {
        let source = include_str!("lib.rs");
        for line in source.lines() {
            let line = line.trim_start();
            if let Some(rest) = line.strip_prefix("pub const ") {
                let name = rest.split(':').next().unwrap_or_default();
                if name == "NAMES" {
                    continue;
                }
                let listed = CONSTANT_NAMES.iter().any(|n| *n == name || n.strip_prefix("result::") == Some(name));
                assert!(listed, "constant {name} is missing from the layout check (cuda/src/layout.rs)");
            }
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.split([' ', '{']).next().unwrap_or_default();
                if source.contains(&format!("#[repr(C)]\n#[derive(Debug, Clone, Copy{{}})]\npub struct {name}")) || name.starts_with("CU") {
                    assert!(STRUCT_NAMES.contains(&name), "struct {name} is missing from the layout check (cuda/src/layout.rs)");
                }
            }
        }
    }

    #[test]
    fn the_checker_compares_each_item_once() {
        let program = c_checker();
        assert!(program.contains("check(\"(long long)_Alignof(CUlaunchAttribute)\", (long long)_Alignof(CUlaunchAttribute), 8LL);"), "{program}");
        assert!(program.contains("(long long)(intptr_t)(CU_STREAM_LEGACY), 1LL);"));
        assert_eq!(program.matches("\tcheck(").count(), constants().len() + layouts().len());
    }
}

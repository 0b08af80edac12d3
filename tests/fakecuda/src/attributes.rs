//! What a device says about itself: `cuDeviceGetAttribute` answers, its UUID and PCI
//! address. The fake devices describe an H100 SXM (compute capability 9.0), so that
//! libraries which size caches, launches and pools by these numbers (PyTorch reads the
//! L2 size, shared memory per block, stream priorities, pool support) see a real card.

use super::*;
use crate::integrity::DeviceIdentity;

/// `CU_DEVICE_ATTRIBUTE_MAX` of CUDA 13.5: attribute ids from 1 up to this one exclusive exist.
const ATTRIBUTE_MAX: c_int = 162;

/// The PCI bus of a device (domain 0, device 0).
pub(crate) fn pci_bus(device: usize) -> c_int {
    0x18 + device as c_int
}

/// The device's UUID: stable per index, marked as the fake's.
pub(crate) fn uuid(device: usize) -> [u8; 16] {
    let mut id = *b"fakecuda-gpu-\0\0\0";
    id[13..].copy_from_slice(&(device as u32).to_be_bytes()[1..]);
    id
}

/// The device as the integrity check identifies it.
pub(crate) fn device_identity(device: usize) -> DeviceIdentity {
    DeviceIdentity { uuid: uuid(device), pci_domain: 0, pci_bus: pci_bus(device), pci_device: 0 }
}

/// The value of attribute `id` for `device`; `None` for an id the driver does not know.
pub(crate) fn value(id: c_int, device: usize) -> Option<c_int> {
    if !(1..ATTRIBUTE_MAX).contains(&id) {
        return None;
    }
    Some(match id {
        1 => 1024,                               // max threads per block
        2 | 3 => 1024,                           // max block dim x, y
        4 => 64,                                 // max block dim z
        5 => i32::MAX,                           // max grid dim x
        6 | 7 => 65535,                          // max grid dim y, z
        8 => 49152,                              // shared memory per block
        9 => 65536,                              // constant memory
        10 => 32,                                // warp size
        11 => i32::MAX,                          // max pitch
        12 => 65536,                             // registers per block
        13 => 1_980_000,                         // clock rate, kHz
        14 | 30 => 512,                          // texture, surface alignment
        15 | 19 | 31 | 32 => 1,                  // overlap, map host memory, concurrent kernels, ECC
        16 => 132,                               // multiprocessors
        33 => pci_bus(device),                   // PCI bus
        36 => 2_619_000,                         // memory clock, kHz
        37 => 5120,                              // memory bus width, bits
        38 => 50 << 20,                          // L2 cache bytes
        39 => 2048,                              // threads per multiprocessor
        40 => 3,                                 // copy engines
        41 | 78 | 79 | 80 | 83 | 89 | 90 | 91 => 1, // unified addressing, stream priorities, L1 caches, managed, concurrent managed, preemption, host pointer
        51 => 32,                                // texture pitch alignment
        75 => 9,                                 // compute capability major
        76 => 0,                                 // minor
        81 => 233_472,                           // shared memory per multiprocessor
        82 => 65536,                             // registers per multiprocessor
        85 => device as c_int,                   // multi-GPU board group
        87 => 2,                                 // single to double precision ratio
        95 | 96 | 99 | 102 | 103 | 113 | 115 | 120 | 122 | 123 | 127 => 1, // cooperative launch, host register, VMM, POSIX handles, read-only register, memory pools, clusters, stream memory ops, tensor maps
        97 => 232_448,                           // opt-in shared memory per block
        106 => 32,                               // blocks per multiprocessor
        107 | 112 | 121 | 124 | 129 => 1,        // compression, sparse arrays, deferred mapping, dma-buf, unified function pointers
        108 => 0x01F0_0000,                      // persisting L2 cache bytes
        109 => 0x07FF_E000,                      // access policy window bytes
        111 => 1024,                             // reserved shared memory per block
        119 => 1,                                // pool handle types: POSIX file descriptor
        126 => 4,                                // memory sync domains
        131 => -1,                               // the device's own NUMA id: none
        134 => crate::config::config().host_numa[device], // host NUMA node closest to the device
        141 => crate::config::config().host_vmm as c_int, // host-located VMM allocations
        139 => 0x2330_10DE,                      // PCI device/vendor id
        _ => 0,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid_out: *mut [u8; 16], device: CUdevice) -> CUresult {
    entry("cuDeviceGetUuid", true, || unsafe { out(uuid_out, uuid(device_index(device)?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid_out: *mut [u8; 16], device: CUdevice) -> CUresult {
    entry("cuDeviceGetUuid_v2", true, || unsafe { out(uuid_out, uuid(device_index(device)?)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_have_distinct_uuids_and_buses() {
        assert_ne!(uuid(0), uuid(1));
        assert_eq!(&uuid(0)[..13], b"fakecuda-gpu-");
        assert_eq!(device_identity(1).pci_bus, value(33, 1).unwrap());
    }

    #[test]
    fn attributes_are_an_h100s_and_unknown_ids_are_refused() {
        assert_eq!(value(38, 0), Some(50 << 20));
        assert_eq!(value(75, 0), Some(9));
        assert_eq!(value(115, 0), Some(1));
        assert_eq!(value(0, 0), None);
        assert_eq!(value(ATTRIBUTE_MAX, 0), None);
    }
}

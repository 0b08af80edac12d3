//! The answer of the integrity-check export table, which libcudart verifies at start-up
//! (a wrong answer fails every runtime call with `cudaErrorSoftwareValidityNotEstablished`).
//!
//! Facts (from public reimplementations of the driver): the answer is 16 bytes, an
//! HMAC-MD2 (RFC 2104 over RFC 1319, block size 16) under a fixed key of the
//! little-endian 48-byte record [`Probe`] followed by one 28-byte [`DeviceIdentity`] per
//! device. Requests whose version ends in the digit 0 or 1 get fixed answers.

/// The MD2 substitution table (RFC 1319, derived from the digits of pi).
const PI_SUBST: [u8; 256] = [
    41, 46, 67, 201, 162, 216, 124, 1, 61, 54, 84, 161, 236, 240, 6, 19, 98, 167, 5, 243, 192, 199, 115, 140, 152, 147, 43, 217, 188, 76,
    130, 202, 30, 155, 87, 60, 253, 212, 224, 22, 103, 66, 111, 24, 138, 23, 229, 18, 190, 78, 196, 214, 218, 158, 222, 73, 160, 251, 245,
    142, 187, 47, 238, 122, 169, 104, 121, 145, 21, 178, 7, 63, 148, 194, 16, 137, 11, 34, 95, 33, 128, 127, 93, 154, 90, 144, 50, 39, 53,
    62, 204, 231, 191, 247, 151, 3, 255, 25, 48, 179, 72, 165, 181, 209, 215, 94, 146, 42, 172, 86, 170, 198, 79, 184, 56, 210, 150, 164,
    125, 182, 118, 252, 107, 226, 156, 116, 4, 241, 69, 157, 112, 89, 100, 113, 135, 32, 134, 91, 207, 101, 230, 45, 168, 2, 27, 96, 37,
    173, 174, 176, 185, 246, 28, 70, 97, 105, 52, 64, 126, 15, 85, 71, 163, 35, 221, 81, 175, 58, 195, 92, 249, 206, 186, 197, 234, 38,
    44, 83, 13, 110, 133, 40, 132, 9, 211, 223, 205, 244, 65, 129, 77, 82, 106, 220, 55, 200, 108, 193, 171, 250, 36, 225, 123, 8, 12,
    189, 177, 74, 120, 136, 149, 139, 227, 99, 232, 109, 233, 203, 213, 254, 59, 0, 29, 57, 242, 239, 183, 14, 102, 88, 208, 228, 166,
    119, 114, 248, 235, 117, 75, 10, 49, 68, 80, 180, 143, 237, 31, 26, 219, 153, 141, 51, 159, 17, 131, 20,
];

/// An MD2 computation (RFC 1319).
struct Md2 {
    state: [u8; 48],
    checksum: [u8; 16],
    block: [u8; 16],
    filled: usize,
}

impl Md2 {
    fn new() -> Md2 {
        Md2 { state: [0; 48], checksum: [0; 16], block: [0; 16], filled: 0 }
    }

    fn update(&mut self, data: &[u8]) {
        for &byte in data {
            self.block[self.filled] = byte;
            self.filled += 1;
            if self.filled == 16 {
                self.compress();
                self.filled = 0;
            }
        }
    }

    fn compress(&mut self) {
        let mut last = self.checksum[15];
        for i in 0..16 {
            self.checksum[i] ^= PI_SUBST[(self.block[i] ^ last) as usize];
            last = self.checksum[i];
        }
        for i in 0..16 {
            self.state[16 + i] = self.block[i];
            self.state[32 + i] = self.state[i] ^ self.block[i];
        }
        let mut t = 0u8;
        for round in 0..18u8 {
            for byte in self.state.iter_mut() {
                *byte ^= PI_SUBST[t as usize];
                t = *byte;
            }
            t = t.wrapping_add(round);
        }
    }

    fn finish(mut self) -> [u8; 16] {
        let pad = (16 - self.filled) as u8;
        self.update(&vec![pad; pad as usize]);
        let checksum = self.checksum;
        self.update(&checksum);
        self.state[..16].try_into().expect("16 bytes")
    }
}

/// HMAC (RFC 2104) over MD2 with a key of exactly one block.
fn hmac_md2(key: &[u8; 16], message: &[u8]) -> [u8; 16] {
    let pad = |mask: u8| key.map(|b| b ^ mask);
    let mut inner = Md2::new();
    inner.update(&pad(0x36));
    inner.update(message);
    let inner = inner.finish();
    let mut outer = Md2::new();
    outer.update(&pad(0x5c));
    outer.update(&inner);
    outer.finish()
}

/// The fixed key.
const KEY: [u8; 16] = [0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52, 0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F];

/// What the caller and the driver both know when the check runs.
pub struct Probe {
    /// What `cuDriverGetVersion` answers.
    pub driver_version: u32,
    /// The version libcudart passed.
    pub version: u32,
    /// The process id.
    pub process: u32,
    /// The low 32 bits of `pthread_self()`.
    pub thread: u32,
    /// Address of the runtime-interface export table.
    pub runtime_table: usize,
    /// Address of the integrity-check export table.
    pub integrity_table: usize,
    /// Address of the integrity-check function (the table's second slot).
    pub check_function: usize,
    /// The seconds libcudart passed.
    pub unix_seconds: u64,
}

/// One device as the check sees it.
pub struct DeviceIdentity {
    /// `cuDeviceGetUuid`.
    pub uuid: [u8; 16],
    /// `CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID`.
    pub pci_domain: i32,
    /// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`.
    pub pci_bus: i32,
    /// `CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID`.
    pub pci_device: i32,
}

/// The 16-byte answer, as the two 64-bit words the caller reads.
pub fn answer(probe: &Probe, devices: &[DeviceIdentity]) -> [u64; 2] {
    let digest = match probe.version % 10 {
        0 => [0x5C, 0x67, 0xCB, 0x03, 0x1C, 0x18, 0x41, 0x33, 0xE8, 0xD1, 0x4C, 0x1F, 0xAA, 0x83, 0xD3, 0x8E],
        1 => [0x5C, 0x67, 0xCB, 0x03, 0x1C, 0x18, 0x41, 0x18, 0xE8, 0xD1, 0x4C, 0x1F, 0xAA, 0x83, 0xD3, 0x8E],
        _ => {
            let mut message = Vec::with_capacity(48 + 28 * devices.len());
            for word in [probe.driver_version, probe.version, probe.process, probe.thread] {
                message.extend_from_slice(&word.to_le_bytes());
            }
            for word in [probe.runtime_table as u64, probe.integrity_table as u64, probe.check_function as u64, probe.unix_seconds] {
                message.extend_from_slice(&word.to_le_bytes());
            }
            for device in devices {
                message.extend_from_slice(&device.uuid);
                for word in [device.pci_domain, device.pci_bus, device.pci_device] {
                    message.extend_from_slice(&word.to_le_bytes());
                }
            }
            hmac_md2(&KEY, &message)
        }
    };
    [u64::from_le_bytes(digest[..8].try_into().unwrap()), u64::from_le_bytes(digest[8..].try_into().unwrap())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md2(data: &[u8]) -> [u8; 16] {
        let mut md = Md2::new();
        md.update(data);
        md.finish()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md2_matches_the_rfc_test_suite() {
        assert_eq!(hex(&md2(b"")), "8350e5a3e24c153df2275c9f80692773");
        assert_eq!(hex(&md2(b"abc")), "da853b0d3f88d99b30283a69e6ded6bb");
        assert_eq!(hex(&md2(b"abcdefghijklmnopqrstuvwxyz")), "4e8ddff3650292ab5a4108c3aa47940b");
        let digits = b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(hex(&md2(digits)), "d5976f79d83d3a0dc9806c3c66f3efd8");
    }

    #[test]
    fn updates_in_pieces_equal_one_update() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut md = Md2::new();
        for piece in data.chunks(7) {
            md.update(piece);
        }
        assert_eq!(md.finish(), md2(&data));
    }

    #[test]
    fn hmac_is_inner_then_outer_digest() {
        let message = b"message";
        let mut inner_input = KEY.map(|b| b ^ 0x36).to_vec();
        inner_input.extend_from_slice(message);
        let mut outer_input = KEY.map(|b| b ^ 0x5c).to_vec();
        outer_input.extend_from_slice(&md2(&inner_input));
        assert_eq!(hmac_md2(&KEY, message), md2(&outer_input));
    }

    fn probe(version: u32) -> Probe {
        Probe {
            driver_version: 13000,
            version,
            process: 4242,
            thread: 0xf79c_1000,
            runtime_table: 0x7fff_f695_8240,
            integrity_table: 0x7fff_f695_8220,
            check_function: 0x7fff_f2aa_f4a0,
            unix_seconds: 0x682b_9cee,
        }
    }

    #[test]
    fn the_answer_depends_on_every_input() {
        let device = || DeviceIdentity { uuid: [7; 16], pci_domain: 0, pci_bus: 2, pci_device: 0 };
        let base = answer(&probe(13052), &[device()]);
        assert_ne!(base, answer(&probe(13062), &[device()]));
        assert_ne!(base, answer(&probe(13052), &[]));
        assert_ne!(base, answer(&probe(13052), &[DeviceIdentity { pci_bus: 3, ..device() }]));
        let mut other = probe(13052);
        other.thread += 1;
        assert_ne!(base, answer(&other, &[device()]));
        assert_eq!(base, answer(&probe(13052), &[device()]));
    }

    #[test]
    fn versions_ending_in_0_or_1_get_fixed_answers() {
        assert_eq!(answer(&probe(13050), &[]), [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8]);
        assert_eq!(answer(&probe(12081), &[]), [0x1841_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8]);
    }
}

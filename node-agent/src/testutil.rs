//! Test helpers: a minimal ELF64 relocatable object with a `.modinfo` section, which is all
//! the agent reads from a `.ko`.

/// Builds a little-endian ELF64 file whose `.modinfo` holds `key=value\0` entries.
pub fn fake_ko(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for (k, v) in entries {
        modinfo.extend_from_slice(format!("{k}={v}").as_bytes());
        modinfo.push(0);
    }
    let shstrtab: &[u8] = b"\0.modinfo\0.shstrtab\0";
    let ehsize = 64usize;
    let modinfo_off = ehsize;
    let shstr_off = modinfo_off + modinfo.len();
    let mut shoff = shstr_off + shstrtab.len();
    shoff = shoff.div_ceil(8) * 8;
    let mut out = vec![0u8; shoff];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little endian
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    out[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out[60..62].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
    out[62..64].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
    out[modinfo_off..modinfo_off + modinfo.len()].copy_from_slice(&modinfo);
    out[shstr_off..shstr_off + shstrtab.len()].copy_from_slice(shstrtab);
    let section = |name: u32, ty: u32, off: usize, size: usize| {
        let mut sh = vec![0u8; 64];
        sh[0..4].copy_from_slice(&name.to_le_bytes());
        sh[4..8].copy_from_slice(&ty.to_le_bytes());
        sh[24..32].copy_from_slice(&(off as u64).to_le_bytes());
        sh[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        sh[48..56].copy_from_slice(&1u64.to_le_bytes());
        sh
    };
    out.extend_from_slice(&[0u8; 64]);
    out.extend_from_slice(&section(1, 1, modinfo_off, modinfo.len())); // PROGBITS
    out.extend_from_slice(&section(10, 3, shstr_off, shstrtab.len())); // STRTAB
    out
}

/// A `.ko` image with the usual modinfo of the toa module.
pub fn toa_ko(srcversion: &str) -> Vec<u8> {
    fake_ko(&[
        ("version", "0.1.0"),
        ("license", "GPL"),
        ("srcversion", srcversion),
        ("name", "toa"),
        (
            "vermagic",
            "6.1.0-56-amd64 SMP preempt mod_unload modversions ",
        ),
    ])
}

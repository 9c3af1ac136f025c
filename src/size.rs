//! Byte sizes for people: in the manifest's own syntax (`512M`, as `get`
//! and `describe` show limits) and in IEC units (`1.5 MiB`, as backups and
//! errors show sizes).

/// Bytes for people, in the manifest's own size syntax: `512M`, `1.5G`,
/// `100` (a whole number of units is shown without a decimal, as people
/// write sizes in manifests).
pub fn human_bytes(b: u64) -> String {
    let shown = bytesize::ByteSize::b(b).display().iec_short();
    if b < 1 << 10 {
        b.to_string()
    } else if in_whole_units(b) {
        format!("{shown:.0}")
    } else {
        shown.to_string()
    }
}

/// Whether `b` is a whole number of the IEC unit it is shown in (`3M`,
/// not `2.5M`), so it can be shown exactly without a decimal.
pub fn in_whole_units(b: u64) -> bool {
    let unit_bits = 10 * (b.max(1).ilog2() / 10);
    b.trailing_zeros() >= unit_bits
}

/// Bytes for people, as `unitlet backups` shows them: `1.5 MiB`.
pub fn size_text(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// A size limit as errors show it: `64 MiB (67108864 bytes)`.
pub fn limit_text(limit: u64) -> String {
    if limit >= 1 << 10 && in_whole_units(limit) {
        let shown = bytesize::ByteSize::b(limit).display().iec();
        format!("{shown:.0} ({limit} bytes)")
    } else {
        format!("{limit} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_the_manifest_syntax() {
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(1023), "1023");
        assert_eq!(human_bytes(100 << 20), "100M");
        assert_eq!(human_bytes(1536 << 20), "1.5G");
        assert_eq!(human_bytes(2 << 40), "2T");
        assert_eq!(human_bytes((50 << 20) + 1), "50.0M");
        assert_eq!(limit_text(64 << 20), "64 MiB (67108864 bytes)");
        assert_eq!(limit_text(64 << 10), "64 KiB (65536 bytes)");
        assert_eq!(limit_text(1000), "1000 bytes");
    }
}

//! Figures as short text for tiles and the header. Unknown values are "-", as in `clump nodes`.

pub(crate) const UNKNOWN: &str = "-";

/// Thousandths with two decimals (870 → "0.87"), in at most four characters: "12.3", then "999+".
pub(crate) fn load(milli: u32) -> String {
    let m = u64::from(milli);
    let centi = (m + 5) / 10;
    if centi < 1000 {
        return format!("{}.{:02}", centi / 100, centi % 100);
    }
    let deci = (m + 50) / 100;
    if deci < 1000 {
        return format!("{}.{}", deci / 10, deci % 10);
    }
    let units = (m + 500) / 1000;
    if units < 1000 {
        units.to_string()
    } else {
        "999+".to_owned()
    }
}

/// Tenths of `unit`, rounded, in integers so no float rounding shows.
fn tenths(kib: u64, unit: u64) -> String {
    let t = (u128::from(kib) * 10 + u128::from(unit / 2)) / u128::from(unit);
    format!("{}.{}", t / 10, t % 10)
}

const GIB: u64 = 1024 * 1024;
const TIB: u64 = 1024 * GIB;

/// Used and total memory: "800/1000 MiB" below 1 GiB of total, "4.0/16.0 GiB" from there on.
pub(crate) fn memory(total_kib: Option<u64>, free_kib: Option<u64>) -> String {
    let Some(total) = total_kib else {
        return UNKNOWN.to_owned();
    };
    let used = free_kib.map(|f| total.saturating_sub(f));
    if total >= GIB {
        let used = used.map_or_else(|| UNKNOWN.to_owned(), |u| tenths(u, GIB));
        format!("{used}/{} GiB", tenths(total, GIB))
    } else {
        let mib = |kib: u64| kib.div_ceil(1024).to_string();
        format!(
            "{}/{} MiB",
            used.map_or_else(|| UNKNOWN.to_owned(), mib),
            mib(total)
        )
    }
}

/// An amount of memory: "512 MiB", "15.6 GiB", "1.2 TiB".
pub(crate) fn kib(kib: u64) -> String {
    if kib >= TIB {
        format!("{} TiB", tenths(kib, TIB))
    } else if kib >= GIB {
        format!("{} GiB", tenths(kib, GIB))
    } else {
        format!("{} MiB", kib.div_ceil(1024))
    }
}

/// The time of day of a unix-ms instant, UTC: "13:05:09".
pub(crate) fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub(crate) fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| UNKNOWN.to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_fit_in_four_characters() {
        assert_eq!(load(870), "0.87");
        assert_eq!(load(5), "0.01");
        assert_eq!(load(9_994), "9.99");
        assert_eq!(load(9_996), "10.0");
        assert_eq!(load(123_456), "123");
        assert_eq!(load(u32::MAX), "999+");
        for v in [0, 999, 1000, 9_995, 99_949, 99_950, 999_999, 1_000_000] {
            assert!(load(v).len() <= 4, "{v}: {}", load(v));
        }
    }

    #[test]
    fn memory_and_clock() {
        assert_eq!(memory(Some(16 * GIB), Some(12 * GIB)), "4.0/16.0 GiB");
        assert_eq!(memory(Some(1000 * 1024), Some(200 * 1024)), "800/1000 MiB");
        assert_eq!(memory(Some(GIB), None), "-/1.0 GiB");
        assert_eq!(memory(None, Some(1)), "-");
        assert_eq!(kib(3 * TIB / 2), "1.5 TiB");
        assert_eq!(
            clock(86_400_000 + 13 * 3_600_000 + 5 * 60_000 + 9_999),
            "13:05:09"
        );
    }
}

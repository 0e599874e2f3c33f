//! drizzle-kit 1.0's folder layout, the way drizzle-orm 1.0 reads it (drizzle-compat.md 4.2,
//! 4.3, E39, E40): one `<YYYYMMDDHHmmss>_<name>/migration.sql` per migration, ordered with
//! `localeCompare`, `created_at` taken from the folder's timestamp at second precision. Pure:
//! the disk loader in `source` hands the folder names and file bytes in.

use super::collate;
use crate::report::utc;

/// The 14-digit timestamp prefix of a folder name, as drizzle-orm's `formatToMillis` turns it
/// into `created_at`: `Date.UTC(year, month - 1, day, hour, minute, second)`. `None` when the
/// name does not start with 14 ASCII digits (drizzle would compute NaN and fail at the insert).
///
/// `Date.UTC` does not validate: a month of 13 rolls into the next year, a day of 0 is the last
/// day of the month before, and years 0-99 mean 1900-1999. This follows it to the millisecond,
/// so a hand-named folder gets the `created_at` drizzle would give it.
pub fn folder_millis(name: &str) -> Option<i64> {
    let digits = name.as_bytes().get(..14)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let field = |r: std::ops::Range<usize>| -> i64 {
        digits[r]
            .iter()
            .fold(0, |n, d| n * 10 + i64::from(d - b'0'))
    };
    let mut year = field(0..4);
    if year <= 99 {
        year += 1900;
    }
    let month0 = field(4..6) - 1;
    let (year, month0) = (year + month0.div_euclid(12), month0.rem_euclid(12));
    let days = days_from_civil(year, month0 + 1) + field(6..8) - 1;
    let seconds = field(8..10) * 3600 + field(10..12) * 60 + field(12..14);
    Some(days * 86_400_000 + seconds * 1000)
}

/// Days since 1970-01-01 of the first day of `month` (1-12) in `year` (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether the prefix is a real UTC date and time (what drizzle-kit writes), so that reading it
/// needed none of `Date.UTC`'s rolling over.
pub fn is_calendar_date(name: &str, millis: i64) -> bool {
    let shown = utc(millis);
    let compact: String = shown.chars().filter(char::is_ascii_digit).collect();
    name.get(..14) == Some(compact.as_str())
}

/// Sorts folder names the way drizzle-orm 1.0 does (`localeCompare`).
pub fn sort(names: &mut [String]) {
    names.sort_by(|a, b| collate::compare(a, b));
}

/// Warnings about the order of folders that share a second, where drizzle's `localeCompare`
/// decides and other tools (`ls`, byte order, drizzle betas before beta.4) would disagree.
/// `names` must already be in drizzle's order.
pub fn order_warnings(names: &[String]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut start = 0;
    while start < names.len() {
        let second = names[start].get(..14);
        let end = names[start..]
            .iter()
            .position(|n| n.get(..14) != second)
            .map_or(names.len(), |k| start + k);
        let group = &names[start..end];
        if group.len() > 1 {
            let mut bytewise = group.to_vec();
            bytewise.sort();
            if !group.iter().all(|n| collate::exact_for(n)) {
                warnings.push(format!(
                    "the migration folders {} were generated in the same second and have \
                     characters outside printable ASCII; drizzle orders them with the runtime's \
                     ICU collation, which portcullis only approximates for such names (it uses \
                     {}). Rename them so the order is unambiguous",
                    group.join(", "),
                    group.join(" then ")
                ));
            } else if bytewise != group {
                warnings.push(format!(
                    "the migration folders {} were generated in the same second; drizzle-orm 1.0 \
                     (and portcullis) apply them in localeCompare order ({}), which is not byte \
                     order ({}) as `ls` shows them. If they depend on each other, check that \
                     this order is right, or rename one",
                    group.join(", "),
                    group.join(" then "),
                    bytewise.join(" then ")
                ));
            }
        }
        start = end;
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_is_the_folder_second_in_utc() {
        // drizzle's own fixture name for 0000_puzzling_flatman (when 1680271923328).
        assert_eq!(
            folder_millis("20230331141203_puzzling_flatman"),
            Some(1_680_271_923_000)
        );
        assert_eq!(folder_millis("19700101000000_x"), Some(0));
        assert_eq!(folder_millis("20000229235959"), Some(951_868_799_000));
        assert!(is_calendar_date(
            "20230331141203_puzzling_flatman",
            1_680_271_923_000
        ));
    }

    #[test]
    fn anything_but_fourteen_leading_digits_is_refused() {
        for bad in [
            "2023033114120_x",
            "2023-03-31_x",
            "x20230331141203",
            "init",
            "",
            "2023033114120a_x",
            "+2023033114120_x",
        ] {
            assert_eq!(folder_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn out_of_range_fields_roll_over_like_date_utc() {
        // Values computed by Node 20: Date.UTC(2024, 12, 1, 0, 0, 0) etc.
        assert_eq!(folder_millis("20241301000000_x"), Some(1_735_689_600_000));
        assert_eq!(folder_millis("20240100000000_x"), Some(1_703_980_800_000));
        assert_eq!(folder_millis("20240000000000_x"), Some(1_701_302_400_000));
        assert_eq!(folder_millis("20240101246060_x"), Some(1_704_157_260_000));
        assert_eq!(folder_millis("00990101000000_x"), Some(915_148_800_000));
        assert!(!is_calendar_date("20241301000000_x", 1_735_689_600_000));
    }

    #[test]
    fn order_is_locale_compare_and_disagreements_are_warned() {
        let mut names: Vec<String> = [
            "20250101000000_addIndex",
            "20250101000000_add_index",
            "20240101000000_b",
            "20250101000001_a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sort(&mut names);
        assert_eq!(
            names,
            [
                "20240101000000_b",
                "20250101000000_add_index",
                "20250101000000_addIndex",
                "20250101000001_a"
            ]
        );
        // Byte order would put addIndex ('I' = 0x49) before add_index ('_' = 0x5f).
        let w = order_warnings(&names);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("not byte order"), "{}", w[0]);

        let agree: Vec<String> = ["20250101000000_a", "20250101000000_b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(order_warnings(&agree).is_empty());
        let unicode: Vec<String> = ["20250101000000_a", "20250101000000_é"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(order_warnings(&unicode)[0].contains("approximates"));
    }
}

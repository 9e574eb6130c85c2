//! SQL literals for the statements sent as text (the archive's daily roll-up upsert, one
//! statement per batch, and the minutely one): numbers as digits, dates in MySQL's format, and strings either
//! quoted (only when every byte is a letter, a digit or one of ` _.:/@+-`, which need no
//! escaping in any `sql_mode`) or as a hex literal (any other text: nothing in it can end
//! the literal).

use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveDateTime};

/// Appends `s` as a string literal.
pub fn text(out: &mut String, s: &str) {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" _.:/@+-".contains(&b));
    if plain {
        out.push('\'');
        out.push_str(s);
        out.push('\'');
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.push_str("X'");
        for b in s.bytes() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out.push('\'');
    }
}

/// Appends an integer.
pub fn int(out: &mut String, v: i64) {
    // Writing to a `String` cannot fail.
    write!(out, "{v}").unwrap_or_default();
}

/// Appends a `DATE` literal.
pub fn date(out: &mut String, d: NaiveDate) {
    write!(out, "'{}'", d.format("%Y-%m-%d")).unwrap_or_default();
}

/// Appends a `DATETIME` literal of the minute `t` falls in.
pub fn minute(out: &mut String, t: NaiveDateTime) {
    write!(out, "'{}'", t.format("%Y-%m-%d %H:%M:00")).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> String {
        let mut out = String::new();
        text(&mut out, s);
        out
    }

    #[test]
    fn a_minute_drops_its_seconds() {
        let t = NaiveDate::from_ymd_opt(2026, 12, 3)
            .and_then(|d| d.and_hms_micro_opt(7, 5, 59, 999_999))
            .expect("a time");
        let mut out = String::new();
        minute(&mut out, t);
        assert_eq!(out, "'2026-12-03 07:05:00'");
    }

    #[test]
    fn plain_text_is_quoted_and_anything_else_is_hex() {
        assert_eq!(lit("req_0af3"), "'req_0af3'");
        assert_eq!(
            lit("claude-sonnet-4-20250514"),
            "'claude-sonnet-4-20250514'"
        );
        assert_eq!(lit(""), "''");
        assert_eq!(lit("a'b"), "X'612762'");
        assert_eq!(lit("a\\b"), "X'615C62'");
        assert_eq!(lit("é"), "X'C3A9'");
        assert_eq!(lit("x\0y"), "X'780079'");
    }

    #[test]
    fn dates_and_numbers_in_mysql_form() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap_or_default();
        let mut out = String::new();
        date(&mut out, d);
        int(&mut out, -7);
        assert_eq!(out, "'2026-12-02'-7");
    }
}

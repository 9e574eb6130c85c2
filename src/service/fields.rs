//! Lenient, field-named reading of admin request bodies: absent fields are `None` (so PUT
//! changes only what it names), numbers may come as strings (as CRS's web UI sends them),
//! and every error names the field.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::AdminError;

/// The fields of one JSON object body.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
}

/// Micro-dollars in one US dollar.
pub const MICROS_PER_USD: f64 = 1_000_000.0;

/// Micro-dollars as the admin API shows them (USD).
pub fn usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD
}

impl<'a> Fields<'a> {
    /// The body must be a JSON object.
    pub fn of(body: &'a Value) -> Result<Fields<'a>, AdminError> {
        match body {
            Value::Object(map) => Ok(Fields { map }),
            _ => Err(AdminError::invalid(
                "the request body must be a JSON object",
            )),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The raw value, `None` when absent.
    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    /// A nested object field.
    pub fn object(&self, name: &str) -> Result<Option<Fields<'a>>, AdminError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => Fields::of(v).map(Some),
            Some(_) => Err(AdminError::field(name, "must be an object")),
        }
    }

    /// A string (trimmed); `null` reads as absent.
    pub fn string(&self, name: &str) -> Result<Option<String>, AdminError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(AdminError::field(name, "must be a string")),
        }
    }

    /// A string of at most `max` characters.
    pub fn bounded_string(&self, name: &str, max: usize) -> Result<Option<String>, AdminError> {
        let s = self.string(name)?;
        if let Some(s) = &s
            && s.chars().count() > max
        {
            return Err(AdminError::field(
                name,
                format!("must be at most {max} characters"),
            ));
        }
        Ok(s)
    }

    /// A boolean (`true` / `false`, also as strings).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, AdminError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(_) => Err(AdminError::field(name, "must be true or false")),
        }
    }

    /// A whole number in `min..=max`; an empty string reads as 0 ("no limit").
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a whole number checked to lie in min..=max above"
    )]
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, AdminError> {
        let n = match self.map.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => 0.0,
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| AdminError::field(name, "must be a number"))?,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(_) => return Err(AdminError::field(name, "must be a number")),
        };
        if !n.is_finite() || n.fract() != 0.0 {
            return Err(AdminError::field(name, "must be a whole number"));
        }
        if n < 0.0 && min >= 0 {
            return Err(AdminError::field(name, "must not be negative"));
        }
        if n < min as f64 || n > max as f64 {
            return Err(AdminError::field(
                name,
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(Some(n as i64))
    }

    /// An amount in USD (≥ 0), returned in micro-dollars.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "finite, 0..=1e12 USD checked above: at most 1e18 micro-dollars"
    )]
    pub fn usd_micros(&self, name: &str) -> Result<Option<i64>, AdminError> {
        let n = match self.map.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => 0.0,
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| AdminError::field(name, "must be a number (USD)"))?,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(_) => return Err(AdminError::field(name, "must be a number (USD)")),
        };
        if !n.is_finite() {
            return Err(AdminError::field(name, "must be a finite number (USD)"));
        }
        if n < 0.0 {
            return Err(AdminError::field(name, "must not be negative"));
        }
        if n > 1e12 {
            return Err(AdminError::field(name, "is too large"));
        }
        Ok(Some((n * MICROS_PER_USD).round() as i64))
    }

    /// A list of strings (a JSON array, or one comma-separated string); blanks dropped.
    pub fn string_list(
        &self,
        name: &str,
        max_items: usize,
        max_len: usize,
    ) -> Result<Option<Vec<String>>, AdminError> {
        let items: Vec<String> = match self.map.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.trim().to_string()),
                    _ => Err(AdminError::field(name, "must be a list of strings")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(AdminError::field(name, "must be a list of strings")),
        };
        let mut out: Vec<String> = Vec::new();
        for item in items.into_iter().filter(|s| !s.is_empty()) {
            if item.chars().count() > max_len || item.chars().any(char::is_control) {
                return Err(AdminError::field(
                    name,
                    format!("each entry must be at most {max_len} printable characters"),
                ));
            }
            if !out.contains(&item) {
                out.push(item);
            }
        }
        if out.len() > max_items {
            return Err(AdminError::field(
                name,
                format!("must have at most {max_items} entries"),
            ));
        }
        Ok(Some(out))
    }

    /// A point in time: RFC 3339 text or milliseconds since the epoch. `Some(None)` when
    /// the field is present but `null` or empty (clears it).
    pub fn datetime(&self, name: &str) -> Result<Option<Option<DateTime<Utc>>>, AdminError> {
        let bad = || AdminError::field(name, "must be an RFC 3339 date-time or epoch milliseconds");
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(None)),
            Some(Value::String(s)) => {
                let s = s.trim();
                if let Ok(ms) = s.parse::<i64>() {
                    return Utc
                        .timestamp_millis_opt(ms)
                        .single()
                        .map(Some)
                        .map(Some)
                        .ok_or_else(bad);
                }
                DateTime::parse_from_rfc3339(s)
                    .map(|d| Some(Some(d.with_timezone(&Utc))))
                    .map_err(|_| bad())
            }
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .map(|d| Some(Some(d)))
                .ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_checked_and_name_the_field() {
        let body = json!({"a": -1, "b": "12", "c": 1.5, "d": "", "e": "x"});
        let f = Fields::of(&body).unwrap();
        assert_eq!(f.int("a", 0, 10).unwrap_err().field.as_deref(), Some("a"));
        assert_eq!(f.int("b", 0, 100).unwrap(), Some(12));
        assert!(f.int("c", 0, 10).is_err());
        assert_eq!(f.int("d", 0, 10).unwrap(), Some(0));
        assert!(f.int("e", 0, 10).is_err());
        assert_eq!(f.int("zz", 0, 10).unwrap(), None);
    }

    #[test]
    fn usd_becomes_micros() {
        let body = json!({"a": 1.25, "b": -0.01, "c": "0.5"});
        let f = Fields::of(&body).unwrap();
        assert_eq!(f.usd_micros("a").unwrap(), Some(1_250_000));
        assert!(f.usd_micros("b").is_err());
        assert_eq!(f.usd_micros("c").unwrap(), Some(500_000));
    }

    #[test]
    fn dates_and_lists() {
        let body = json!({"a": "2030-01-01T00:00:00Z", "b": null, "c": "tomorrow",
            "d": 1893456000000i64, "l": ["x", " y ", "x", ""], "s": "p, q"});
        let f = Fields::of(&body).unwrap();
        assert!(matches!(f.datetime("a").unwrap(), Some(Some(_))));
        assert_eq!(f.datetime("b").unwrap(), Some(None));
        assert!(f.datetime("c").is_err());
        assert_eq!(f.datetime("d").unwrap(), f.datetime("a").unwrap());
        assert_eq!(
            f.string_list("l", 5, 10).unwrap(),
            Some(vec!["x".into(), "y".into()])
        );
        assert_eq!(
            f.string_list("s", 5, 10).unwrap(),
            Some(vec!["p".into(), "q".into()])
        );
    }
}

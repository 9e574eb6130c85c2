//! Model prices (LiteLLM-format table) and the exact integer cost of a request.
//!
//! Prices are held as pico-dollars per token (= micro-dollars per million tokens), so every
//! published price is an exact integer and costs are computed with integer arithmetic; the
//! result is rounded (half up) to whole micro-dollars only at the end.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::domain::usage::Usage;

/// The price table shipped in `config/model_prices.json`, compiled in.
const BUNDLED_PRICES: &str = include_str!("../../config/model_prices.json");

/// Pico-dollars per micro-dollar.
const PICO_PER_MICRO: i128 = 1_000_000;
/// Input-side tokens above which long-context prices (when the model has them) apply.
pub const LONG_CONTEXT_THRESHOLD: u64 = 200_000;
/// Largest accepted per-token price ($1000/token): anything above is a broken table.
const MAX_PRICE_PICO: i64 = 1_000_000_000_000_000;

/// Why a price table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    /// The file could not be read.
    #[error("cannot read price table {path}: {source}")]
    Io {
        /// The file that was read.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not JSON.
    #[error("price table is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not an object of model → prices.
    #[error("price table must be a JSON object of model name to prices")]
    NotAnObject,
    /// No entry had usable input and output prices.
    #[error("price table has no usable model prices")]
    Empty,
}

/// Prices of one tier, in pico-dollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierPrices {
    /// Uncached input.
    pub input: i64,
    /// Output.
    pub output: i64,
    /// 5-minute cache write (default 1.25 × input).
    pub cache_write_5m: i64,
    /// 1-hour cache write (default 2 × input).
    pub cache_write_1h: i64,
    /// Cache read (default 0.1 × input).
    pub cache_read: i64,
}

/// The prices of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// Standard prices.
    pub base: TierPrices,
    /// Prices used for every token once the input side exceeds [`LONG_CONTEXT_THRESHOLD`].
    pub long_context: Option<TierPrices>,
    /// `litellm_provider`, when given.
    pub provider: Option<String>,
    /// `max_tokens` (output), when given.
    pub max_tokens: Option<u64>,
}

/// Cost of one request in integer micro-dollars (USD × 10⁶).
///
/// Each component is rounded on its own; `total_micro` is the rounded exact sum, so it can
/// differ from the sum of the components by a micro-dollar or two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostBreakdown {
    /// Uncached input.
    pub input_micro: i64,
    /// Output.
    pub output_micro: i64,
    /// 5-minute cache writes.
    pub cache_write_5m_micro: i64,
    /// 1-hour cache writes.
    pub cache_write_1h_micro: i64,
    /// Cache reads.
    pub cache_read_micro: i64,
    /// The whole request.
    pub total_micro: i64,
    /// False when no price was found for the model: every amount is then 0.
    pub priced: bool,
    /// True when the price is a guess (prefix or family match, see [`PriceTable::lookup`]).
    pub fallback: bool,
    /// The table entry used, if any.
    pub matched_model: Option<String>,
    /// True when long-context prices were applied.
    pub long_context: bool,
}

/// How a model name was matched to a table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The exact name, or the same name once normalised (provider prefix, `@`/`[1m]`
    /// suffixes, case) or without its date suffix, or a dated version of an undated name.
    Exact,
    /// A guess: the longest entry that prefixes the name, or the dearest entry of the
    /// same family (opus / sonnet / haiku).
    Fallback,
}

/// A model → prices table in LiteLLM's `model_prices_and_context_window.json` format.
#[derive(Debug, Clone)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    skipped: Vec<String>,
}

impl PriceTable {
    /// Load a table from a JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PriceTableError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PriceTableError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The table shipped in `config/model_prices.json` (compiled into the binary).
    pub fn bundled() -> Result<Self, PriceTableError> {
        Self::from_json(BUNDLED_PRICES)
    }

    /// Parse a table. Entries without numeric, non-negative input and output prices (e.g.
    /// LiteLLM's `sample_spec`, image models) are skipped and listed by [`skipped`](Self::skipped).
    pub fn from_json(text: &str) -> Result<Self, PriceTableError> {
        let root: Value = serde_json::from_str(text)?;
        let Value::Object(entries) = root else {
            return Err(PriceTableError::NotAnObject);
        };
        let mut models = HashMap::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (name, entry) in entries {
            match entry.as_object().and_then(parse_model) {
                Some(price) if name != "sample_spec" => {
                    models.insert(name.to_ascii_lowercase(), price);
                }
                _ => skipped.push(name),
            }
        }
        if models.is_empty() {
            return Err(PriceTableError::Empty);
        }
        skipped.sort();
        Ok(Self { models, skipped })
    }

    /// Names of the entries that were ignored while loading.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Number of priced models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// True when the table has no models (never true for a loaded table).
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// All priced model names (lowercase), in no particular order.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The prices for `model`, the entry name used and how it matched.
    ///
    /// In order: the exact name; the normalised name (lowercase, without a provider prefix
    /// like `anthropic/` or `us.anthropic.`, a Bedrock `-v1:0` suffix or a `[1m]` suffix,
    /// with Vertex `@date` as `-date`); that name without its `-YYYYMMDD` date; the newest
    /// dated entry of an undated name. Then, as a [`MatchKind::Fallback`]: the longest entry
    /// name that is a prefix of the name, then the dearest (by input price) `claude` entry of
    /// the same family (`opus`, `sonnet`, `haiku`) — overcharging rather than undercharging.
    pub fn lookup(&self, model: &str) -> Option<(&str, &ModelPrice, MatchKind)> {
        if let Some((name, price)) = self.models.get_key_value(model) {
            return Some((name, price, MatchKind::Exact));
        }
        let normal = normalize_model(model);
        let undated = strip_date(&normal);
        for candidate in [normal.as_str(), undated] {
            if let Some((name, price)) = self.models.get_key_value(candidate) {
                return Some((name, price, MatchKind::Exact));
            }
        }
        let dated = self
            .models
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(undated)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(is_date)
            })
            .max_by(|a, b| a.0.cmp(b.0));
        if let Some((name, price)) = dated {
            return Some((name, price, MatchKind::Exact));
        }
        let prefix = self
            .models
            .iter()
            .filter(|(name, _)| {
                normal
                    .strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(b.0)));
        if let Some((name, price)) = prefix {
            return Some((name, price, MatchKind::Fallback));
        }
        let family = ["opus", "sonnet", "haiku"]
            .into_iter()
            .find(|f| normal.contains(f))?;
        self.models
            .iter()
            .filter(|(name, _)| name.starts_with("claude") && name.contains(family))
            .max_by(|a, b| {
                (a.1.base.input, a.1.base.output, a.0).cmp(&(b.1.base.input, b.1.base.output, b.0))
            })
            .map(|(name, price)| (name.as_str(), price, MatchKind::Fallback))
    }

    /// The cost of `usage` on `model`; an unknown model costs 0 with `priced: false`.
    pub fn cost(&self, model: &str, usage: &Usage) -> CostBreakdown {
        let Some((name, price, kind)) = self.lookup(model) else {
            return CostBreakdown::default();
        };
        let (tier, long_context) = match price.long_context {
            Some(long) if usage.total_input_tokens() > LONG_CONTEXT_THRESHOLD => (long, true),
            _ => (price.base, false),
        };
        let parts = [
            pico(usage.input_tokens, tier.input),
            pico(usage.output_tokens, tier.output),
            pico(usage.cache_create_5m_tokens, tier.cache_write_5m),
            pico(usage.cache_create_1h_tokens, tier.cache_write_1h),
            pico(usage.cache_read_tokens, tier.cache_read),
        ];
        CostBreakdown {
            input_micro: to_micro(parts[0]),
            output_micro: to_micro(parts[1]),
            cache_write_5m_micro: to_micro(parts[2]),
            cache_write_1h_micro: to_micro(parts[3]),
            cache_read_micro: to_micro(parts[4]),
            total_micro: to_micro(parts.iter().sum()),
            priced: true,
            fallback: kind == MatchKind::Fallback,
            matched_model: Some(name.to_owned()),
            long_context,
        }
    }
}

/// True for Opus models (the ones the weekly Opus cost limit counts).
pub fn is_opus(model: &str) -> bool {
    // Compared in place: every relayed request asks, and a lowercase copy is an allocation.
    model
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"opus"))
}

/// Parse one LiteLLM entry; `None` when it has no usable input/output prices.
fn parse_model(entry: &Map<String, Value>) -> Option<ModelPrice> {
    let base = parse_tier(
        entry,
        [
            "input_cost_per_token",
            "output_cost_per_token",
            "cache_creation_input_token_cost",
            "cache_creation_input_token_cost_above_1hr",
            "cache_read_input_token_cost",
        ],
    )?;
    let long_context = parse_tier(
        entry,
        [
            "input_cost_per_token_above_200k_tokens",
            "output_cost_per_token_above_200k_tokens",
            "cache_creation_input_token_cost_above_200k_tokens",
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens",
            "cache_read_input_token_cost_above_200k_tokens",
        ],
    );
    Some(ModelPrice {
        base,
        long_context,
        provider: entry
            .get("litellm_provider")
            .and_then(Value::as_str)
            .map(str::to_owned),
        max_tokens: entry.get("max_tokens").and_then(Value::as_u64),
    })
}

/// One tier from the fields `[input, output, write 5m, write 1h, read]`; cache prices that
/// are missing (or invalid) are derived from the input price.
fn parse_tier(entry: &Map<String, Value>, fields: [&str; 5]) -> Option<TierPrices> {
    let price = |field: &str| entry.get(field).and_then(price_pico);
    let input = price(fields[0])?;
    let output = price(fields[1])?;
    Some(TierPrices {
        input,
        output,
        cache_write_5m: price(fields[2]).unwrap_or_else(|| ratio(input, 5, 4)),
        cache_write_1h: price(fields[3]).unwrap_or_else(|| ratio(input, 2, 1)),
        cache_read: price(fields[4]).unwrap_or_else(|| ratio(input, 1, 10)),
    })
}

/// A per-token USD price as pico-dollars, rounded to the nearest pico-dollar.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the range check makes the cast lossless"
)]
fn price_pico(value: &Value) -> Option<i64> {
    let usd = value.as_f64()?;
    let pico = (usd * 1e12).round();
    // The range check makes the cast lossless.
    (pico.is_finite() && (0.0..=MAX_PRICE_PICO as f64).contains(&pico)).then_some(pico as i64)
}

/// `value × num / den`, rounded half up (non-negative inputs).
fn ratio(value: i64, num: i64, den: i64) -> i64 {
    (value * num + den / 2) / den
}

fn pico(tokens: u64, price: i64) -> i128 {
    i128::from(tokens) * i128::from(price)
}

/// Pico-dollars to micro-dollars, rounded half up, saturating at `i64::MAX`.
fn to_micro(pico: i128) -> i64 {
    i64::try_from((pico + PICO_PER_MICRO / 2) / PICO_PER_MICRO).unwrap_or(i64::MAX)
}

/// Lowercase; drop `[…]` suffix, provider prefixes and Bedrock version suffix; `@` → `-`.
fn normalize_model(model: &str) -> String {
    let mut m = model.trim().to_ascii_lowercase();
    if let Some(open) = m.find('[') {
        m.truncate(open);
    }
    if let Some(slash) = m.rfind('/') {
        m.drain(..=slash);
    }
    if let Some(start) = m.find("claude-").filter(|&i| i > 0) {
        m.drain(..start);
    }
    if let Some(v) = m.rfind("-v") {
        let tail = &m[v + 2..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit() || b == b':') {
            m.truncate(v);
        }
    }
    m.replace('@', "-")
}

/// The name without a trailing `-YYYYMMDD`.
fn strip_date(model: &str) -> &str {
    match model.rsplit_once('-') {
        Some((head, tail)) if is_date(tail) => head,
        _ => model,
    }
}

fn is_date(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        PriceTable::bundled().unwrap()
    }

    fn usage(input: u64, output: u64, w5m: u64, w1h: u64, read: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_create_5m_tokens: w5m,
            cache_create_1h_tokens: w1h,
            cache_read_tokens: read,
        }
    }

    #[test]
    fn bundled_table_has_every_current_model() {
        let t = table();
        assert!(t.skipped().is_empty(), "{:?}", t.skipped());
        for m in [
            "claude-opus-4-5-20251101",
            "claude-opus-4-5",
            "claude-opus-4-1-20250805",
            "claude-opus-4-20250514",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-20250514",
            "claude-3-7-sonnet-20250219",
            "claude-3-5-sonnet-20241022",
            "claude-3-5-haiku-20241022",
            "claude-haiku-4-5-20251001",
            "claude-3-haiku-20240307",
        ] {
            let (name, _, kind) = t.lookup(m).unwrap();
            assert_eq!((name, kind), (m, MatchKind::Exact));
        }
    }

    #[test]
    fn twenty_five_input_tokens_at_3_dollars_is_75_micro() {
        let c = table().cost("claude-sonnet-4-20250514", &usage(25, 0, 0, 0, 0));
        assert_eq!(c.input_micro, 75);
        assert_eq!(c.total_micro, 75);
        assert!(c.priced && !c.fallback);
    }

    #[test]
    fn matches_crs_fixture_costs() {
        // dataset-a `ratedCostMicro` per request: sum / requests of the alltime model hashes.
        let t = table();
        let sonnet = t.cost("claude-sonnet-4-20250514", &usage(25, 12, 100, 0, 200));
        assert_eq!(
            (
                sonnet.input_micro,
                sonnet.output_micro,
                sonnet.cache_write_5m_micro,
                sonnet.cache_read_micro,
                sonnet.total_micro
            ),
            (75, 180, 375, 60, 690)
        );
        assert_eq!(
            t.cost("claude-opus-4-1-20250805", &usage(40, 30, 0, 0, 120))
                .total_micro,
            3030
        );
        // 18 × 0.8 + 9 × 4 + 50 × 1 = 100.4 micro → 100 (CRS rounds the same way).
        let haiku = t.cost("claude-3-5-haiku-20241022", &usage(18, 9, 50, 0, 0));
        assert_eq!(haiku.input_micro, 14);
        assert_eq!(haiku.total_micro, 100);
    }

    #[test]
    fn one_hour_cache_writes_and_rounding_half_up() {
        let t = table();
        let c = t.cost("claude-sonnet-4-5-20250929", &usage(0, 0, 0, 1000, 0));
        assert_eq!(c.cache_write_1h_micro, 6000);
        // 5 haiku-3.5 cache-read tokens = 0.4 micro → 0; 7 = 0.56 → 1.
        let h = "claude-3-5-haiku-20241022";
        assert_eq!(t.cost(h, &usage(0, 0, 0, 0, 5)).total_micro, 0);
        assert_eq!(t.cost(h, &usage(0, 0, 0, 0, 7)).total_micro, 1);
        // Exact half rounds up: 2 haiku-3 input tokens at $0.25/MTok = 0.5 micro.
        assert_eq!(
            t.cost("claude-3-haiku-20240307", &usage(2, 0, 0, 0, 0))
                .total_micro,
            1
        );
    }

    #[test]
    fn total_is_the_rounded_exact_sum() {
        // Three components of 0.4 micro each round to 0; the total is 1.2 → 1.
        let t = PriceTable::from_json(
            r#"{"m":{"input_cost_per_token":4e-7,"output_cost_per_token":4e-7,
                "cache_creation_input_token_cost":4e-7,"cache_read_input_token_cost":4e-7,
                "cache_creation_input_token_cost_above_1hr":4e-7}}"#,
        )
        .unwrap();
        let c = t.cost("m", &usage(1, 1, 1, 0, 0));
        assert_eq!(
            (c.input_micro, c.output_micro, c.cache_write_5m_micro),
            (0, 0, 0)
        );
        assert_eq!(c.total_micro, 1);
    }

    #[test]
    fn large_usage_is_exact() {
        let c = table().cost(
            "claude-opus-4-1-20250805",
            &usage(1_000_000_000, 1_000_000_000, 0, 0, 0),
        );
        assert_eq!(c.total_micro, 90_000_000_000);
        let huge = table().cost("claude-opus-4-1-20250805", &usage(0, u64::MAX, 0, 0, 0));
        assert_eq!(huge.output_micro, i64::MAX);
    }

    #[test]
    fn missing_cache_prices_are_derived() {
        let t = PriceTable::from_json(
            r#"{"x":{"input_cost_per_token":3e-6,"output_cost_per_token":1.5e-5}}"#,
        )
        .unwrap();
        let (_, p, _) = t.lookup("x").unwrap();
        assert_eq!(
            p.base,
            TierPrices {
                input: 3_000_000,
                output: 15_000_000,
                cache_write_5m: 3_750_000,
                cache_write_1h: 6_000_000,
                cache_read: 300_000,
            }
        );
        assert_eq!(p.long_context, None);
        let c = t.cost("x", &usage(0, 0, 100, 100, 1000));
        assert_eq!(
            (
                c.cache_write_5m_micro,
                c.cache_write_1h_micro,
                c.cache_read_micro
            ),
            (375, 600, 300)
        );
    }

    #[test]
    fn long_context_prices_apply_above_200k_input() {
        let t = table();
        let m = "claude-sonnet-4-20250514";
        let at = t.cost(m, &usage(150_000, 1000, 0, 0, 50_000));
        assert!(!at.long_context);
        assert_eq!(at.total_micro, 150_000 * 3 + 15_000 + 50_000 * 3 / 10);
        let above = t.cost(m, &usage(150_001, 1000, 0, 0, 50_000));
        assert!(above.long_context);
        assert_eq!(above.input_micro, 900_006);
        assert_eq!(above.output_micro, 22_500);
        assert_eq!(above.cache_read_micro, 30_000);
        // Models without long-context prices keep their base prices.
        let opus = t.cost("claude-opus-4-1-20250805", &usage(300_000, 0, 0, 0, 0));
        assert!(!opus.long_context);
        assert_eq!(opus.total_micro, 4_500_000);
    }

    #[test]
    fn lookup_normalises_names() {
        let t = table();
        for (asked, entry) in [
            ("CLAUDE-SONNET-4-20250514", "claude-sonnet-4-20250514"),
            ("claude-sonnet-4-20250514[1m]", "claude-sonnet-4-20250514"),
            (
                "anthropic/claude-3-5-haiku-20241022",
                "claude-3-5-haiku-20241022",
            ),
            (
                "us.anthropic.claude-opus-4-1-20250805-v1:0",
                "claude-opus-4-1-20250805",
            ),
            ("claude-sonnet-4@20250514", "claude-sonnet-4-20250514"),
            ("claude-opus-4-5-20991231", "claude-opus-4-5"),
            ("claude-3-haiku", "claude-3-haiku-20240307"),
            ("claude-sonnet-4", "claude-sonnet-4-20250514"),
        ] {
            let (name, _, kind) = t.lookup(asked).unwrap();
            assert_eq!((name, kind), (entry, MatchKind::Exact), "{asked}");
        }
    }

    #[test]
    fn unknown_versions_fall_back_by_prefix_then_family() {
        let t = table();
        let (name, _, kind) = t.lookup("claude-sonnet-4-5-thinking-preview").unwrap();
        assert_eq!((name, kind), ("claude-sonnet-4-5", MatchKind::Fallback));
        // Family: the dearest Opus.
        let (_, p, kind) = t.lookup("claude-opus-9").unwrap();
        assert_eq!(kind, MatchKind::Fallback);
        assert_eq!(p.base.input, 15_000_000);
        let (_, p, _) = t.lookup("claude-haiku-9").unwrap();
        assert_eq!(p.base.input, 1_000_000);
        let c = t.cost("claude-opus-9", &usage(1, 0, 0, 0, 0));
        assert!(c.priced && c.fallback);
        assert_eq!(c.total_micro, 15);
    }

    #[test]
    fn unknown_model_costs_zero_unpriced() {
        let c = table().cost("gpt-4o", &usage(1000, 1000, 0, 0, 0));
        assert_eq!(c, CostBreakdown::default());
        assert!(!c.priced);
        assert_eq!(c.matched_model, None);
    }

    #[test]
    fn litellm_quirks_are_skipped_not_fatal() {
        let t = PriceTable::from_json(
            r#"{
              "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "max_tokens": "LEGACY"},
              "dall-e-3": {"input_cost_per_pixel": 1e-8, "output_cost_per_token": 0.0},
              "bad": {"input_cost_per_token": "3e-6", "output_cost_per_token": 1e-5},
              "neg": {"input_cost_per_token": -1e-6, "output_cost_per_token": 1e-5},
              "not-an-object": 3,
              "claude-x": {"input_cost_per_token": 1e-6, "output_cost_per_token": 5e-6, "max_tokens": 64000, "litellm_provider": "anthropic"}
            }"#,
        )
        .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.skipped(),
            ["bad", "dall-e-3", "neg", "not-an-object", "sample_spec"]
        );
        let (_, p, _) = t.lookup("claude-x").unwrap();
        assert_eq!(p.max_tokens, Some(64000));
        assert_eq!(p.provider.as_deref(), Some("anthropic"));
    }

    #[test]
    fn load_errors() {
        assert!(matches!(
            PriceTable::from_json("nope"),
            Err(PriceTableError::Json(_))
        ));
        assert!(matches!(
            PriceTable::from_json("[]"),
            Err(PriceTableError::NotAnObject)
        ));
        assert!(matches!(
            PriceTable::from_json("{}"),
            Err(PriceTableError::Empty)
        ));
        assert!(matches!(
            PriceTable::load("/nonexistent/prices.json"),
            Err(PriceTableError::Io { .. })
        ));
    }

    #[test]
    fn load_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.json");
        std::fs::write(&path, BUNDLED_PRICES).unwrap();
        let t = PriceTable::load(&path).unwrap();
        assert_eq!(t.len(), table().len());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/model_prices.json");
        assert_eq!(PriceTable::load(path).unwrap().len(), t.len());
    }

    #[test]
    fn price_conversion_is_exact_for_published_prices() {
        for (usd, pico) in [
            (3e-6, 3_000_000),
            (3.75e-6, 3_750_000),
            (3e-7, 300_000),
            (8e-8, 80_000),
            (1.875e-5, 18_750_000),
            (2.25e-5, 22_500_000),
            (3e-8, 30_000),
            (0.3 * 1e-6, 300_000),
        ] {
            assert_eq!(price_pico(&Value::from(usd)), Some(pico), "{usd}");
        }
        assert_eq!(price_pico(&Value::from(-1.0)), None);
        assert_eq!(price_pico(&Value::from(1e300)), None);
    }

    #[test]
    fn opus_detection() {
        assert!(is_opus("claude-opus-4-1-20250805"));
        assert!(is_opus("claude-3-opus-20240229"));
        assert!(is_opus("us.anthropic.Claude-Opus-4-5"));
        assert!(!is_opus("claude-sonnet-4-20250514"));
        assert!(!is_opus("claude-3-5-haiku-20241022"));
        assert!(is_opus("OPUS"));
        assert!(!is_opus("opu"));
        assert!(!is_opus(""));
        assert!(!is_opus("o-p-u-s"));
    }
}

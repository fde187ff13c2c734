//! What tokens cost: the embedded price table of the Claude and OpenAI models, `settings.pricing`
//! over it, and the cost of a session's tokens per model.
//!
//! Prices are US dollars per million tokens (MTok), standard tier, as the providers' pricing
//! pages list them on [`TABLE_DATE`]:
//! - Anthropic: <https://platform.claude.com/docs/en/about-claude/pricing> and each model's page
//!   (<https://platform.claude.com/docs/en/models/opus-5-5/overview>, `.../opus-5/overview`,
//!   `.../sonnet-5-5/overview`, `.../sonnet-5/overview`, `.../opus-4-8/overview`,
//!   `.../opus-4-6/overview`, `.../opus-4-5/overview`, `.../haiku-4-5/overview`): input, 5-minute
//!   and 1-hour cache writes, cache hits, output. Where a page gives only input and output, the
//!   pricing page's multipliers apply (5-minute write 1.25x input, 1-hour write 2x, hit 0.1x).
//! - OpenAI: <https://developers.openai.com/api/docs/pricing> and its model pages
//!   (<https://developers.openai.com/api/docs/models/gpt-5-codex>): input, cached input, output.
//!   OpenAI charges nothing extra to write its cache, so both cache-write prices are the input
//!   price; Codex reports no cache writes anyway.
//!
//! Not modelled: batch discounts (agents do not use the batch API), long-context tiers (Claude
//! Haiku 5.5 above a 100k-token prompt, the older Sonnets above 200k), fast modes and regional
//! surcharges. A model id matches its entry exactly, or once a date suffix (`-20250929`,
//! `-2025-08-07`) is removed; anything else is unpriced, never guessed from a similar name: a
//! newer model of the same family often has another price.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::meters::Named;

/// The day the embedded prices were checked against the pages above.
pub const TABLE_DATE: &str = "2026-11-25";

/// Tokens of one model, split the ways they are priced. For Claude Code `input` is the uncached
/// input; for Codex the uncached part of its `input_tokens` (which include the cached ones), and
/// `output` includes the reasoning tokens, billed as output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenParts {
    #[serde(default)]
    pub input: u64,
    #[serde(default)]
    pub output: u64,
    #[serde(default)]
    pub cache_write_5m: u64,
    #[serde(default)]
    pub cache_write_1h: u64,
    #[serde(default)]
    pub cache_read: u64,
}

impl TokenParts {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read
    }

    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }

    pub fn add(&mut self, other: &TokenParts) {
        self.input += other.input;
        self.output += other.output;
        self.cache_write_5m += other.cache_write_5m;
        self.cache_write_1h += other.cache_write_1h;
        self.cache_read += other.cache_read;
    }

    /// What `self` has beyond `before`, part by part, never below 0.
    pub fn beyond(&self, before: &TokenParts) -> TokenParts {
        TokenParts {
            input: self.input.saturating_sub(before.input),
            output: self.output.saturating_sub(before.output),
            cache_write_5m: self.cache_write_5m.saturating_sub(before.cache_write_5m),
            cache_write_1h: self.cache_write_1h.saturating_sub(before.cache_write_1h),
            cache_read: self.cache_read.saturating_sub(before.cache_read),
        }
    }
}

/// Prices of one model, US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_write_5m: f64,
    pub cache_write_1h: f64,
    pub cache_read: f64,
}

impl Price {
    /// The cost of `tokens` at these prices, in US dollars.
    pub fn cost(&self, tokens: &TokenParts) -> f64 {
        let dollars = tokens.input as f64 * self.input
            + tokens.output as f64 * self.output
            + tokens.cache_write_5m as f64 * self.cache_write_5m
            + tokens.cache_write_1h as f64 * self.cache_write_1h
            + tokens.cache_read as f64 * self.cache_read;
        dollars / 1_000_000.0
    }
}

/// Anthropic's prices with its cache multipliers: 5-minute write 1.25x, 1-hour write 2x.
const fn claude(input: f64, output: f64, cache_read: f64) -> Price {
    Price {
        input,
        output,
        cache_write_5m: input * 1.25,
        cache_write_1h: input * 2.0,
        cache_read,
    }
}

/// OpenAI's prices: cached input is the cache read; writing the cache costs the input price.
const fn openai(input: f64, cached_input: f64, output: f64) -> Price {
    Price {
        input,
        output,
        cache_write_5m: input,
        cache_write_1h: input,
        cache_read: cached_input,
    }
}

/// The embedded table, by the model id the agents write (Claude Code's `message.model`, Codex's
/// `turn_context.model`).
const EMBEDDED: &[(&str, Price)] = &[
    // Anthropic, current models. Fable 5.1's hit is 0.025x input, Opus 5.5's 0.05x (model pages).
    ("claude-fable-5-1", claude(10.0, 50.0, 0.25)),
    ("claude-opus-5-5", claude(4.0, 20.0, 0.20)),
    // The Sonnet 5.5 page first listed a $0.20 hit; the pricing page cut it to $0.10 on
    // 2026-10-07 (as the claudit v1.9.2 and PromptFuel v1.0.23 price refreshes record).
    ("claude-sonnet-5-5", claude(2.0, 10.0, 0.10)),
    // Haiku 5.5's price for a prompt of up to 100k tokens; longer prompts cost 5x (not modelled).
    ("claude-haiku-5-5", claude(0.10, 0.50, 0.01)),
    // Anthropic, legacy models still served.
    ("claude-fable-5", claude(10.0, 50.0, 1.0)),
    ("claude-opus-5", claude(5.0, 25.0, 0.50)),
    ("claude-sonnet-5", claude(2.0, 10.0, 0.20)),
    ("claude-opus-4-8", claude(5.0, 25.0, 0.50)),
    ("claude-opus-4-7", claude(5.0, 25.0, 0.50)),
    ("claude-opus-4-6", claude(5.0, 25.0, 0.50)),
    ("claude-opus-4-5", claude(5.0, 25.0, 0.50)),
    ("claude-opus-4-1", claude(15.0, 75.0, 1.50)),
    ("claude-opus-4-0", claude(15.0, 75.0, 1.50)),
    ("claude-opus-4", claude(15.0, 75.0, 1.50)),
    ("claude-sonnet-4-6", claude(3.0, 15.0, 0.30)),
    ("claude-sonnet-4-5", claude(3.0, 15.0, 0.30)),
    ("claude-sonnet-4-0", claude(3.0, 15.0, 0.30)),
    ("claude-sonnet-4", claude(3.0, 15.0, 0.30)),
    ("claude-3-7-sonnet", claude(3.0, 15.0, 0.30)),
    ("claude-haiku-4-5", claude(1.0, 5.0, 0.10)),
    ("claude-3-5-haiku", claude(0.80, 4.0, 0.08)),
    // OpenAI: the models Codex runs. GPT-6.1 Sol's price below 272k input tokens
    // (<https://developers.openai.com/api/docs/models/gpt-6.1-sol>; longer prompts cost 2x).
    ("gpt-6.1-sol", openai(2.0, 0.10, 10.0)),
    ("gpt-5.5", openai(5.0, 0.50, 30.0)),
    ("gpt-5.4", openai(2.50, 0.25, 15.0)),
    ("gpt-5.4-mini", openai(0.75, 0.075, 4.50)),
    ("gpt-5.4-nano", openai(0.20, 0.02, 1.25)),
    ("gpt-5.3-codex", openai(1.75, 0.175, 14.0)),
    ("gpt-5.2", openai(1.75, 0.175, 14.0)),
    ("gpt-5.2-codex", openai(1.75, 0.175, 14.0)),
    ("gpt-5", openai(1.25, 0.125, 10.0)),
    ("gpt-5-codex", openai(1.25, 0.125, 10.0)),
    ("gpt-5-mini", openai(0.25, 0.025, 2.0)),
];

/// The embedded table, model id and price, in the order above.
pub fn embedded() -> &'static [(&'static str, Price)] {
    EMBEDDED
}

/// `settings.pricing.<model>`: a price of your own, replacing the embedded one (or pricing a
/// model the table lacks). Input and output are required; the cache prices default to
/// Anthropic's multipliers of the input price (1.25x, 2x, 0.1x).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceSetting {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PriceSetting {
    pub fn price(&self) -> Price {
        Price {
            input: self.input,
            output: self.output,
            cache_write_5m: self.cache_write_5m.unwrap_or(self.input * 1.25),
            cache_write_1h: self.cache_write_1h.unwrap_or(self.input * 2.0),
            cache_read: self.cache_read.unwrap_or(self.input * 0.1),
        }
    }
}

/// Checks `settings.pricing`: every price a finite number of 0 or more.
pub fn validate(pricing: &Named<PriceSetting>) -> Result<(), String> {
    for (model, setting) in pricing.iter() {
        if model.trim().is_empty() {
            return Err("settings.pricing: a model name cannot be empty".into());
        }
        let fields = [
            ("input", Some(setting.input)),
            ("output", Some(setting.output)),
            ("cache_write_5m", setting.cache_write_5m),
            ("cache_write_1h", setting.cache_write_1h),
            ("cache_read", setting.cache_read),
        ];
        for (name, value) in fields {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return Err(format!(
                    "settings.pricing.{model}.{name} is {value}; a price is US dollars per million tokens, 0 or more"
                ));
            }
        }
    }
    Ok(())
}

/// A model id without its date suffix: `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`,
/// `gpt-5-2025-08-07` → `gpt-5`.
pub fn undated(model: &str) -> &str {
    let bytes = model.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = bytes.len();
    if n > 9 && bytes[n - 9] == b'-' && digits(&bytes[n - 8..]) {
        return &model[..n - 9];
    }
    if n > 11
        && bytes[n - 11] == b'-'
        && bytes[n - 6] == b'-'
        && bytes[n - 3] == b'-'
        && digits(&bytes[n - 10..n - 6])
        && digits(&bytes[n - 5..n - 3])
        && digits(&bytes[n - 2..])
    {
        return &model[..n - 11];
    }
    model
}

/// The price of `model`: `settings.pricing` first, then the embedded table; each by the exact
/// id, then without its date suffix.
pub fn lookup(model: &str, overrides: &Named<PriceSetting>) -> Option<Price> {
    let short = undated(model);
    overrides
        .get(model)
        .or_else(|| overrides.get(short))
        .map(PriceSetting::price)
        .or_else(|| {
            EMBEDDED
                .iter()
                .find(|(id, _)| *id == model || *id == short)
                .map(|(_, price)| *price)
        })
}

/// One model's tokens in a session and what they cost; `cost_usd` is `None` for a model without
/// a price (and for tokens whose model the transcript did not say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCost {
    /// The model id, `None` when the transcript did not name one.
    pub model: Option<String>,
    pub tokens: TokenParts,
    pub cost_usd: Option<f64>,
}

/// What a session's tokens cost, per model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// The priced models' cost, in US dollars; `None` when no token was priced at all (no
    /// transcript, or only unpriced models): unknown, never $0.
    pub cost_usd: Option<f64>,
    pub models: Vec<ModelCost>,
    /// Tokens of models without a price: left out of `cost_usd`.
    #[serde(default)]
    pub unpriced_tokens: u64,
}

impl Cost {
    /// The models without a price, for messages (`unknown` for tokens of no named model).
    pub fn unpriced_models(&self) -> Vec<String> {
        self.models
            .iter()
            .filter(|m| m.cost_usd.is_none())
            .map(|m| m.model.clone().unwrap_or_else(|| "unknown".into()))
            .collect()
    }

    pub fn total_tokens(&self) -> u64 {
        self.models.iter().map(|m| m.tokens.total()).sum()
    }
}

/// The key under which tokens of no named model are kept.
pub const NO_MODEL: &str = "";

/// Prices each model's tokens (keyed by model id, [`NO_MODEL`] for none).
pub fn price(models: &BTreeMap<String, TokenParts>, overrides: &Named<PriceSetting>) -> Cost {
    let mut cost = Cost::default();
    for (model, tokens) in models {
        if tokens.is_zero() {
            continue;
        }
        let named = (model != NO_MODEL).then(|| model.clone());
        let dollars = named
            .as_deref()
            .and_then(|m| lookup(m, overrides))
            .map(|p| p.cost(tokens));
        match dollars {
            Some(d) => *cost.cost_usd.get_or_insert(0.0) += d,
            None => cost.unpriced_tokens += tokens.total(),
        }
        cost.models.push(ModelCost {
            model: named,
            tokens: *tokens,
            cost_usd: dollars,
        });
    }
    cost
}

/// Dollars for humans: `$12.34`, `$0.0042` below a cent.
pub fn format_usd(dollars: f64) -> String {
    if dollars != 0.0 && dollars.abs() < 0.01 {
        format!("${dollars:.4}")
    } else {
        format!("${dollars:.2}")
    }
}

/// Dollars in JSON: rounded to a millionth, so sums do not print float noise.
pub fn round_usd(dollars: f64) -> f64 {
    (dollars * 1_000_000.0).round() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(input: u64, output: u64, w5: u64, w1: u64, read: u64) -> TokenParts {
        TokenParts {
            input,
            output,
            cache_write_5m: w5,
            cache_write_1h: w1,
            cache_read: read,
        }
    }

    #[test]
    fn the_page_prices_of_cache_writes_follow_the_multipliers() {
        let opus = lookup("claude-opus-4-1-20250805", &Named::default()).unwrap();
        assert_eq!(
            (
                opus.input,
                opus.cache_write_5m,
                opus.cache_write_1h,
                opus.cache_read,
                opus.output
            ),
            (15.0, 18.75, 30.0, 1.5, 75.0)
        );
        let opus5 = lookup("claude-opus-5", &Named::default()).unwrap();
        assert_eq!((opus5.cache_write_5m, opus5.cache_write_1h), (6.25, 10.0));
    }

    #[test]
    fn a_million_of_each_part_costs_the_sum_of_the_prices() {
        let sonnet = lookup("claude-sonnet-4-5-20250929", &Named::default()).unwrap();
        let million = parts(1_000_000, 1_000_000, 1_000_000, 1_000_000, 1_000_000);
        assert!((sonnet.cost(&million) - (3.0 + 15.0 + 3.75 + 6.0 + 0.30)).abs() < 1e-9);
    }

    #[test]
    fn dates_are_stripped_and_nothing_else_is_guessed() {
        assert_eq!(undated("claude-sonnet-4-5-20250929"), "claude-sonnet-4-5");
        assert_eq!(undated("gpt-5-2025-08-07"), "gpt-5");
        assert_eq!(undated("gpt-5.5"), "gpt-5.5");
        assert!(lookup("gpt-5-2025-08-07", &Named::default()).is_some());
        assert!(lookup("claude-opus-4-9", &Named::default()).is_none());
        assert!(lookup("claude-opus", &Named::default()).is_none());
        assert!(lookup("<synthetic>", &Named::default()).is_none());
    }

    #[test]
    fn settings_override_and_extend_the_table() {
        let overrides: Named<PriceSetting> = serde_json::from_str(
            r#"{"claude-opus-4-6": {"input": 1, "output": 2}, "my-model": {"input": 10, "output": 20, "cache_read": 0}}"#,
        )
        .unwrap();
        let opus = lookup("claude-opus-4-6", &overrides).unwrap();
        assert_eq!(
            (opus.input, opus.output, opus.cache_write_1h),
            (1.0, 2.0, 2.0)
        );
        let mine = lookup("my-model-20260101", &overrides).unwrap();
        assert_eq!((mine.cache_write_5m, mine.cache_read), (12.5, 0.0));
        let bad: Named<PriceSetting> =
            serde_json::from_str(r#"{"m": {"input": -1, "output": 2}}"#).unwrap();
        assert!(
            validate(&bad)
                .unwrap_err()
                .contains("settings.pricing.m.input")
        );
    }

    #[test]
    fn an_unknown_model_is_unpriced_never_free() {
        let mut models = BTreeMap::new();
        models.insert("claude-haiku-4-5".to_string(), parts(1_000_000, 0, 0, 0, 0));
        models.insert("mystery-1".to_string(), parts(500, 500, 0, 0, 0));
        models.insert(NO_MODEL.to_string(), parts(7, 0, 0, 0, 0));
        let cost = price(&models, &Named::default());
        assert_eq!(cost.cost_usd, Some(1.0));
        assert_eq!(cost.unpriced_tokens, 1007);
        assert_eq!(cost.unpriced_models(), vec!["unknown", "mystery-1"]);
        let only_unknown: BTreeMap<_, _> = [("mystery-1".to_string(), parts(5, 5, 0, 0, 0))].into();
        assert_eq!(price(&only_unknown, &Named::default()).cost_usd, None);
    }

    #[test]
    fn usd_formats() {
        assert_eq!(format_usd(12.345), "$12.35");
        assert_eq!(format_usd(0.0042), "$0.0042");
        assert_eq!(format_usd(0.0), "$0.00");
    }
}
